"""conftest.py - pytest glue for the chaos suite: one stack for the whole module (started by the
first scenario, stopped after the last, by PID, whatever happened), the per-test time limit of
tests/common/glue.py, and the closing table (fault, requests, failed, refused, in flight,
recovery s), printed in the terminal summary and written to $TIDE_CHAOS_TABLE when set (ctest
sets it to a file under the build directory, which `make test` prints)."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "common"))

from glue import deadline_fixture, pytest_runtest_makereport  # noqa: E402,F401

_deadline = deadline_fixture("TIDE_CHAOS_TIMEOUT", 150)

# One row per scenario that ran: [fault, requests, failed, refused, in flight (requests in
# flight on a killed proxy or instance, the bound on its failures) or None, recovery s or None,
# result]
ROWS = []


@pytest.fixture(scope="module")
def chaos(request):
    """The shared ChaosStack, started once; its teardown stops everything and fails the run
    (as an error of the last scenario) when a daemon did not exit 0 on SIGTERM, a log holds a
    sanitizer report, or an instance outlived supervisord."""
    from chaos_stack import ChaosStack
    stack = ChaosStack()
    try:
        stack.start()
    except BaseException:
        stack.close(failed=True)
        raise
    yield stack
    failed = request.session.testsfailed > 0  # then the logs are kept (the path is printed)
    problems = stack.close(failed=failed)
    if problems and not failed:
        pytest.fail("teardown problems:\n" + "\n".join(problems), pytrace=False)
    elif problems:
        print("\n[chaos] teardown problems:\n" + "\n".join(problems))


def table():
    head = ("fault", "requests", "failed", "refused", "in flight", "recovery s", "result")
    rows = [(f, str(n), str(bad), str(ref), "-" if fly is None else str(fly),
             "-" if rec is None else "%.1f" % rec, res)
            for f, n, bad, ref, fly, rec, res in ROWS]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line(r) for r in rows]) + "\n"


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    text = table()
    terminalreporter.write_sep("=", "chaos table")
    terminalreporter.write(text)
    path = os.environ.get("TIDE_CHAOS_TABLE")
    if path:
        with open(path, "w") as f:
            f.write(text)
