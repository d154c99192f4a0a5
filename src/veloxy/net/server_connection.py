"""The downstream side: one asyncio.Protocol per client connection, serving HTTP/1.1.

`ServerConnection` knows the protocol's rules for a server (framing via h1.RequestParser,
pipelining, keep-alive, timeouts, limits, upgrades, graceful close) and nothing of proxying:
for every request head it asks its `Application` for an `Exchange` and feeds it the body.
The proxy (proxy/forward.py) and the built-in origin (origin.py) are the two applications.

Phases of a connection (kept in `_phase`, with the deadline that applies to each)::

    HEAD ──head complete──▶ ACTIVE ──response finished──▶ IDLE ──first byte──▶ HEAD
     │ header_timeout         │ idle_timeout while the     │ idle_timeout
     ▼                        │ request body is incomplete ▼
    408 + close               ▼                            close
                             408 or close

Pipelined requests (RFC 9112 §9.3) are answered in order: a head that arrives while a
response is in progress is queued with its body, reading stops until the response ends,
and the queued request then starts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from veloxy.errors import DownstreamError, RequestTimeout
from veloxy.h1.parser import UpgradeRequested, request_parser_factory
from veloxy.h1.serialize import error_response
from veloxy.net.halfclose import half_close
from veloxy.net.timers import NEVER, DeadlineSweeper

if TYPE_CHECKING:
    from veloxy.h1.head import RequestHead

HEAD, ACTIVE, IDLE = 0, 1, 2


class Exchange(Protocol):
    """What an application returns for one request; the connection drives it."""

    def start(self) -> None:
        """Begin work on the head; may finish the response at once (a 404, say)."""

    #: True once any byte of the response was written: an error can no longer change it.
    response_started: bool

    def request_body(self, chunk: bytes) -> None: ...
    def request_end(self) -> None: ...
    def flush(self) -> None:
        """End of one read from the client: write what the callbacks produced."""
    def downstream_paused(self) -> None: ...
    def downstream_resumed(self) -> None: ...
    def downstream_lost(self) -> None: ...
    def tunnel_data(self, data: bytes) -> None: ...


class Downstream(Protocol):
    """What an exchange may use of its client's side: this module's `ServerConnection`
    (HTTP/1.1) or an HTTP/2 stream (http2/stream.py `H2Stream`). Nothing else of either is
    read by an exchange."""

    @property
    def client_ip(self) -> bytes:
        """The client's address, as text in bytes."""
    @property
    def peer(self) -> tuple[str, int] | None:
        """The client's (address, port), when known."""
    @property
    def scheme(self) -> bytes:
        """The listener's scheme, b"http" or b"https" (X-Forwarded-Proto, the span)."""
    @property
    def keep_alive(self) -> bool:
        """False once the connection will close after the current response."""
    @property
    def bytes_out(self) -> int:
        """Response bytes given to the client side so far (the access log's size)."""
    @property
    def connected(self) -> bool:
        """The client can still be answered (a response started now would reach it)."""
    def write(self, data: bytes) -> None:
        """Response bytes, as they go on the wire (HTTP/1.1 only)."""
    def finish(self, keep_alive: bool = True) -> None:
        """The response is complete: keep the client side for the next request, or close."""
    def answer(self, status: int, message: str, *, keep_alive: bool = True,
               fields: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """A short plain-text answer of the proxy's own, with `fields` (name, value) besides
        its own (Retry-After, say), and `finish`."""
    def abort(self) -> None:
        """The response cannot be completed: end it so that the client sees the cut."""
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def start_tunnel(self, exchange: Exchange) -> None:
        """Raw bytes both ways from now on (after a 101), read bytes to `exchange`."""
    def write_eof(self) -> None:
        """Half-close toward the client (a tunnel whose upstream finished sending)."""
    def close(self) -> None:
        """Close once what was written is sent."""


class Application(Protocol):
    def start_exchange(self, conn: ServerConnection, head: RequestHead) -> Exchange: ...


class ServerLimits(Protocol):
    max_request_line: int
    max_header_bytes: int
    max_body_bytes: int | None
    header_timeout: float
    idle_timeout: float


class _Queued:
    """A pipelined request waiting for the one before it to be answered."""

    __slots__ = ("body", "ended", "head")

    def __init__(self, head: RequestHead) -> None:
        self.head = head
        self.body: list[bytes] = []
        self.ended = False


def _nothing() -> None:
    pass


#: What every connection made with one ServerLimits object shares, made with the first:
#: (limits, its request parser factory, (header_timeout, idle_timeout)). A new connection
#: then makes its parser without a Python call and builds no tuple. Keyed by id() and
#: checked by identity (limits objects are config models, not hashable); one entry per
#: limits object a process ever served with (one, plus one per test).
_per_limits: dict[int, tuple[Any, Callable[[Any], Any], tuple[float, float]]] = {}


def _share(limits: ServerLimits) -> tuple[Any, Callable[[Any], Any], tuple[float, float]]:
    shared = _per_limits[id(limits)] = (
        limits,
        request_parser_factory(max_request_line=limits.max_request_line,
                               max_header_bytes=limits.max_header_bytes,
                               max_body_bytes=limits.max_body_bytes),
        (limits.header_timeout, limits.idle_timeout))
    return shared


class ConnectionRegistry:
    """The live connections of one listener group, for the sweeper and graceful shutdown."""

    def __init__(self) -> None:
        #: Also the sweeper's list of these connections (DeadlineSweeper.watch), from the
        #: first connection on: `swept_by`.
        self.connections: set[ServerConnection] = set()
        self.swept_by: DeadlineSweeper | None = None
        self.closing = False
        self.drained: asyncio.Event | None = None
        # For metrics (observe/metrics.py reads them when scraped): connections accepted,
        # requests refused by status, and the bytes of the connections already closed
        # (open ones keep their own count, so a read costs one slot increment).
        self.accepted = 0
        self.rejected: dict[int, int] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        # net/accept.py's Acceptor: its cap (limits.max_connections), the times it stopped
        # accepting at the cap and its back-offs on EMFILE; `on_vacancy` is set only while
        # it waits at the cap, to hear of the next connection that closes.
        self.max_connections = 0
        self.limit_pauses = 0
        self.accept_backoffs = 0
        self.on_vacancy: Callable[[], None] | None = None
        # While the loop's own servers accept (the Acceptor's fast mode): the count at which
        # a new connection calls `on_busy`, for the Acceptor to take over.
        self.busy_at = 1 << 62
        self.on_busy: Callable[[], None] = _nothing
        self.released = 0  # connections asked to leave to make room (make_room)
        #: HTTP/2 streams cut because the client took no bytes for http2.send_timeout.
        self.send_timeouts = 0

    def discard(self, conn: ServerConnection) -> None:
        # (ServerConnection.connection_lost has a copy of this: keep the two alike)
        self.connections.discard(conn)
        self.bytes_in += conn.bytes_in
        self.bytes_out += conn.bytes_out
        if self.on_vacancy is not None:
            self.on_vacancy()
        if self.closing and not self.connections and self.drained is not None:
            self.drained.set()

    def make_room(self, most: int, idle_for: float) -> int:
        """Ask up to `most` kept-alive HTTP/1.1 connections idle between requests to leave,
        to make room at limits.max_connections for connections waiting to be accepted: one
        idle for `idle_for` seconds or more is closed at once (nginx closes idle keep-alive
        connections the same way when it runs out; HTTP clients send a request again when
        a kept-alive connection closed before answering it); one idle for less, whose
        client may be sending its next request right now, answers that request with
        Connection: close. Connections busy with a request are left alone. Returns how
        many were asked."""
        asked = 0
        for conn in list(self.connections):
            if asked >= most:
                break
            if isinstance(conn, ServerConnection) and conn.leave_soon(idle_for):
                asked += 1
        self.released += asked
        return asked

    def begin_shutdown(self) -> None:
        """Close idle connections now and ask the busy ones to close after their response."""
        self.closing = True
        self.drained = asyncio.Event()
        for conn in list(self.connections):
            conn.close_when_done()
        if not self.connections:
            self.drained.set()


class ServerConnection(asyncio.Protocol):
    __slots__ = (
        "_app",
        "_exchange",
        "_finish_pending",
        "_parser",
        "_phase",
        "_queue",
        "_reading_paused",
        "_registry",
        "_request_done",
        "_sweeper",
        "_timeouts",
        "_tunnel",
        "_tunnel_tail",
        "_writing_paused",
        "bytes_in",
        "bytes_out",
        "client_ip",
        "deadline",
        "keep_alive",
        "peer",
        "scheme",
        "transport",
    )

    def __init__(
        self,
        app: Application,
        limits: ServerLimits,
        sweeper: DeadlineSweeper,
        registry: ConnectionRegistry,
        *,
        scheme: bytes = b"http",
    ) -> None:
        self._app = app
        #: The listener's scheme: b"https" on TLS listeners (X-Forwarded-Proto).
        self.scheme = scheme
        self._sweeper = sweeper
        self._registry = registry
        shared = _per_limits.get(id(limits))
        if shared is None or shared[0] is not limits:
            shared = _share(limits)
        self._timeouts = shared[2]
        self._parser = shared[1](self)
        self.transport: asyncio.Transport | None = None
        self._exchange: Exchange | None = None
        self._queue: deque[_Queued] | None = None
        self._phase = HEAD
        self._request_done = False
        #: False once the connection will close after the current response (a plain
        #: attribute, not a property: every proxied response reads it).
        self.keep_alive = True
        self._finish_pending = False
        self._reading_paused = False
        self._writing_paused = False
        self._tunnel: Exchange | None = None
        self._tunnel_tail: bytes | None = None
        self.deadline = NEVER
        self.client_ip = b""
        self.peer: tuple[str, int] | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a server protocol is handed a Transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
            self.client_ip = peer[0].encode("ascii")
        registry = self._registry
        connections = registry.connections
        connections.add(self)
        sweeper = self._sweeper
        if not sweeper.ticking or registry.swept_by is not sweeper:
            sweeper.watch(connections)  # (the sweeper visits the registry's set)
            registry.swept_by = sweeper
        self.deadline = sweeper.now + self._timeouts[0]
        registry.accepted += 1
        if len(connections) >= registry.busy_at:
            registry.on_busy()  # (net/accept.py: its own accepting from here on)
        if registry.closing:
            self.keep_alive = False

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.tunnel_data(data)
            return
        phase = self._phase
        if phase == IDLE:
            self._phase = HEAD
            self.deadline = self._sweeper.now + self._timeouts[0]
        elif phase == ACTIVE and not self._request_done:
            self.deadline = self._sweeper.now + self._timeouts[1]
        try:
            self._parser.feed(data)
        except DownstreamError as exc:
            self._reject(exc)
            return
        except UpgradeRequested as upgrade:
            # The exchange already has the head; the bytes after it wait for the 101.
            self._tunnel_tail = upgrade.tail
            self.pause_reading()
        exchange = self._exchange
        if exchange is not None:
            exchange.flush()

    def eof_received(self) -> bool:
        if self._tunnel is not None:
            self._tunnel.tunnel_data(b"")
            return True
        # A client may half-close after sending its request: answer it, then close.
        if self._phase == ACTIVE and self._request_done:
            self.keep_alive = False
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        # ConnectionRegistry.discard, inlined (every connection comes this way once):
        # out of the registry's set, and so of the sweeper's visits
        registry = self._registry
        registry.connections.discard(self)
        registry.bytes_in += self.bytes_in
        registry.bytes_out += self.bytes_out
        if registry.on_vacancy is not None:
            registry.on_vacancy()
        if registry.closing and not registry.connections and registry.drained is not None:
            registry.drained.set()
        self.deadline = NEVER
        # The parser holds bound methods of this connection: without this, every closed
        # connection would be a reference cycle (with its transport) left to the cyclic
        # collector, whose young collections then pause the loop on short-connection loads
        # (docs/BENCHMARKS.md, "Issues 12 and 13 at the end of the day")
        self._parser = None
        exchange = self._exchange or self._tunnel
        self._exchange = self._tunnel = None
        self._queue = None
        if exchange is not None:
            exchange.downstream_lost()

    def pause_writing(self) -> None:
        self._writing_paused = True
        exchange = self._exchange or self._tunnel
        if exchange is not None:
            exchange.downstream_paused()

    def resume_writing(self) -> None:
        self._writing_paused = False
        exchange = self._exchange or self._tunnel
        if exchange is not None:
            exchange.downstream_resumed()

    # -- RequestParser handler -------------------------------------------------------------

    def on_request_head(self, head: RequestHead) -> None:
        if self._exchange is not None or self._queue:
            # Pipelined: answer in order. Stop reading until the current one is done.
            if self._queue is None:
                self._queue = deque()
            self._queue.append(_Queued(head))
            self.pause_reading()
            return
        self._start(head)

    def on_request(self, head: RequestHead, body: bytes) -> None:
        """A whole request from one read (the C fast lane's event, h1/_fastpath.c): the
        same as on_request_head, on_request_body and on_request_end, in one call."""
        if self._exchange is not None or self._queue:
            self.on_request_head(head)  # pipelined: queued whole
            if body:
                self.on_request_body(body)
            self.on_request_end()
            return
        self._phase = ACTIVE
        self._request_done = True
        self.deadline = NEVER
        if head.close:
            self.keep_alive = False
        exchange = self._exchange = self._app.start_exchange(self, head)
        exchange.start()
        if self._exchange is exchange:
            if body:
                exchange.request_body(body)
            exchange.request_end()

    def on_request_body(self, chunk: bytes) -> None:
        if self._queue:
            self._queue[-1].body.append(chunk)
        elif self._exchange is not None:
            self._exchange.request_body(chunk)

    def on_request_end(self) -> None:
        if self._queue:
            self._queue[-1].ended = True
        elif self._exchange is not None:
            self._request_done = True
            self.deadline = NEVER
            self._exchange.request_end()
        elif self._finish_pending:
            self._next_request()

    # -- API for exchanges -----------------------------------------------------------------

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    @property
    def connected(self) -> bool:
        transport = self.transport
        return transport is not None and not transport.is_closing()

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.transport.write(data)  # type: ignore[union-attr]  # exchanges write only while connected

    def finish(self, keep_alive: bool = True) -> None:
        """The response is complete. Keep the connection for the next request, or close."""
        self._exchange = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not keep_alive or not self.keep_alive or self._tunnel_tail is not None:
            transport.close()
            return
        if not self._request_done:
            # Answered before the request body was all read (an early error, say): read and
            # drop the rest, then carry on with the next request.
            self._finish_pending = True
            self.resume_reading()
            return
        self._next_request()

    def _next_request(self) -> None:
        self._finish_pending = False
        self._request_done = False
        if self._queue:
            asyncio.get_running_loop().call_soon(self._start_queued)
            return
        self._phase = IDLE
        self.deadline = self._sweeper.now + self._timeouts[1]
        if self._reading_paused:
            self.resume_reading()

    def answer(self, status: int, message: str, *, keep_alive: bool = True,
               fields: Sequence[tuple[bytes, bytes]] = ()) -> None:
        keep = keep_alive and self.keep_alive
        self.write(error_response(status, message, close=not keep, fields=fields))
        self.finish(keep_alive=keep)

    def abort(self) -> None:
        """Close at once: the response cannot be completed, and a truncated body must show."""
        self._exchange = None
        transport = self.transport
        if transport is not None:
            transport.abort()

    def send_error(self, exc: DownstreamError | Exception, status: int, message: str) -> None:
        """Answer with a short error response and close."""
        self._exchange = None
        rejected = self._registry.rejected
        rejected[status] = rejected.get(status, 0) + 1
        transport = self.transport
        if transport is not None and not transport.is_closing():
            data = error_response(status, message)
            self.bytes_out += len(data)
            transport.write(data)
            transport.close()

    def start_tunnel(self, exchange: Exchange) -> None:
        """Switch to raw bytes both ways (after a 101): everything read goes to `exchange`."""
        self._exchange = None
        self._tunnel = exchange
        self.deadline = NEVER
        tail, self._tunnel_tail = self._tunnel_tail, None
        if tail:
            exchange.tunnel_data(tail)
        self.resume_reading()

    def write_eof(self) -> None:
        """Half-close towards the client (a tunnel whose upstream finished sending)."""
        half_close(self.transport)

    def close(self) -> None:
        """Close after writing what is buffered."""
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def leave_soon(self, idle_for: float) -> bool:
        """Make room (ConnectionRegistry.make_room) if idle between requests: close now
        when idle for `idle_for` seconds or more, else after answering the next request.
        A connection busy with a request is left alone. True if it closed now or was not
        asked before."""
        transport = self.transport
        if self._phase != IDLE or transport is None or self._tunnel is not None \
                or transport.is_closing():
            return False
        asked = self.keep_alive
        self.keep_alive = False
        idle_since = self.deadline - self._timeouts[1]  # set when the last response ended
        if self._sweeper.now - idle_since >= idle_for:
            transport.close()
            return True
        return asked

    def close_when_done(self) -> None:
        """Graceful shutdown: close now if idle, else after the current response."""
        self.keep_alive = False
        if self.transport is None:
            return
        if self._tunnel is not None or self._phase == IDLE or (
                self._phase == HEAD and self._exchange is None and not self._queue):
            self.transport.close()  # a tunnel has no response to wait for

    # -- timers ----------------------------------------------------------------------------

    def on_deadline(self, now: float) -> None:
        self.deadline = NEVER
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._phase == HEAD:
            self._reject(RequestTimeout("request head not received in time"))
        elif self._phase == IDLE:
            transport.close()
        else:  # ACTIVE with the request body stalled
            exchange = self._exchange
            self._exchange = None
            if exchange is not None:
                exchange.downstream_lost()
            self.send_error(RequestTimeout(), 408, "request body not received in time")

    # -- internals -------------------------------------------------------------------------

    def _start(self, head: RequestHead) -> None:
        self._phase = ACTIVE
        self._request_done = False
        self.deadline = self._sweeper.now + self._timeouts[1] if head.has_body else NEVER
        if head.close:
            self.keep_alive = False
        exchange = self._exchange = self._app.start_exchange(self, head)
        exchange.start()

    def _start_queued(self) -> None:
        queue = self._queue
        if not queue or self.transport is None or self.transport.is_closing():
            return
        item = queue.popleft()
        self._start(item.head)
        exchange = self._exchange
        for chunk in item.body:
            if self._exchange is not exchange:
                return
            exchange.request_body(chunk)  # type: ignore[union-attr]  # the exchange started just above
        if item.ended and self._exchange is exchange:
            self._request_done = True
            self.deadline = NEVER
            exchange.request_end()  # type: ignore[union-attr]  # the exchange started just above
        if self._exchange is exchange and exchange is not None:
            exchange.flush()
        if not queue:
            self.resume_reading()

    def _reject(self, exc: DownstreamError) -> None:
        """Bad input: answer with its status if no response has started, then close."""
        exchange = self._exchange
        if exchange is not None:
            # The body broke framing mid-request: abandon the exchange (nothing more goes
            # upstream), and answer only if its response has not started.
            self._exchange = None
            exchange.downstream_lost()
            if exchange.response_started:
                if self.transport is not None:
                    self.transport.abort()
                return
        reason = str(exc) or type(exc).__name__
        self.send_error(exc, exc.status, f"{exc.status} {_REASONS.get(exc.status, '')}: {reason}")


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
}
