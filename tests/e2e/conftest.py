"""conftest.py - pytest glue for the e2e suite: the Docker engine and the image once per
session, a `make_stack` factory whose teardown removes every container and stops every process
even when the test failed, and a per-test time limit that fails the test from inside (so that
teardown still runs) before ctest's own kill."""

import os
import shutil
import signal
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import e2e  # noqa: E402

@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


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


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline():
    limit = int(os.environ.get("TIDE_E2E_TIMEOUT", "240"))

    def expired(signum, frame):
        raise TestTimeout("test ran longer than %d s (TIDE_E2E_TIMEOUT)" % limit)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def make_stack(request, engine):
    """make_stack(name, **config overrides) -> e2e.Stack (closed after the test)."""
    stacks = []

    def factory(name=None, **kw):
        s = e2e.Stack(name or request.node.name, **kw)
        stacks.append(s)
        return s

    yield factory
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    problems = []
    for s in stacks:
        problems += s.close(failed=failed)
    if problems and not failed:
        pytest.fail("teardown problems:\n" + "\n".join(problems), pytrace=False)
    elif problems:
        print("\n[e2e] teardown problems:\n" + "\n".join(problems))
