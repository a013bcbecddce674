"""glue.py - the pytest glue the Python suites under tests/ (integration, proxy, e2e) share:
the hook that records each phase's report (so a fixture's teardown knows whether the test
failed), a per-test time limit that fails the test from inside (so its teardown still stops
every process it started) before ctest's own kill, and the stack-factory fixture body whose
teardown closes every stack the test made and turns teardown problems (a daemon that did not
exit 0 on SIGTERM, a sanitizer report, a leftover instance or container) into a test error.

Each suite's conftest.py imports these; pytest finds the hook by its name there."""

import os
import signal

import pytest


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class TestTimeout(Exception):
    pass


def deadline_fixture(env, default_s):
    """An autouse fixture: the test fails after $env seconds (default_s when unset)."""

    @pytest.fixture(autouse=True)
    def _deadline():
        limit = int(os.environ.get(env, str(default_s)))

        def expired(signum, frame):
            raise TestTimeout("test ran longer than %d s (%s)" % (limit, env))
        old = signal.signal(signal.SIGALRM, expired)
        signal.alarm(limit)
        yield
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return _deadline


def stack_factory(request, make, label):
    """Body of a factory fixture (`yield from stack_factory(...)`): yields factory(name=None,
    **kw) -> make(name, **kw), the name defaulting to the test's; at teardown calls
    close(failed=...) on every stack made, which returns a list of problems."""
    stacks = []

    def factory(name=None, **kw):
        s = make(name or request.node.name.replace("[", "-").replace("]", ""), **kw)
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
        print("\n[%s] teardown problems:\n%s" % (label, "\n".join(problems)))
