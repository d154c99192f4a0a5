"""Client-side timeouts: idle keep-alive connections are closed after idle_timeout."""

from __future__ import annotations

import time

import pytest

from tests.support.backends import ok_script
from tests.support.client import Client
from tests.support.config import proxy_config

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]


@pytest.fixture(scope="module")
def short_timeouts(module_stack):
    make_backend, start_proxy = module_stack
    backend = make_backend(ok_script(), name="ok")
    return start_proxy(config=proxy_config(
        backend, limits={"idle_timeout": "1s", "header_timeout": "1s"}))


def test_idle_keepalive_connection_closed_after_idle_timeout(short_timeouts):
    proxy = short_timeouts
    with Client(proxy.port, timeout=5) as c:
        assert c.request("GET", "/first").status == 200
        time.sleep(0.4)
        # still open well before the timeout, and the idle clock restarts per request
        assert c.request("GET", "/second").status == 200
        started = time.monotonic()
        assert c.wait_closed(3.5), "idle keep-alive connection not closed after idle_timeout: 1s"
        elapsed = time.monotonic() - started
    assert elapsed >= 0.7, f"idle connection closed after {elapsed:.2f}s, before idle_timeout: 1s"


def test_silent_new_connection_is_closed(short_timeouts):
    """A connection that never sends a byte does not stay open forever: it is closed (with a
    408 or silently) once idle_timeout/header_timeout (both 1s here) has passed."""
    proxy = short_timeouts
    with Client(proxy.port, timeout=5) as c:
        started = time.monotonic()
        data = c.read_to_eof(timeout=3.5)
        elapsed = time.monotonic() - started
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]
    assert 0.7 <= elapsed <= 3.5, elapsed
