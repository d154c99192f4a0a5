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
from tests.support.config import prefix_routes, proxy_config

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]


@pytest.fixture(scope="module")
def failing(module_stack):
    """One proxy; each path prefix leads to an upstream that fails in its own way."""
    make_backend, start_proxy = module_stack
    refusing = refusing_port()  # bound, not listening: connects are refused
    upstreams = {
        "refused": f"http://127.0.0.1:{refusing.getsockname()[1]}",
        "silent": {"servers": [make_backend(silent_script(), name="silent")],
                   "timeouts": {"response_header": "1s"}},
        "garbage": make_backend(garbage_script(b"\x00\x01garbage that is not HTTP\r\n\r\n"),
                                name="garbage"),
        "cut-length": make_backend(early_close_length_script(declared=1000, sent=100),
                                   name="cut-length"),
        "cut-chunked": make_backend(early_close_chunked_script(), name="cut-chunked"),
    }
    proxy = start_proxy(config=proxy_config(
        upstreams, routes=prefix_routes({f"/{name}/": name for name in upstreams}),
        limits={"shutdown_timeout": "2s"}))
    yield proxy, upstreams
    refusing.close()


def test_refused_upstream_gives_502(failing):
    proxy, _ = failing
    started = time.monotonic()
    resp = get(proxy.port, "/refused/x", timeout=5)
    assert resp.status == 502, resp
    assert time.monotonic() - started < 3
    assert resp.raw_head.startswith(b"HTTP/1.1 502"), resp


def test_silent_backend_gives_504_after_response_header_timeout(failing):
    proxy, upstreams = failing
    started = time.monotonic()
    resp = get(proxy.port, "/silent/x", timeout=6)
    elapsed = time.monotonic() - started
    assert resp.status == 504, resp
    assert 0.8 <= elapsed <= 3.0, f"504 after {elapsed:.2f}s with response_header: 1s"
    assert upstreams["silent"]["servers"][0].find("/silent/x")


def test_garbage_response_gives_502(failing):
    proxy, _ = failing
    resp = get(proxy.port, "/garbage/x", timeout=5)
    assert resp.status == 502, resp


def test_backend_dies_mid_content_length_body(failing):
    proxy, _ = failing
    with Client(proxy.port, timeout=5) as c:
        c.send(b"GET /cut-length/x HTTP/1.1\r\nHost: test.local\r\n\r\n")
        resp = c.read_response(allow_incomplete=True)
        assert resp.status == 200, resp
        assert resp.header("content-length") == "1000", resp
        assert not resp.complete and len(resp.body) < 1000, (
            f"client got a complete-looking response ({len(resp.body)} bytes) although the "
            f"backend sent 100 of 1000")
        assert c.wait_closed(1.0)


def test_backend_dies_mid_chunked_body(failing):
    proxy, _ = failing
    with Client(proxy.port, timeout=5) as c:
        c.send(b"GET /cut-chunked/x HTTP/1.1\r\nHost: test.local\r\n\r\n")
        head = c.read_message(method="HEAD")  # the head alone
        assert head.status == 200, head
        assert head.framing_of_body() == "chunked", (
            "a body of unknown length must reach an HTTP/1.1 client chunked, so that a "
            f"truncation is visible: {head}")
        rest = c.read_to_eof(timeout=5)  # PeerTimeout here means the proxy hung
    assert b"y" * 100 in rest, rest[:300]
    assert b"0\r\n\r\n" not in rest, f"terminating chunk sent for a truncated body: {rest[-50:]!r}"


def test_a_second_response_in_one_read_never_reaches_the_client(module_stack):
    """An upstream that answers one request with two responses in one write (out of sync,
    or response splitting): the second answers no request. It must not be written to the
    client, where it would be taken as the answer to the client's next request."""
    from tests.support.backends import fixed_script

    make_backend, start_proxy = module_stack
    extra = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
             b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Injected: 1\r\n\r\ninjected")
    doubled = make_backend(fixed_script(extra, then_close=False), name="doubled")
    normal = make_backend(fixed_script(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
                                       then_close=False), name="normal")
    proxy = start_proxy(config=proxy_config(
        {"doubled": doubled, "normal": normal},
        routes=prefix_routes({"/doubled/": "doubled", "/normal/": "normal"})))
    with Client(proxy.port, timeout=5) as c:
        c.send(b"GET /doubled/x HTTP/1.1\r\nHost: test.local\r\n\r\n")
        first = c.read_response()
        c.send(b"GET /normal/y HTTP/1.1\r\nHost: test.local\r\n\r\n")
        second = c.read_response()
    assert (first.status, first.body) == (200, b"first"), first
    assert (second.status, second.body) == (200, b"second"), second
    assert second.header("x-injected") is None, second
