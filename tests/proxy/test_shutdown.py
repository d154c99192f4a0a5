"""Graceful shutdown on SIGTERM/SIGINT: stop accepting, close idle connections at once,
finish in-flight requests (up to shutdown_timeout), exit 0."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.backends import Conn, Request, response, serve
from tests.support.client import Client, wait_refused

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]

SLOW_BODY = bytes(range(256)) * 256  # 64 KiB


def slow_respond(req: Request, conn: Conn) -> bytes:
    if req.target.startswith("/slow"):
        time.sleep(float(req.target.rsplit("/", 1)[1]))
        return response(200, SLOW_BODY)
    return response(200, b"quick")


def test_sigterm_drains_in_flight_and_closes_idle(proxy_for):
    proxy, backend = proxy_for(serve(slow_respond), limits={"shutdown_timeout": "5s"})
    idle = Client(proxy.port, timeout=5)
    busy = Client(proxy.port, timeout=5)
    try:
        assert idle.request("GET", "/quick").status == 200  # now idle, kept alive
        busy.send(b"GET /slow/1.0 HTTP/1.1\r\nHost: test.local\r\n\r\n")
        backend.find("/slow/1.0")  # the request is in flight upstream
        proxy.send_signal(signal.SIGTERM)
        sent_at = time.monotonic()
        assert idle.wait_closed(1.0), "idle keep-alive connection not closed at once on SIGTERM"
        assert time.monotonic() - sent_at < 1.0
        assert wait_refused(proxy.port, 1.0), "new connections still accepted after SIGTERM"
        resp = busy.read_response(timeout=5)
        assert resp.status == 200, resp
        assert resp.body == SLOW_BODY, f"in-flight body cut: {len(resp.body)} bytes"
        assert busy.wait_closed(2.0), "connection of the drained request left open"
        proxy.expect_exit(3.0, code=0)
    finally:
        idle.close()
        busy.close()


def test_sigint_exits_zero(proxy_for):
    proxy, _ = proxy_for(serve(slow_respond))
    with Client(proxy.port, timeout=5) as c:
        assert c.request("GET", "/quick").status == 200
        proxy.send_signal(signal.SIGINT)
        assert c.wait_closed(1.5)
    proxy.expect_exit(3.0, code=0)


def test_shutdown_timeout_bounds_the_drain(proxy_for):
    """A request slower than shutdown_timeout does not keep the proxy alive."""
    proxy, backend = proxy_for(serve(slow_respond), limits={"shutdown_timeout": "1s"})
    with Client(proxy.port, timeout=8) as c:
        c.send(b"GET /slow/4 HTTP/1.1\r\nHost: test.local\r\n\r\n")
        backend.find("/slow/4")
        proxy.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proxy.expect_exit(4.0, code=0)
        assert time.monotonic() - started >= 0.8, "exited before shutdown_timeout: 1s"
        data = c.read_to_eof(timeout=2)
    assert b"SLOW" not in data and not data.startswith(b"HTTP/1.1 200"), data[:200]
