"""conftest.py - pytest glue for the e2e suite: the Docker engine and the image once per
session, a `make_stack` factory whose teardown removes every container and stops every process
even when the test failed, and a per-test time limit that fails the test from inside (so that
teardown still runs) before ctest's own kill."""

import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "common"))

import e2e  # noqa: E402
from glue import deadline_fixture, pytest_runtest_makereport, stack_factory  # noqa: E402,F401

_deadline = deadline_fixture("TIDE_E2E_TIMEOUT", 240)


@pytest.fixture(scope="session")
def engine():
    tmp = tempfile.mkdtemp(prefix="tide-e2e-engine-")
    eng = e2e.Engine(tmp)
    try:
        eng.start()
    except AssertionError as e:
        # A missing engine is a failure, not a skip: scripts/setup-deps installs docker.io and
        # the suite starts dockerd itself when run as root (as CI does).
        raise AssertionError("no Docker engine for the e2e suite: %s" % e) from e
    gone = eng.remove_leftovers()
    if gone:
        print("\n[e2e] removed containers of an earlier run: %s" % gone)
    took = eng.build_image()
    print("\n[e2e] engine %s, image %s built in %.1fs" % (
        "started (pid %d)" % eng.pid if eng.pid else "already running", e2e.IMAGE, took))
    yield eng
    eng.remove_leftovers()
    eng.stop()
    if not os.environ.get("TIDE_KEEP_TMP"):
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def make_stack(request, engine):
    """make_stack(name, **config overrides) -> e2e.Stack (closed after the test)."""
    yield from stack_factory(request, e2e.Stack, "e2e")
