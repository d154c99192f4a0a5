"""HTTP/1.1 parsers: bytes in, head/body/end events out, no I/O.

Both parsers wrap httptools (Node's llhttp, strict mode), which already refuses what request
smuggling is made of: Content-Length beside Transfer-Encoding, duplicate Content-Length, bad
chunk sizes, invalid bytes in names and values, obs-fold and bare CR. On top of it we add the
size limits, the hop-by-hop classification of h1/rules.py, and the framing facts the proxy
needs, in the same per-header callback so that each header is looked at once.

httptools binds its callbacks when the parser is made, so body and end events are bound
straight to the handler's methods where no bookkeeping is needed: no Python frame of ours
sits between llhttp and the handler on the per-chunk path.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, Protocol

import httptools

from veloxy.errors import (
    BadRequest,
    HeaderFieldsTooLarge,
    NotImplementedByProxy,
    PayloadTooLarge,
    UpstreamProtocolError,
    UriTooLong,
)
from veloxy.h1.head import CRLF, SEP, RequestHead, ResponseHead, flatten
from veloxy.h1.rules import (
    CONNECTION,
    CONTENT_LENGTH,
    EXPECT,
    FORWARDED_FOR,
    HOST,
    REQUEST_ROLES,
    RESPONSE_ROLES,
    TRANSFER_ENCODING,
    UPGRADE,
    connection_tokens,
)


class RequestHandler(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...
    def on_request_body(self, chunk: bytes) -> None: ...
    def on_request_end(self) -> None: ...


class ResponseHandler(Protocol):
    def on_informational(self, head: ResponseHead) -> None: ...
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, chunk: bytes) -> None: ...
    def on_response_end(self) -> None: ...


class UpgradeRequested(Exception):
    """Raised by RequestParser.feed when the head asked to switch protocols.

    `tail` holds the bytes that followed the head in the same read: they belong to the new
    protocol, not to HTTP.
    """

    def __init__(self, tail: bytes) -> None:
        super().__init__(len(tail))
        self.tail = tail


def _unwrap(exc: httptools.HttpParserError) -> BaseException:
    """The exception a callback raised, which httptools wraps in HttpParserCallbackError."""
    if isinstance(exc, httptools.HttpParserCallbackError) and exc.__context__ is not None:
        return exc.__context__
    return exc


class RequestParser:
    """Parses requests from one client connection, enforcing the configured limits.

    Raises a DownstreamError subclass (with its status) from `feed` on bad input; the
    connection must then answer with that status and close, since its framing is lost.
    """

    __slots__ = (
        "_body_bytes",
        "_completed",
        "_connection_names",
        "_handler",
        "_head",
        "_head_bytes",
        "_header_bytes",
        "_in_head",
        "_keep_alive_token",
        "_max_body_bytes",
        "_max_header_bytes",
        "_max_request_line",
        "_parser",
        "_url_bytes",
        "on_body",
        "on_message_complete",
    )

    def __init__(
        self,
        handler: RequestHandler,
        *,
        max_request_line: int = 8192,
        max_header_bytes: int = 65536,
        max_body_bytes: int | None = None,
    ) -> None:
        self._handler = handler
        self._max_request_line = max_request_line
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        self._head: RequestHead | None = None
        self._connection_names: list[bytes] | None = None
        self._in_head = True
        self._keep_alive_token = False
        self._head_bytes = 0
        self._url_bytes = 0
        self._header_bytes = 0
        self._body_bytes = 0
        self._completed = 0
        # Straight to the handler unless a chunked body must be counted against the limit.
        self.on_body = handler.on_request_body if max_body_bytes is None else self._counted_body
        self.on_message_complete = self._message_complete
        self._parser = httptools.HttpRequestParser(self)

    # -- input ---------------------------------------------------------------------------

    def feed(self, data: bytes, counted: bool = True) -> None:
        """Parse bytes from the client. `counted=False`: they are the rest of a read whose
        first messages another parser took (the C fast lane declining mid-read), so, as
        for any head begun mid-read, they do not count toward the head-size guard."""
        was_in_head = self._in_head
        completed = self._completed
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            head_end = exc.args[0]
            raise UpgradeRequested(data[head_end:]) from None
        except httptools.HttpParserInvalidMethodError as exc:
            raise BadRequest(f"invalid method: {exc}") from None
        except httptools.HttpParserError as exc:
            cause = _unwrap(exc)
            if isinstance(cause, Exception) and cause is not exc:
                raise cause from None
            raise BadRequest(str(exc)) from None
        if self._in_head:
            # Guard for a head that never ends: httptools holds a header line until it is
            # complete, so bytes pile up before on_header can count them. Count the reads
            # that went wholly to one unfinished head (a head begun mid-read is counted from
            # the next read on: at most one read of slack).
            if was_in_head and completed == self._completed and counted:
                self._head_bytes += len(data)
                if self._head_bytes > self._max_request_line + self._max_header_bytes:
                    raise HeaderFieldsTooLarge("request head too large")
            else:
                self._head_bytes = 0

    def data_after_close(self) -> None:
        """What feed raises for bytes after a request that closed the connection
        (llhttp's refusal, for the C fast lane to give the same)."""
        raise BadRequest("Data after `Connection: close`")

    # -- httptools callbacks ---------------------------------------------------------------
    # No on_message_begin: a callback costs a C-to-Python call per request, so the head is
    # made by the first on_url of a message and the counters reset where a message ends.

    def on_url(self, url: bytes) -> None:
        # Called once per read that carries a piece of the target.
        head = self._head
        if head is None:
            head = self._head = RequestHead()
            head.target = url
            self._url_bytes = len(url)
        else:
            head.target += url
            self._url_bytes += len(url)
        if self._url_bytes > self._max_request_line:
            raise UriTooLong("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if head is None:
            return  # a trailer field of a chunked body: not forwarded (RFC 9110 §6.5.1)
        self._header_bytes += len(name) + len(value) + 4  # "name: value\r\n"
        if self._header_bytes > self._max_header_bytes:
            raise HeaderFieldsTooLarge("request header fields too large")
        role = REQUEST_ROLES.get(name.lower())
        if role is None:
            head.fields += (name, SEP, value, CRLF)
        elif role == HOST:
            if head.host is not None:
                raise BadRequest("duplicate Host header")  # RFC 9112 §3.2
            head.host = value
            head.fields += (name, SEP, value, CRLF)
        elif role == CONTENT_LENGTH:
            head.content_length = int(value)  # digits only: llhttp checked
            head.fields += (name, SEP, value, CRLF)
        elif role == TRANSFER_ENCODING:
            if value.strip().lower() != b"chunked":
                raise NotImplementedByProxy("only the chunked transfer coding is supported")
            head.chunked = True
        elif role == CONNECTION:
            for token in connection_tokens(value):
                if token == b"keep-alive":
                    self._keep_alive_token = True
                elif token not in (b"close", b"upgrade"):
                    if self._connection_names is None:
                        self._connection_names = []
                    self._connection_names.append(token)
        elif role == UPGRADE:
            head.upgrade = value
        elif role == EXPECT:
            head.expect_continue = value.strip().lower() == b"100-continue"
            head.fields += (name, SEP, value, CRLF)
        elif role == FORWARDED_FOR:
            head.forwarded_for = value if head.forwarded_for is None else (
                head.forwarded_for + b", " + value)
        # DROP and FORWARDING: left out; FORWARDING fields are set again by the proxy.

    def on_headers_complete(self) -> None:
        head = self._head
        if head is None:  # no target seen: llhttp refuses that earlier, but be sure
            raise BadRequest("request without a target")
        self._head = None
        self._in_head = False
        self._head_bytes = 0
        self._header_bytes = 0
        parser = self._parser
        head.method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        if not keep_alive or self._keep_alive_token or head.host is None:
            # get_http_version formats a string (dearer than these tests): ask only when it
            # can be 1.0. A request kept alive without an explicit keep-alive token is HTTP/1.1.
            head.version = parser.get_http_version()
            self._keep_alive_token = False
        if not keep_alive:
            head.close = True
        if not parser.should_upgrade():
            head.upgrade = None
        elif head.method == b"CONNECT":
            raise NotImplementedByProxy("CONNECT is not served by a reverse proxy")
        if head.version == "1.1" and head.host is None:
            raise BadRequest("missing Host header")  # RFC 9112 §3.2
        if self._connection_names is not None:
            names = set(self._connection_names)
            self._connection_names = None
            head.fields = flatten([(n, v) for n, v in head.headers if n.lower() not in names])
        limit = self._max_body_bytes
        if limit is not None and head.content_length is not None and head.content_length > limit:
            raise PayloadTooLarge("request body too large")
        head.wire = b"".join(head.fields)  # what forwarding sends (cheaper here than derived)
        self._handler.on_request_head(head)

    def _counted_body(self, chunk: bytes) -> None:
        self._body_bytes += len(chunk)
        if self._body_bytes > self._max_body_bytes:  # type: ignore[operator]  # set whenever this callback is installed
            raise PayloadTooLarge("request body too large")
        self._handler.on_request_body(chunk)

    def _message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._completed += 1
        if self._body_bytes:
            self._body_bytes = 0
        self._handler.on_request_end()


class _HeadResponseDone(Exception):
    """Stops llhttp after the head of a response to HEAD, which has no body whatever its
    Content-Length says (RFC 9110 §9.3.2); httptools cannot be told that otherwise."""


class _ResponseParserBase:
    """Status, framing and body events of upstream responses; no header callback.

    Raises UpstreamProtocolError from `feed` when the bytes are not HTTP. `finish()` is
    called at end of stream: a response framed by the connection's end is complete then,
    any other in-progress response is truncated.
    """

    __slots__ = ("_connection_names", "_handler", "_head", "_informational", "_no_body",
                 "_parser", "in_body", "on_body")

    def __init__(self, handler: ResponseHandler) -> None:
        self._handler = handler
        self._head: ResponseHead | None = ResponseHead()
        self._informational = False
        self._no_body = False
        self._connection_names: list[bytes] | None = None
        self.in_body: ResponseHead | None = None  # head of a response whose body is streaming
        self.on_body = handler.on_response_body
        self._parser = httptools.HttpResponseParser(self)

    def expect_no_body(self) -> None:
        """The next response answers a HEAD request."""
        self._no_body = True

    def feed(self, data: bytes) -> bytes | None:
        """Parse bytes; returns the bytes after a 101 head (the tunnel's first bytes)."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return data[exc.args[0]:]
        except httptools.HttpParserError as exc:
            cause = _unwrap(exc)
            if isinstance(cause, _HeadResponseDone):
                self._parser = httptools.HttpResponseParser(self)
                self._head = ResponseHead()
                return None
            if isinstance(cause, Exception) and cause is not exc:
                raise cause from None
            raise UpstreamProtocolError(f"invalid response from upstream: {exc}") from None
        return None

    def finish(self) -> bool:
        """End of stream. True when it completed a response delimited by the close."""
        head = self.in_body
        if head is not None and head.content_length is None and not head.chunked:
            self.in_body = None
            self._handler.on_response_end()
            return True
        return False

    def data_after_close(self) -> None:
        """What feed raises for bytes after a response that closed the connection
        (llhttp's refusal, for the C fast lane to give the same)."""
        raise UpstreamProtocolError("invalid response from upstream: Data after "
                                    "`Connection: close`")

    @property
    def idle(self) -> bool:
        """No response is in progress (nothing received since the last complete one)."""
        return self.in_body is None and self._head is not None and not self._head.fields

    # -- httptools callbacks ---------------------------------------------------------------

    # No on_message_begin and no on_status: the next head is made where a message ends
    # (one C-to-Python call less per response), and the reason phrase is not kept, as Go
    # does not keep it either: status lines are written from veloxy's own table.

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        self._head = None
        if self._connection_names is not None:
            names = set(self._connection_names)
            self._connection_names = None
            head.fields = flatten([(n, v) for n, v in head.headers if n.lower() not in names])
        if head.fields:  # (never for StatusResponseParser: the load generator's CPU)
            head.wire = b"".join(head.fields)
        parser = self._parser
        status = parser.get_status_code()
        head.status = status
        if not parser.should_keep_alive():
            head.close = True
        if 100 <= status < 200 and status != 101:
            self._informational = True
            self._handler.on_informational(head)
            return
        if self._no_body:
            self._no_body = False
            head.content_length = 0
            head.chunked = False
            self._handler.on_response_head(head)
            self._head_response_ended()
            self._handler.on_response_end()
            raise _HeadResponseDone
        if status >= 200 and status != 204 and status != 304:  # RFC 9112 §6.3
            self.in_body = head
        self._handler.on_response_head(head)

    def _head_response_ended(self) -> None:
        """A response to HEAD ends with its head (ResponseParser keeps `idle` by it)."""

    def on_message_complete(self) -> None:
        self._head = ResponseHead()
        if self._informational:
            self._informational = False
            return
        self.in_body = None
        self._handler.on_response_end()


class ResponseParser(_ResponseParserBase):
    """Responses with their headers: what the proxy forwards."""

    __slots__ = ("_between",)

    def __init__(self, handler: ResponseHandler) -> None:
        #: Nothing of a response received since the last one ended (see `idle`).
        self._between = True
        super().__init__(handler)

    @property
    def idle(self) -> bool:
        """No response is in progress: nothing received since the last complete one.

        Exact, unlike the base class's reading of the head's fields (a read that ends in
        a status line looks idle there): llhttp's on_message_begin says when a response
        starts, at the cost of one callback per response, which the proxy's upstream
        connections pay only when the C fast lane declined their responses.
        """
        return self._between

    def on_message_begin(self) -> None:
        self._between = False

    def _head_response_ended(self) -> None:
        self._between = True

    def on_message_complete(self) -> None:
        self._between = True
        super().on_message_complete()

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if head is None:
            return  # trailer field: dropped, we re-frame the body ourselves
        role = RESPONSE_ROLES.get(name.lower())
        if role is None:
            head.fields += (name, SEP, value, CRLF)
        elif role == CONTENT_LENGTH:
            head.content_length = int(value)
            head.fields += (name, SEP, value, CRLF)
        elif role == TRANSFER_ENCODING:
            head.chunked = value.strip().lower().endswith(b"chunked")
        elif role == CONNECTION:
            for token in connection_tokens(value):
                if token not in (b"close", b"keep-alive", b"upgrade"):
                    if self._connection_names is None:
                        self._connection_names = []
                    self._connection_names.append(token)
        elif role == UPGRADE:
            head.upgrade = value
        # DROP: left out


class StatusResponseParser(_ResponseParserBase):
    """Responses without their headers, for a load generator that only counts and times.

    httptools installs its header callbacks only when the target has `on_header`, so
    this parser costs no Python call per header (about half the generator's per-request
    CPU on a small response). Without headers the framing is llhttp's alone: at end of
    stream a body in progress counts as complete when the response said it would close
    (close-delimited), else as truncated.
    """

    __slots__ = ()

    def finish(self) -> bool:
        head = self.in_body
        if head is not None and head.close:
            self.in_body = None
            self._handler.on_response_end()
            return True
        return False


# -- the C fast lane ------------------------------------------------------------------------
# h1/_fastpath.c parses the heads of the common case in one call and declines the rest to the
# parsers above, on a message boundary (its docstring says which). It is built where a C
# compiler is at hand (setup.py, optional); VELOXY_PURE_PYTHON=1 turns it off, for tests of
# the Python path and for comparison.
try:
    from veloxy.h1 import _fastpath  # type: ignore[attr-defined]  # a C extension without stubs
except ImportError:  # no compiler when installed: the Python parsers serve everything
    _fastpath = None

FAST_LANE: bool = _fastpath is not None and not os.environ.get("VELOXY_PURE_PYTHON")


def request_parser(handler: RequestHandler, *, max_request_line: int = 8192,
                   max_header_bytes: int = 65536, max_body_bytes: int | None = None) -> Any:
    """The request parser of one client connection: the C fast lane where built, with
    RequestParser behind it for what it declines; else RequestParser alone."""
    if FAST_LANE:
        return _fastpath.RequestParser(
            handler, RequestParser, RequestHead, max_request_line=max_request_line,
            max_header_bytes=max_header_bytes, max_body_bytes=max_body_bytes)
    return RequestParser(handler, max_request_line=max_request_line,
                         max_header_bytes=max_header_bytes, max_body_bytes=max_body_bytes)


def request_parser_factory(*, max_request_line: int = 8192, max_header_bytes: int = 65536,
                           max_body_bytes: int | None = None) -> Callable[[RequestHandler], Any]:
    """`request_parser` with its limits bound once: a callable that takes the handler and
    makes the parser without a Python call of its own (a partial of the C type), for a
    server that makes one per client connection."""
    if FAST_LANE:
        return functools.partial(
            _fastpath.RequestParser, fallback_class=RequestParser, head_class=RequestHead,
            max_request_line=max_request_line, max_header_bytes=max_header_bytes,
            max_body_bytes=max_body_bytes)
    return functools.partial(RequestParser, max_request_line=max_request_line,
                             max_header_bytes=max_header_bytes, max_body_bytes=max_body_bytes)


def response_parser(handler: ResponseHandler,
                    fallback: type[_ResponseParserBase] = ResponseParser) -> Any:
    """The response parser of one upstream connection: the C fast lane where built, with
    `fallback` behind it for what it declines; else `fallback` alone. (`veloxy bench` passes
    StatusResponseParser: what the lane declines, chunked answers say, is then parsed without
    a Python call per header.)"""
    if FAST_LANE:
        return _fastpath.ResponseParser(handler, fallback, ResponseHead)
    return fallback(handler)
