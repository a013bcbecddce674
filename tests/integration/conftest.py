"""conftest.py - pytest glue for the integration suite (tests/common/glue.py): a `make_stack`
factory whose teardown stops every process even when the test failed, and turns teardown
problems (a daemon that did not exit 0 on SIGTERM, a sanitizer report, a leftover instance)
into a test error; a 240 s limit per test (TIDE_IT_TIMEOUT), inside ctest's 300 s."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "common"))

import harness  # noqa: E402
from glue import deadline_fixture, pytest_runtest_makereport, stack_factory  # noqa: E402,F401

_deadline = deadline_fixture("TIDE_IT_TIMEOUT", 240)


@pytest.fixture
def make_stack(request):
    """make_stack(name, max_instances=6, **config overrides) -> harness.Stack."""
    yield from stack_factory(request, harness.Stack, "harness")
