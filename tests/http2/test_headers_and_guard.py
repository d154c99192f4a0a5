"""The pure parts of HTTP/2 support: header-list translation and the flood budgets."""

from __future__ import annotations

import pytest

from veloxy.errors import BadRequest, NotImplementedByProxy
from veloxy.http2.guard import BUDGETS, FloodGuard
from veloxy.http2.headers import request_head, response_headers


def test_request_head_from_an_http2_header_list() -> None:
    head = request_head([
        (b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"api.test:8443"),
        (b":path", b"/v1/items?x=1"), (b"cookie", b"a=1"), (b"content-type", b"text/plain"),
        (b"cookie", b"b=2"), (b"x-forwarded-for", b"10.0.0.1"), (b"x-real-ip", b"6.6.6.6"),
        (b"te", b"trailers"),
    ], ended=False)
    assert (head.method, head.target, head.host) == (b"POST", b"/v1/items?x=1", b"api.test:8443")
    assert head.chunked and head.content_length is None  # a body of unknown length
    assert head.forwarded_for == b"10.0.0.1"
    assert head.headers == [(b"content-type", b"text/plain"), (b"host", b"api.test:8443"),
                            (b"cookie", b"a=1; b=2")]


def test_request_head_with_length_or_without_body() -> None:
    head = request_head([(b":method", b"PUT"), (b":path", b"/"), (b"host", b"h.test"),
                         (b"content-length", b"5")], ended=False)
    assert head.content_length == 5 and not head.chunked and head.host == b"h.test"
    assert head.headers == [(b"host", b"h.test"), (b"content-length", b"5")]
    get = request_head([(b":method", b"GET"), (b":path", b"/")], ended=True)
    assert not get.has_body and get.host is None


@pytest.mark.parametrize(("headers", "error"), [
    ([(b":path", b"/")], BadRequest),
    ([(b":method", b"GET")], BadRequest),
    ([(b":method", b"CONNECT"), (b":authority", b"a:443")], NotImplementedByProxy),
    ([(b":method", b"CONNECT"), (b":protocol", b"connect-udp"), (b":path", b"/")],
     NotImplementedByProxy),
    ([(b":method", b"GET"), (b":path", b"/"), (b"content-length", b"x")], BadRequest),
    ([(b":method", b"GET"), (b":path", b"/"), (b"host", b"a"), (b"host", b"b")], BadRequest),
])
def test_request_heads_refused(headers, error) -> None:
    with pytest.raises(error):
        request_head(headers, ended=True)


def test_extended_connect_websocket_becomes_an_http11_upgrade() -> None:
    head = request_head([(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                         (b":scheme", b"https"), (b":path", b"/chat"),
                         (b":authority", b"ws.test"), (b"sec-websocket-key", b"theirs"),
                         (b"sec-websocket-protocol", b"chat")], ended=False)
    assert (head.method, head.target, head.upgrade) == (b"GET", b"/chat", b"websocket")
    assert not head.chunked and not head.has_body
    fields = dict(head.headers)
    assert fields[b"sec-websocket-key"] != b"theirs" and len(fields[b"sec-websocket-key"]) == 24
    assert fields[b"sec-websocket-version"] == b"13"
    assert fields[b"sec-websocket-protocol"] == b"chat" and fields[b"host"] == b"ws.test"


def test_response_headers_drop_connection_specific_fields() -> None:
    fields = [b"Content-Type", b": ", b"text/html", b"\r\n",
              b"Connection", b": ", b"keep-alive", b"\r\n",
              b"Transfer-Encoding", b": ", b"chunked", b"\r\n",
              b"Set-Cookie", b": ", b"a=1", b"\r\n"]
    assert response_headers(404, fields) == [
        (b":status", b"404"), (b"content-type", b"text/html"), (b"set-cookie", b"a=1")]


def test_flood_guard_budget_and_refill() -> None:
    burst, rate = BUDGETS["ping"]
    guard = FloodGuard(now=100.0)
    assert all(guard.spend("ping", 100.0) for _ in range(int(burst)))
    assert not guard.spend("ping", 100.0)  # the burst is spent
    assert guard.spend("ping", 100.0 + 2 / rate)  # refilled over time
    assert guard.spend("reset", 100.0)  # kinds are independent
