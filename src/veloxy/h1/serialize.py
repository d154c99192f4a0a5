"""Message heads and body framing to bytes.

Status lines are precomputed (as uvicorn does) and a head is joined into one bytes object,
so that a connection writes a head and the body bytes that came with it in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

from veloxy.h1.head import Headers

STATUS_LINES: dict[int, bytes] = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii"))
    for status in HTTPStatus
}

LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"


def status_line(status: int, reason: bytes = b"") -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    return line


def encode_headers(headers: Headers) -> bytes:
    """Pairs to wire form (slow path; heads from the parser carry `fields` ready to join)."""
    return b"".join([b"%s: %s\r\n" % pair for pair in headers])


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1). Never called with empty data."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def error_response(status: int, message: str, *, close: bool = True,
                   fields: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A short plain-text response that veloxy itself generates, with `fields` (name,
    value) besides its own (Retry-After, say)."""
    body = message.encode("utf-8", "replace") + b"\n"
    head = status_line(status) + (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(body)
    )
    if fields:
        head += b"".join([b"%s: %s\r\n" % pair for pair in fields])
    if close:
        head += b"Connection: close\r\n"
    return head + b"Server: veloxy\r\n\r\n" + body
