"""HTTP/2 header lists to and from the HTTP/1.1 heads the rest of veloxy speaks.

Requests (RFC 9113 §8.3, RFC 9110): the pseudo-header fields become the request line
(:method, :path) and Host (:authority, when the client sent no Host field); several cookie
fields are joined with "; " (§8.2.3); the hop-by-hop and forwarding fields are sorted out
with the same table as HTTP/1.1 (h1/rules.py). A request without Content-Length that does
not end with its head has a body of unknown length: it goes upstream chunked.

WebSocket over HTTP/2 (RFC 8441): an extended CONNECT (`:method CONNECT`, `:protocol
websocket`) becomes the HTTP/1.1 Upgrade request of RFC 6455 §4.1, a GET to :path with
`Upgrade: websocket` (head.upgrade; an HTTP/2 request never has it set otherwise), a
Sec-WebSocket-Key of our own (RFC 8441 §5 leaves the key out of HTTP/2) and
Sec-WebSocket-Version 13 unless the client gave one. Any other :protocol, and plain
CONNECT, are refused with 501.

Responses: names lowercased (HTTP/2 requires it), connection-specific fields left out
(§8.2.2), :status first.
"""

from __future__ import annotations

import base64
import os

from veloxy.errors import BadRequest, NotImplementedByProxy
from veloxy.h1.head import CRLF, SEP, RequestHead, ResponseHead
from veloxy.h1.rules import (
    CONTENT_LENGTH,
    EXPECT,
    FORWARDED_FOR,
    HOST,
    REQUEST_ROLES,
)

Header = tuple[bytes, bytes]

#: Response fields that must not appear in HTTP/2 (RFC 9113 §8.2.2).
CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade", b"te"})


def request_head(headers: list[Header], ended: bool) -> RequestHead:
    """The HTTP/1.1 head of an HTTP/2 request; BadRequest or NotImplementedByProxy when it
    cannot be forwarded. `ended`: the stream ended with the head (no body)."""
    head = RequestHead()
    fields = head.fields
    method = path = authority = protocol = None
    cookies: list[bytes] = []
    host_field = False
    websocket_version = False
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":protocol":
                protocol = value
            continue  # :scheme: we know which listener the request came on
        if name == b"cookie":
            cookies.append(value)
            continue
        role = REQUEST_ROLES.get(name)
        if role is None:
            if name == b"sec-websocket-key":
                continue  # (RFC 8441 §5) ours is sent upstream, made for the request
            websocket_version = websocket_version or name == b"sec-websocket-version"
            fields += (name, SEP, value, CRLF)
        elif role == HOST:
            if host_field:
                raise BadRequest("duplicate host header")
            host_field = True
            if authority is None:
                head.host = value
            fields += (name, SEP, value, CRLF)
        elif role == CONTENT_LENGTH:
            if not value.isdigit() or head.content_length is not None:
                raise BadRequest("bad content-length")
            head.content_length = int(value)
            fields += (name, SEP, value, CRLF)
        elif role == EXPECT:
            head.expect_continue = value.strip().lower() == b"100-continue"
            fields += (name, SEP, value, CRLF)
        elif role == FORWARDED_FOR:
            head.forwarded_for = value if head.forwarded_for is None else (
                head.forwarded_for + b", " + value)
        # the rest (connection-specific, te, forwarding fields we set ourselves): left out
    if method == b"CONNECT":
        if protocol is None:
            raise NotImplementedByProxy("CONNECT is not supported")
        if protocol.lower() != b"websocket":
            raise NotImplementedByProxy("extended CONNECT is supported for the websocket "
                                        "protocol only")
        method, head.upgrade, ended = b"GET", b"websocket", True  # a GET without a body
        fields += (b"sec-websocket-key", SEP, base64.b64encode(os.urandom(16)), CRLF)
        if not websocket_version:
            fields += (b"sec-websocket-version", SEP, b"13", CRLF)
    if method is None or path is None:
        raise BadRequest("missing :method or :path")
    if authority is not None:
        head.host = authority
        if not host_field:
            fields += (b"host", SEP, authority, CRLF)
    if cookies:
        fields += (b"cookie", SEP, b"; ".join(cookies), CRLF)
    head.method = method
    head.target = path
    if not ended and head.content_length is None:
        head.chunked = True
    return head


def response_headers(status: int, fields: list[bytes]) -> list[Header]:
    """:status and the end-to-end fields of an HTTP/1.1 response head (flat wire form)."""
    headers = [(b":status", b"%d" % status)]
    for i in range(0, len(fields), 4):
        name = fields[i].lower()
        if name not in CONNECTION_SPECIFIC:
            headers.append((name, fields[i + 2]))
    return headers


def response_headers_of(head: ResponseHead) -> list[Header]:
    """response_headers(head.status, head.fields), read from the head's joined form
    (`wire`, "Name: value\r\n" lines), which is what the C fast lane gives: one pass,
    without building the flat `fields` list first (per HTTP/2 response)."""
    headers = [(b":status", b"%d" % head.status)]
    append = headers.append
    for line in head.wire.split(CRLF)[:-1]:
        name, _, value = line.partition(SEP)
        name = name.lower()
        if name not in CONNECTION_SPECIFIC:
            append((name, value))
    return headers
