"""The upstream side: one HTTP/1.1 client connection, shared by the proxy and `veloxy bench`.

A `ClientConnection` carries one request at a time (no pipelining upstream: a failure would
leave the fate of the requests behind it unknown). The party that sends a request is its
`ResponseSink`: the proxy's exchange, or a load-generator connection. Response events come
straight from the parser to the sink; `on_read_done` closes each read from the socket so the
sink can write what it gathered in one call.

Errors are reported as UpstreamError subclasses (errors.py) with `received` telling whether
any response byte had arrived, which decides whether a retry is safe.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from ssl import SSLContext, SSLError
from typing import Any, Protocol, TypeVar

from veloxy.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeout,
)
from veloxy.h1.head import ResponseHead
from veloxy.h1.parser import _ResponseParserBase, response_parser
from veloxy.net.halfclose import half_close
from veloxy.net.timers import NEVER, DeadlineSweeper


class ResponseSink(Protocol):
    def on_informational(self, head: ResponseHead) -> None: ...
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, chunk: bytes) -> None: ...
    def on_response_end(self) -> None: ...
    def on_response(self, head: ResponseHead, body: bytes) -> None:
        """A whole response at once: what on_response_head, on_response_body (unless
        `body` is empty) and on_response_end would do."""
    def on_read_done(self) -> None: ...
    def on_upstream_error(self, exc: UpstreamError, received: bool) -> None: ...
    def upstream_paused(self) -> None: ...
    def upstream_resumed(self) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_tunnel_closed(self) -> None: ...


class Timeouts(Protocol):
    connect: float
    response_header: float
    read: float


# What the connection is waiting for; decides what a passed deadline means.
_IDLE, _SENDING, _AWAIT_HEAD, _IN_BODY, _TUNNEL = range(5)


ProtocolT = TypeVar("ProtocolT", bound=asyncio.BaseProtocol)


async def connect_upstream(factory: Callable[[], ProtocolT], host: str, port: int,
                           timeout: float, **tls: Any) -> ProtocolT:
    """Open one upstream connection within `timeout` (the TLS handshake included when
    `tls` carries `ssl=`), for HTTP/1.1 and h2c connections alike. Every way it can fail
    is an UpstreamConnectError: nothing was sent, so any request may go to another server."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(
                factory, host, port, **tls)
    except TimeoutError:
        raise UpstreamConnectError(f"connect to {host}:{port} timed out") from None
    except SSLError as exc:
        reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        raise UpstreamConnectError(f"TLS handshake with {host}:{port} failed: {reason}"
                                   ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UpstreamConnectError(f"connect to {host}:{port} failed: {reason}") from None
    return conn


class ClientConnection(asyncio.Protocol):
    #: Headers are parsed for the proxy (the C fast lane where built); `veloxy bench`
    #: swaps in StatusResponseParser.
    parser_class: Callable[[ClientConnection], _ResponseParserBase] = staticmethod(response_parser)
    __slots__ = (
        "_discarding",
        "_on_closed",
        "_parser",
        "_read_paused",
        "_read_timeout",
        "_response_header_timeout",
        "_reusable",
        "_state",
        "_sweeper",
        "created_at",
        "deadline",
        "received",
        "requests",
        "sink",
        "transport",
        "writing_paused",
    )

    def __init__(
        self,
        sweeper: DeadlineSweeper,
        timeouts: Timeouts,
        on_closed: Callable[[ClientConnection], None] | None = None,
    ) -> None:
        self._sweeper = sweeper
        self._response_header_timeout = timeouts.response_header
        self._read_timeout = timeouts.read
        self._on_closed = on_closed
        self._parser = self.parser_class(self)
        self._state = _IDLE
        self._read_paused = False
        self._reusable = True
        self._discarding = False  # inside a response that answers no request (see below)
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        #: Whether any byte of the current response arrived (a retry is then unsafe).
        self.received = False
        #: Requests sent on this connection, the current one included.
        self.requests = 0
        self.writing_paused = False
        self.deadline = NEVER
        self.created_at = sweeper.now

    # -- making connections ----------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        sweeper: DeadlineSweeper,
        timeouts: Timeouts,
        on_closed: Callable[[ClientConnection], None] | None = None,
        *,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> ClientConnection:
        """Connect within timeouts.connect (the TLS handshake included when `ssl` is
        given, verifying `server_hostname`, else `host`); raises UpstreamConnectError."""
        tls: dict[str, object] = {}
        if ssl is not None:
            tls = {"ssl": ssl, "server_hostname": server_hostname or host,
                   "ssl_handshake_timeout": timeouts.connect}
        return await connect_upstream(lambda: cls(sweeper, timeouts, on_closed), host, port,
                                      timeouts.connect, **tls)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # create_connection hands a Transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # uvloop sets it already; the stdlib loop does too since 3.7, but be explicit.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.created_at = self._sweeper.now
        self._sweeper.add(self)

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # An idle connection that speaks is out of sync (or a late answer): drop it.
            self.close()
            return
        if self._state == _TUNNEL:
            sink.on_tunnel_data(data)
            return
        self.received = True
        self.deadline = self._sweeper.now + self._read_timeout
        try:
            tail = self._parser.feed(data)
        except UpstreamProtocolError as exc:
            self._fail(exc)
            return
        if self.sink is not None:
            sink.on_read_done()
        if tail and self._state == _TUNNEL and self.sink is not None:
            sink.on_tunnel_data(tail)  # after the 101 head went out in on_read_done

    def eof_received(self) -> bool:
        if self._state == _TUNNEL:
            if self.sink is not None:
                self.sink.on_tunnel_data(b"")
            return True
        self._end_of_stream()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._sweeper.discard(self)
        self.deadline = NEVER
        if self._state == _TUNNEL:
            sink, self.sink = self.sink, None
            if sink is not None:
                sink.on_tunnel_closed()
        else:
            self._end_of_stream()
        self._state = _IDLE
        if self._on_closed is not None:
            self._on_closed(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.sink is not None:
            self.sink.upstream_paused()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.sink is not None:
            self.sink.upstream_resumed()

    # -- requests --------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Idle, open, and not closed by the peer: safe to send a request on."""
        transport = self.transport
        return self._state == _IDLE and transport is not None and not transport.is_closing()

    def send(self, data: bytes, sink: ResponseSink, *, head_request: bool = False,
             complete: bool = True) -> None:
        """Start a request with its first bytes; `complete` when they hold all of it."""
        self.sink = sink
        self.received = False
        self.requests += 1
        if head_request:
            self._parser.expect_no_body()
        if complete:
            self._state = _AWAIT_HEAD
            self.deadline = self._sweeper.now + self._response_header_timeout
        else:
            self._state = _SENDING
            self.deadline = NEVER
        transport = self.transport
        if transport is None or transport.is_closing():
            # Closed under us (the peer's close was seen after the caller checked `usable`):
            # report it as a reset before any byte, from the loop, never from inside send().
            # Without this the stdlib loop drops the write silently and, the connection being
            # out of the sweeper, the request would wait forever.
            asyncio.get_running_loop().call_soon(
                self._fail, UpstreamResetError("upstream connection closed before the request"))
            return
        transport.write(data)

    def write(self, data: bytes) -> None:
        """More of the request body."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def request_sent(self) -> None:
        """The whole request is written: the response-header timeout starts now."""
        if self._state == _SENDING:
            self._state = _AWAIT_HEAD
            self.deadline = self._sweeper.now + self._response_header_timeout

    def write_eof(self) -> None:
        """Half-close (a tunnel whose client finished sending)."""
        half_close(self.transport)

    def start_tunnel(self) -> None:
        self._state = _TUNNEL
        self.deadline = NEVER

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def release(self) -> bool:
        """The sink is done with the connection. True when it can carry another request."""
        self.sink = None
        if self._read_paused:
            self.resume_reading()
        reusable = (self._reusable and self._state == _IDLE and self._parser.idle
                    and self.transport is not None
                    and not self.transport.is_closing())
        if not reusable:
            self.close()
        return reusable

    def close(self) -> None:
        self.sink = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.sink = None
        if self.transport is not None:
            self.transport.abort()

    # -- ResponseParser handler: forwarded to the sink --------------------------------------

    # A response while _IDLE answers no request: the upstream sent more than one response
    # in a read (out of sync, or worse). It must never reach the client, where it would
    # answer the client's next request: it is dropped, and the connection is not reused.

    def on_informational(self, head: ResponseHead) -> None:
        if self._state == _IDLE:
            self._reusable = False
            return
        self.sink.on_informational(head)  # type: ignore[union-attr]  # response events come only while a request (its sink) is out

    def on_response_head(self, head: ResponseHead) -> None:
        if self._state == _IDLE:
            self._reusable = False
            self._discarding = True
            return
        self._reusable = not head.close
        if head.status == 101:
            self._state = _TUNNEL
            self.deadline = NEVER
        else:
            self._state = _IN_BODY
        self.sink.on_response_head(head)  # type: ignore[union-attr]  # response events come only while a request (its sink) is out

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        """A whole response from one read (the C fast lane's event, h1/_fastpath.c): head,
        body and end at once. Never a 101 or a 1xx (those are declined to the Python
        parser), so the connection is idle again when the sink hears of it."""
        if self._state == _IDLE:
            self._reusable = False
            return
        self._reusable = not head.close
        self._state = _IDLE
        self.deadline = NEVER
        self.sink.on_response(head, body)  # type: ignore[union-attr]  # response events come only while a request (its sink) is out

    def on_response_body(self, chunk: bytes) -> None:
        if self._discarding:
            return
        self.sink.on_response_body(chunk)  # type: ignore[union-attr]  # response events come only while a request (its sink) is out

    def on_response_end(self) -> None:
        if self._state == _TUNNEL:
            return  # llhttp ends the 101 message before handing over the tunnel's bytes
        if self._discarding:
            self._discarding = False
            return
        self._state = _IDLE
        self.deadline = NEVER
        sink = self.sink
        if sink is not None:
            sink.on_response_end()

    # -- timers ----------------------------------------------------------------------------

    def on_deadline(self, now: float) -> None:
        state = self._state
        self.deadline = NEVER
        if state == _AWAIT_HEAD:
            self._fail(UpstreamTimeout("upstream sent no response head in time"))
        elif state == _IN_BODY:
            self._fail(UpstreamTimeout("upstream stopped sending the response body"))
        elif state == _IDLE:
            self.close()  # idle timeout or lifetime, set by the pool

    # -- internals -------------------------------------------------------------------------

    def _end_of_stream(self) -> None:
        sink = self.sink
        if sink is None:
            return
        if self._parser.finish():  # a response delimited by the close: now complete
            if self.sink is not None:
                sink.on_read_done()
            return
        if self._state in (_AWAIT_HEAD, _SENDING, _IN_BODY):
            if self.received:
                self._fail(UpstreamProtocolError("upstream closed the connection mid-response"))
            else:
                self._fail(UpstreamResetError("upstream closed the connection before responding"))

    def _fail(self, exc: UpstreamError) -> None:
        sink, self.sink = self.sink, None
        received = self.received
        self._state = _IDLE
        self.deadline = NEVER
        if self.transport is not None:
            self.transport.abort()
        if sink is not None:
            sink.on_upstream_error(exc, received)
