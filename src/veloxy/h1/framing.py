"""How a relayed response is framed toward an HTTP/1.x client: pure functions of the
response head, the request and the client connection's state (h11's `_body_framing`
habit), so that both response paths of the proxy (the whole-message event of the C fast
lane and the head/body/end events of llhttp) frame alike, and a table test covers every
case without a socket (tests/h1/test_framing.py).

The rules (RFC 9112 §6.3, §9.3; RFC 9110 §15.2):

- a response to HEAD, a 1xx, 204 or 304 has no body whatever its fields say; a body framed
  by Content-Length keeps it;
- any other body (chunked upstream, or delimited by the upstream closing) is re-chunked
  toward an HTTP/1.1 client, so the client connection survives the upstream's close; an
  HTTP/1.0 client cannot read chunks, so there the close delimits the body;
- the client connection closes after the response when the body is close-delimited, the
  client asked to close, or the connection will not be kept (shutdown, the client's EOF);
  otherwise it stays open, and an HTTP/1.0 client is told so (Connection: keep-alive).
"""

from __future__ import annotations

from veloxy.h1.head import RequestHead, ResponseHead
from veloxy.h1.serialize import STATUS_LINES, status_line

CHUNKED = b"Transfer-Encoding: chunked\r\n"
_END = b"\r\n"
_CLOSE_END = b"Connection: close\r\n\r\n"
_KEEP_ALIVE_END = b"Connection: keep-alive\r\n\r\n"


def response_framing(response: ResponseHead, request: RequestHead, keep_alive: bool,
                     body: bytes = b"") -> tuple[bytes, bool, bool]:
    """(head bytes, re-chunk the body, close after the response) for a final response
    (not a 1xx, not a 101) relayed to the client of `request`, whose connection may be kept
    open (`keep_alive`) as far as the connection itself is concerned. A `body` that came
    whole with the head (never one to re-chunk) is joined to the head bytes, so that the
    response is one bytes object and one write.

    Called once per proxied response: the common case (a Content-Length answer to a
    keep-alive HTTP/1.1 client) takes the first branch and two tests."""
    status = response.status
    rechunk = False
    if (response.content_length is not None or request.method == b"HEAD"
            or status < 200 or status == 204 or status == 304):
        # framing carried by Content-Length, or no body at all (rules.status_has_no_body)
        close = response.close and response.content_length is None and not response.chunked
    elif request.version == "1.1":
        rechunk = True  # chunked or close-delimited upstream: chunked to the client
        close = False
    else:
        close = True  # an HTTP/1.0 client: the close delimits the body
    if close or request.close or not keep_alive:
        close = True
        end = _CLOSE_END
    elif request.version == "1.0":
        end = _KEEP_ALIVE_END
    else:
        end = _END
    line = STATUS_LINES.get(status) or status_line(status, response.reason)
    if rechunk:
        return b"".join((line, response.wire, CHUNKED, end)), True, close
    return b"".join((line, response.wire, end, body)), False, close


def upgrade_head(response: ResponseHead) -> bytes:
    """The head of a 101 that switches the client connection to the upgraded protocol
    (the upstream's Upgrade value, the hop-by-hop Connection: Upgrade made again)."""
    return (status_line(101) + response.wire + b"Connection: Upgrade\r\nUpgrade: "
            + (response.upgrade or b"") + b"\r\n\r\n")


def informational_head(response: ResponseHead) -> bytes:
    """A 1xx other than 101, relayed as it came (100 Continue, 103 Early Hints)."""
    return status_line(response.status, response.reason) + response.wire + b"\r\n"
