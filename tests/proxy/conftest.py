"""conftest.py - pytest glue for tests/proxy: a `proxy_stack` factory whose teardown stops every
process even when the test failed and fails the test on a sanitizer report or a proxy that did
not exit 0 on SIGTERM, and the same per-test deadline as the integration suite."""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import proxyharness  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline():
    limit = int(os.environ.get("TIDE_IT_TIMEOUT", "120"))

    def expired(signum, frame):
        raise TestTimeout("test ran longer than %d s (TIDE_IT_TIMEOUT)" % limit)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def proxy_stack(request):
    """proxy_stack(workers=1, **proxy config overrides) -> proxyharness.ProxyStack (not
    started: call .start(pool))."""
    stacks = []

    def factory(name=None, **kw):
        s = proxyharness.ProxyStack(
            name or request.node.name.replace("[", "-").replace("]", ""), **kw)
        stacks.append(s)
        return s

    yield factory
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    problems = []
    for s in stacks:
        problems += s.close()
    if problems and not failed:
        pytest.fail("teardown problems:\n" + "\n".join(problems), pytrace=False)
    elif problems:
        print("\n[harness] teardown problems:\n" + "\n".join(problems))
