"""Hop-by-hop fields (RFC 9110 §7.6.1) never cross the proxy, in either direction.

Connection and every field it names, Keep-Alive, Proxy-Connection, TE, Trailer,
Transfer-Encoding (bodies are re-framed by the proxy) and Upgrade (unless upgrading).
Checked on the exact bytes the backend and the client received.
"""

from __future__ import annotations

import pytest

from tests.support.backends import Conn, Request, echo_headers, response, serve
from tests.support.client import Client, build_request
from tests.support.wire import parse_head

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]

HOP_RESPONSE = (b"HTTP/1.1 200 OK\r\n"
                b"Connection: X-Resp-Secret\r\n"
                b"X-Resp-Secret: 1\r\n"
                b"X-Kept: yes\r\n"
                b"Keep-Alive: timeout=5, max=100\r\n"
                b"Proxy-Connection: keep-alive\r\n"
                b"Trailer: X-Checksum\r\n"
                b"TE: trailers\r\n"
                b"Upgrade: h2c\r\n"
                b"Transfer-Encoding: chunked\r\n"
                b"\r\n"
                b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n")


def respond(req: Request, conn: Conn) -> bytes:
    if req.target.startswith("/resp-hop"):
        return HOP_RESPONSE
    if req.target == "/http10":
        return response(200, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                        [("Transfer-Encoding", "chunked")], length=False)
    return response(200, b"fine", echo_headers(req))


@pytest.fixture(scope="module")
def hop(module_stack):
    make_backend, start_proxy = module_stack
    backend = make_backend(serve(respond), name="hop")
    return start_proxy(backend), backend

# A proxy may add its own Connection header for its own hop; it may only say these.
OWN_CONNECTION_TOKENS = {"keep-alive", "close"}


def assert_no_fields(head, names: list[str], where: str) -> None:
    present = [n for n in names if head.has(n)]
    assert not present, f"hop-by-hop field(s) {present} reached the {where}:\n{head.raw!r}"
    extra = set(head.tokens("connection")) - OWN_CONNECTION_TOKENS
    assert not extra, f"Connection header forwarded to the {where} names {extra}:\n{head.raw!r}"


def test_request_hop_by_hop_fields_removed(hop):
    proxy, backend = hop
    with Client(proxy.port) as c:
        c.send(b"GET /hop HTTP/1.1\r\n"
               b"Host: test.local\r\n"
               b"Connection: keep-alive, X-Foo, x-bar-secret\r\n"
               b"X-Foo: secret\r\n"
               b"X-Bar-Secret: also secret\r\n"
               b"X-Kept: yes\r\n"
               b"Keep-Alive: timeout=5\r\n"
               b"Proxy-Connection: keep-alive\r\n"
               b"TE: trailers\r\n"
               b"Trailer: X-Checksum\r\n"
               b"Upgrade: h2c\r\n"
               b"\r\n")
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"fine", resp
        # the connection stays usable: framing was not disturbed
        resp2 = c.request("GET", "/again")
        assert resp2.status == 200 and resp2.body == b"fine", resp2
    got = backend.find("/hop").head
    assert_no_fields(got, ["x-foo", "x-bar-secret", "keep-alive", "proxy-connection", "te",
                           "trailer", "upgrade", "transfer-encoding"], "backend")
    assert got.get("x-kept") == b"yes", got.raw


def test_response_hop_by_hop_fields_removed(hop):
    proxy, _ = hop
    with Client(proxy.port) as c:
        resp = c.request("GET", "/resp-hop")
        assert resp.status == 200, resp
        assert resp.body == b"hello world", resp
        assert_no_fields(resp.head, ["x-resp-secret", "keep-alive", "proxy-connection",
                                     "trailer", "te", "upgrade"], "client")
        # Transfer-Encoding may only be the proxy's own framing: exactly one 'chunked'
        # (the strict client parser already refused anything else).
        assert resp.headers_all("transfer-encoding") in ([], ["chunked"]), resp
        assert resp.header("x-kept") == "yes", resp
        resp2 = c.request("GET", "/resp-hop-2")
        assert resp2.status == 200 and resp2.body == b"hello world", resp2


def test_connection_close_drops_named_field_and_closes(hop):
    proxy, backend = hop
    with Client(proxy.port) as c:
        c.send(b"GET /close HTTP/1.1\r\nHost: test.local\r\nConnection: close, X-Foo\r\n"
               b"X-Foo: secret\r\nX-Other: kept\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"fine", resp
        assert c.wait_closed(3.0), "proxy kept the connection open after 'Connection: close'"
    got = backend.find("/close").head
    assert not got.has("x-foo"), got.raw
    assert got.get("x-other") == b"kept", got.raw
    assert set(got.tokens("connection")) <= OWN_CONNECTION_TOKENS, got.raw


def test_upgrade_field_dropped_when_not_upgrading(hop):
    """Upgrade without the 'upgrade' Connection option is not an upgrade: drop it."""
    proxy, backend = hop
    with Client(proxy.port) as c:
        resp = c.request("GET", "/no-upgrade", headers=[("Upgrade", "websocket")])
        assert resp.status == 200, resp
    got = backend.find("/no-upgrade").head
    assert not got.has("upgrade"), got.raw


def test_http10_client_never_gets_chunked(hop):
    """RFC 9112 §6.1: chunked must not be sent to an HTTP/1.0 client, so the proxy re-frames
    (close-delimited or Content-Length) instead of copying Transfer-Encoding."""
    proxy, _ = hop
    with Client(proxy.port) as c:
        c.send(build_request("GET", "/http10", version="HTTP/1.0"))
        resp = c.read_response()
    assert resp.status == 200, resp
    assert not resp.has("transfer-encoding"), resp
    assert resp.body == b"hello world", resp


def test_content_length_request_not_given_transfer_encoding(hop):
    proxy, backend = hop
    with Client(proxy.port) as c:
        resp = c.request("POST", "/cl-post", body=b"0123456789")
        assert resp.status == 200, resp
    got = backend.find("/cl-post")
    assert got.framing == "length" and got.body == b"0123456789", got.raw_head
    assert not got.head.has("transfer-encoding"), got.raw_head
    parse_head(got.raw_head)  # strict: a well-formed head
