"""conftest.py - pytest glue for tests/proxy (tests/common/glue.py): a `proxy_stack` factory
whose teardown stops every process even when the test failed and fails the test on a
sanitizer report or a proxy that did not exit 0 on SIGTERM; a 120 s limit per test
(TIDE_IT_TIMEOUT)."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "common"))

import proxyharness  # noqa: E402
from glue import deadline_fixture, pytest_runtest_makereport, stack_factory  # noqa: E402,F401

_deadline = deadline_fixture("TIDE_IT_TIMEOUT", 120)


@pytest.fixture
def proxy_stack(request):
    """proxy_stack(workers=1, **proxy config overrides) -> proxyharness.ProxyStack (not
    started: call .start(pool))."""
    yield from stack_factory(request, proxyharness.ProxyStack, "harness")
