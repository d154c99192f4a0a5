"""Response framing toward an HTTP/1.x client (h1/framing.py), as a table: response head,
request, connection state -> head bytes, re-chunk, close. No sockets: the function is pure,
and both response paths of the proxy (forward.py) call it."""

from __future__ import annotations

import pytest

from veloxy.h1.framing import informational_head, response_framing, upgrade_head
from veloxy.h1.head import RequestHead, ResponseHead


def response(status: int = 200, *, length: int | None = 5, chunked: bool = False,
             close: bool = False, reason: bytes = b"", wire: bytes = b"X-A: 1\r\n",
             upgrade: bytes | None = None) -> ResponseHead:
    head = ResponseHead()
    head.status, head.content_length, head.chunked, head.close = status, length, chunked, close
    head.reason, head.wire, head.upgrade = reason, wire, upgrade
    return head


def request(method: bytes = b"GET", version: str = "1.1", close: bool = False) -> RequestHead:
    head = RequestHead()
    head.method, head.version, head.close = method, version, close
    return head


CL = b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
CLOSE = b"Connection: close\r\n"
KEEP = b"Connection: keep-alive\r\n"

# (response, request, connection keep-alive) -> (head bytes, rechunk, close)
TABLE = [
    ("content-length, keep-alive", response(), request(), True, (CL + b"\r\n", False, False)),
    ("client asked to close", response(), request(close=True), True,
     (CL + CLOSE + b"\r\n", False, True)),
    ("connection closing (shutdown, EOF)", response(), request(), False,
     (CL + CLOSE + b"\r\n", False, True)),
    ("upstream closes, length known: client kept", response(close=True), request(), True,
     (CL + b"\r\n", False, False)),
    ("HTTP/1.0 client kept alive is told so", response(), request(version="1.0"), True,
     (CL + KEEP + b"\r\n", False, False)),
    ("chunked upstream re-chunked", response(length=None, chunked=True), request(), True,
     (CL + CHUNKED + b"\r\n", True, False)),
    ("close-delimited upstream re-chunked, client kept",
     response(length=None, close=True), request(), True, (CL + CHUNKED + b"\r\n", True, False)),
    ("re-chunked, client asked to close", response(length=None, chunked=True),
     request(close=True), True, (CL + CHUNKED + CLOSE + b"\r\n", True, True)),
    ("HTTP/1.0 client: the close delimits", response(length=None, chunked=True),
     request(version="1.0"), True, (CL + CLOSE + b"\r\n", False, True)),
    ("HEAD: no body whatever the fields say", response(length=None, chunked=True),
     request(method=b"HEAD"), True, (CL + b"\r\n", False, False)),
    ("204 has no body", response(204, length=None),
     request(), True, (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", False, False)),
    ("304 has no body, upstream closing", response(304, length=None, close=True), request(),
     True, (b"HTTP/1.1 304 Not Modified\r\nX-A: 1\r\n" + CLOSE + b"\r\n", False, True)),
    ("unknown status keeps its reason", response(599, reason=b"Odd"), request(), True,
     (b"HTTP/1.1 599 Odd\r\nX-A: 1\r\n\r\n", False, False)),
]


@pytest.mark.parametrize(("resp", "req", "keep", "expected"), [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_response_framing(resp, req, keep, expected) -> None:
    assert response_framing(resp, req, keep) == expected


def test_a_whole_body_is_joined_to_the_head() -> None:
    data, rechunk, close = response_framing(response(), request(), True, b"hello")
    assert (data, rechunk, close) == (CL + b"\r\nhello", False, False)


def test_upgrade_and_informational_heads() -> None:
    switching = response(101, length=None, upgrade=b"websocket", wire=b"Sec-X: y\r\n")
    assert upgrade_head(switching) == (b"HTTP/1.1 101 Switching Protocols\r\nSec-X: y\r\n"
                                       b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    hints = response(103, length=None, wire=b"Link: </a.css>; rel=preload\r\n")
    assert informational_head(hints) == (b"HTTP/1.1 103 Early Hints\r\n"
                                         b"Link: </a.css>; rel=preload\r\n\r\n")
