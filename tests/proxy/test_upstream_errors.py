"""Upstream failures: the right status before the response head, a visible truncation after."""

from __future__ import annotations

import time

import pytest

from tests.support.backends import (
    early_close_chunked_script,
    early_close_length_script,
    garbage_script,
    silent_script,
)
from tests.support.client import Client, get, refusing_port

pytestmark = pytest.mark.timeout(30)


def test_refused_upstream_gives_502(start_proxy):
    sock = refusing_port()
    try:
        proxy = start_proxy(f"http://127.0.0.1:{sock.getsockname()[1]}")
        started = time.monotonic()
        resp = get(proxy.port, "/refused", timeout=5)
        assert resp.status == 502, resp
        assert time.monotonic() - started < 3
        assert resp.raw_head.startswith(b"HTTP/1.1 502"), resp
    finally:
        sock.close()


def test_silent_backend_gives_504_after_response_header_timeout(proxy_for):
    proxy, backend = proxy_for(silent_script(), timeouts={"response_header": "1s"})
    started = time.monotonic()
    resp = get(proxy.port, "/silent", timeout=6)
    elapsed = time.monotonic() - started
    assert resp.status == 504, resp
    assert 0.8 <= elapsed <= 3.0, f"504 after {elapsed:.2f}s with response_header: 1s"
    assert backend.find("/silent")


def test_garbage_response_gives_502(proxy_for):
    proxy, _ = proxy_for(garbage_script(b"\x00\x01garbage that is not HTTP\r\n\r\n"))
    resp = get(proxy.port, "/garbage", timeout=5)
    assert resp.status == 502, resp


def test_backend_dies_mid_content_length_body(proxy_for):
    proxy, _ = proxy_for(early_close_length_script(declared=1000, sent=100))
    with Client(proxy.port, timeout=5) as c:
        c.send(b"GET /truncated HTTP/1.1\r\nHost: test.local\r\n\r\n")
        resp = c.read_response(allow_incomplete=True)
        assert resp.status == 200, resp
        assert resp.header("content-length") == "1000", resp
        assert not resp.complete and len(resp.body) < 1000, (
            f"client got a complete-looking response ({len(resp.body)} bytes) although the "
            f"backend sent 100 of 1000")
        assert c.wait_closed(1.0)


def test_backend_dies_mid_chunked_body(proxy_for):
    proxy, _ = proxy_for(early_close_chunked_script())
    with Client(proxy.port, timeout=5) as c:
        c.send(b"GET /truncated-chunked HTTP/1.1\r\nHost: test.local\r\n\r\n")
        head = c.read_message(method="HEAD")  # the head alone
        assert head.status == 200, head
        assert head.framing_of_body() == "chunked", (
            "a body of unknown length must reach an HTTP/1.1 client chunked, so that a "
            f"truncation is visible: {head}")
        rest = c.read_to_eof(timeout=5)  # PeerTimeout here means the proxy hung
    assert b"y" * 100 in rest, rest[:300]
    assert b"0\r\n\r\n" not in rest, f"terminating chunk sent for a truncated body: {rest[-50:]!r}"
