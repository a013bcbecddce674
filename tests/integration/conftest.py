"""conftest.py - pytest glue for the integration suite: a `stack` factory fixture whose teardown
stops every process even when the test failed, and turns teardown problems (a daemon that did
not exit 0 on SIGTERM, a sanitizer report, a leftover instance) into a test error."""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline():
    """Fails a test that runs longer than TIDE_IT_TIMEOUT seconds (default 240) from inside,
    before ctest's 300 s kill, so its teardown still stops every process it started."""
    limit = int(os.environ.get("TIDE_IT_TIMEOUT", "240"))

    def expired(signum, frame):
        raise TestTimeout("test ran longer than %d s (TIDE_IT_TIMEOUT)" % limit)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def make_stack(request):
    """make_stack(name, max_instances=6, **config overrides) -> harness.Stack."""
    stacks = []

    def factory(name=None, **kw):
        s = harness.Stack(name or request.node.name.replace("[", "-").replace("]", ""), **kw)
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
        print("\n[harness] teardown problems:\n" + "\n".join(problems))
