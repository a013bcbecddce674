"""conftest.py - pytest glue for tests/tsan's own test (tests/common/glue.py and
tests/proxy/proxyharness.py, as tests/proxy uses them): a `proxy_stack` factory whose teardown
stops every process and fails the test on a sanitizer report; a 120 s limit per test."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "proxy"))
sys.path.insert(0, os.path.join(HERE, "..", "common"))

import proxyharness  # noqa: E402
from glue import deadline_fixture, pytest_runtest_makereport, stack_factory  # noqa: E402,F401

_deadline = deadline_fixture("TIDE_IT_TIMEOUT", 120)


@pytest.fixture
def proxy_stack(request):
    yield from stack_factory(request, proxyharness.ProxyStack, "harness")
