"""Bodies that must not exist (HEAD, 204, 304), 100-continue, and pipelining."""

from __future__ import annotations

import time

import pytest

from tests.support.backends import Conn, Request, echo_headers, response, serve
from tests.support.client import Client

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]


BIG = bytes(range(256)) * 400  # 100 KiB


def respond(req: Request, conn: Conn) -> bytes:
    if req.target == "/first":
        time.sleep(0.3)  # slowest first: answers must still come back in request order
        return response(200, BIG, echo_headers(req))
    if req.method == "HEAD":
        # A HEAD response carries the GET response's framing headers but never a body.
        return b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nX-Head: 1\r\n\r\n"
    if req.target == "/204":
        return b"HTTP/1.1 204 No Content\r\nX-Status: 204\r\n\r\n"
    if req.target == "/304":
        return (b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n'
                b"X-Status: 304\r\n\r\n")
    return response(200, req.body or f"after {req.target}".encode(), echo_headers(req))


@pytest.fixture(scope="module")
def semantics(module_stack):
    make_backend, start_proxy = module_stack
    backend = make_backend(serve(respond), name="semantics")
    return start_proxy(backend), backend


def test_head_response_has_no_body(semantics):
    proxy, backend = semantics
    with Client(proxy.port, timeout=3) as c:
        resp = c.request("HEAD", "/head")
        assert resp.status == 200 and resp.header("x-head") == "1", resp
        assert resp.header("content-length") == "5000", resp
        # The next bytes on the connection must be the next response, not a phantom body.
        after = c.request("GET", "/after-head")
        assert after.status == 200 and after.body == b"after /after-head", after
    assert backend.find("/head").method == "HEAD"


def test_204_and_304_have_no_body(semantics):
    proxy, _ = semantics
    with Client(proxy.port, timeout=3) as c:
        r204 = c.request("GET", "/204")
        assert r204.status == 204 and r204.header("x-status") == "204", r204
        # RFC 9110 §8.6 and RFC 9112 §6.1: no Content-Length or Transfer-Encoding on 204.
        assert not r204.has("content-length") and not r204.has("transfer-encoding"), r204
        r304 = c.request("GET", "/304", headers=[("If-None-Match", '"v1"')])
        assert r304.status == 304 and r304.header("etag") == '"v1"', r304
        assert not r304.has("transfer-encoding"), r304
        after = c.request("GET", "/after-304")
        assert after.status == 200 and after.body == b"after /after-304", after


def test_expect_100_continue_relays_interim_then_final(semantics):
    proxy, _ = semantics
    body = b"hello world"
    with Client(proxy.port, timeout=3) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: test.local\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body))
        interim = c.read_message(timeout=3)
        assert interim.status == 100, f"expected 100 Continue before sending the body: {interim}"
        c.send(body)
        final = c.read_response(timeout=5)
        assert final.status == 200, final
        assert final.body == body, final
        assert final.header("x-got-body-length") == str(len(body)), final
        # and the connection is still in step
        again = c.request("POST", "/again", body=b"2nd")
        assert again.status == 200 and again.body == b"2nd", again


def test_pipelined_requests_answered_in_order(semantics):
    proxy, _ = semantics
    with Client(proxy.port, timeout=5) as c:
        c.send(b"GET /first HTTP/1.1\r\nHost: test.local\r\n\r\n"
               b"POST /second HTTP/1.1\r\nHost: test.local\r\nContent-Length: 9\r\n\r\npost-body"
               b"GET /third HTTP/1.1\r\nHost: test.local\r\n\r\n")
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
    assert (r1.status, r2.status, r3.status) == (200, 200, 200), (r1, r2, r3)
    assert r1.header("x-got-target") == "/first" and r1.body == BIG, r1
    assert r2.header("x-got-target") == "/second" and r2.body == b"post-body", r2
    assert r3.header("x-got-target") == "/third" and r3.body == b"after /third", r3
