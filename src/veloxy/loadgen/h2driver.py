"""`veloxy bench --h2`: HTTP/2 connections that each keep `-m N` streams in flight (h2load's
semantics), over h2c (http://, prior knowledge) or TLS (https://, ALPN h2).

The framing is the `h2` package's; the I/O and the timing are here, on the same worker model
as the HTTP/1.1 drivers (driver.py): one `H2Driver` per connection slot, the worker's slot
coroutine (re)opening its connection, latencies appended to the worker's plain lists.

Why the hot path looks like this: the `h2` package is pure Python and costs far more per
request than anything of ours, so what we add must stay out of its way. Per socket read there
is exactly one `receive_data` (h2 parses every frame of the read in one call) and one
`transport.write` of `data_to_send()` (the next requests of every stream that ended in the read
go out together); per read one clock reading (every response of a read arrived at the same
moment, and in the closed loop the same reading starts the requests that replace them). No
task, no future and no timer per request: a stream is an entry in a dict from stream id to its
start time. Flow control is one connection-level WINDOW_UPDATE per 16 MiB received rather than
h2's per-DATA acknowledgement: our streams get a 1 GiB initial window (answers of a benchmark
never exhaust it) and are closed after one response. h2's header validation and
normalisation are off both ways: the request headers are checked once by settings.py, and the
generator only needs a response's status.

Semantics, as h2load:
* closed loop: each connection keeps min(-m, the server's SETTINGS_MAX_CONCURRENT_STREAMS)
  streams open; a stream that ends is replaced at once, timed from the same clock reading.
* open loop (-R): request n of a connection is due at `base + n * interval`. When a stream is
  free at that time, a timer sends it and it is timed from when it really left (the timer's
  slack recorded as schedule lag); when every stream of the connection is busy, it waits for
  one and is timed from its due time: the coordinated-omission correction, as in driver.py.

Errors: a RST_STREAM from the server, a GOAWAY that leaves a stream unprocessed, and a
connection lost with streams open count each stream as a read error; no bytes for --timeout
while streams are open counts each as a timeout (a connection-level deadline, checked by the
sweeper: a timer per stream would cost a timer per request; so a server that holds one stream
forever while answering the others is not caught, that stream's slot just stays taken).
A status outside 200 is a completed request, counted apart.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, ClassVar, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

from veloxy.errors import UpstreamConnectError, UpstreamResetError, UpstreamTimeout
from veloxy.net.client import connect_upstream
from veloxy.net.timers import NEVER, DeadlineSweeper

if TYPE_CHECKING:
    from veloxy.loadgen.driver import Tally
    from veloxy.loadgen.settings import BenchSettings

__all__ = ["H2BenchConnection", "H2Driver", "NotHttp2Error", "probe"]

#: Our streams' initial receive window: large enough that no benchmark answer exhausts it, so
#: no per-stream WINDOW_UPDATE is ever needed.
STREAM_WINDOW = 1 << 30
#: The connection's receive window is topped up by one WINDOW_UPDATE per this many bytes.
CONNECTION_TOP_UP = 1 << 24

_ResponseReceived = h2.events.ResponseReceived
_DataReceived = h2.events.DataReceived
_StreamEnded = h2.events.StreamEnded
_StreamReset = h2.events.StreamReset
_STATUS_200 = (b":status", b"200")


class NotHttp2Error(UpstreamConnectError):
    """The server answered the HTTP/2 preface with something else (an HTTP/1.1-only server)."""


def h2_config() -> h2.config.H2Configuration:
    # Validation off both ways: the request headers were checked once (settings.py), and a
    # response's fields are not looked at (only :status); h2 still checks the framing.
    return h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False,
        normalize_inbound_headers=False)


class StaticBlockDecoder(hpack.Decoder):
    """hpack's Decoder, remembering the header blocks that leave its dynamic table empty.

    Why: HPACK decoding (a Python loop per byte for Huffman-coded strings) is the largest single
    cost of an HTTP/2 response in the generator (docs/BENCHMARKS.md, "veloxy bench --h2 against
    h2load"), and servers such as nginx send the same block for every response to a benchmark
    (nothing indexed; only Date changes, once a second). A block decoded with an empty dynamic
    table that left it empty used only the static table and changed nothing, so its result
    depends on its bytes alone (and the size limits, part of the key): replaying it is exact.
    Blocks that index (h2's encoder does) are decoded every time, as before."""

    #: Shared by the process's connections; emptied when full (a new Date a second, and a few
    #: statuses: a handful of entries in practice).
    memo: ClassVar[dict[tuple[bytes, int, int], list[Any]]] = {}
    MEMO_LIMIT = 256

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table = self.header_table
        if table.dynamic_entries or not raw:
            return super().decode(data, raw)
        key = (bytes(data), table.maxsize, self.max_header_list_size)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        headers = cast(list[Any], super().decode(data, raw))  # hpack builds a list
        if not table.dynamic_entries and table.maxsize == key[1]:
            if len(self.memo) >= self.MEMO_LIMIT:
                self.memo.clear()
            self.memo[key] = headers
        return headers


class RepeatedBlockEncoder(hpack.Encoder):
    """hpack's Encoder, reusing the last block when the same header list comes again and the
    dynamic table is as that block left it.

    Why: a benchmark sends one header list over and over; once its fields are in the table,
    every encoding is the same indexed references, yet hpack searches the table field by field
    each time. Exact: a block is kept only when encoding it inserted nothing (the table's first
    entry and size unchanged, no size update pending), so the table it refers to is unchanged
    until the next block that misses, which replaces or drops it."""

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple[list[Any], bool, int, bytes] | None = None

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self.header_table
        last = self._last
        if (last is not None and not table.resized and last[2] == table.maxsize
                and last[1] is huffman and last[0] == headers):
            return last[3]
        entries = table.dynamic_entries
        before = (len(entries), id(entries[0]) if entries else 0, table.maxsize, table.resized)
        block = super().encode(headers, huffman)
        after = (len(entries), id(entries[0]) if entries else 0, table.maxsize, False)
        self._last = (list(headers), huffman, table.maxsize, block) if before == after else None
        return block


class _BoundedConnection(h2.connection.H2Connection):
    """h2 remembers how each of the last 2**16 closed streams ended (~130 bytes each): 8.5 MiB
    per connection once 65,536 requests went by, 850 MiB for a long `-c 100` run. The
    generator resets no stream, so a late frame needs no memory of one beyond a window's
    worth (the proxy's side bounds it likewise: http2/bounded.py, which loadgen's layer may
    not import)."""
    MAX_CLOSED_STREAMS = 1024


def new_h2_connection() -> h2.connection.H2Connection:
    conn = _BoundedConnection(h2_config())
    decoder = StaticBlockDecoder()
    decoder.max_header_list_size = conn.decoder.max_header_list_size
    decoder.max_allowed_table_size = conn.decoder.max_allowed_table_size
    conn.decoder = decoder
    conn.encoder = RepeatedBlockEncoder()
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                                     h2.settings.SettingCodes.ENABLE_PUSH: 0})
    conn.initiate_connection()
    conn.increment_flow_control_window(STREAM_WINDOW - 65535)
    return conn


def probe(sock: socket.socket, settings: BenchSettings) -> None:
    """The pre-flight on a connected (TLS: handshaken) socket: the server must answer our
    preface with its SETTINGS. Raises NotHttp2Error saying what to do."""
    t = settings.target
    if isinstance(sock, ssl.SSLSocket) and sock.selected_alpn_protocol() != "h2":
        raise NotHttp2Error(f"{t.host}:{t.port} did not choose h2 in the TLS handshake (ALPN "
                            f"{sock.selected_alpn_protocol() or 'none'}): it serves HTTP/1.1 "
                            "only over TLS; drop --h2")
    conn = new_h2_connection()
    sock.sendall(conn.data_to_send())
    not_h2 = NotHttp2Error(f"{t.host}:{t.port} does not speak HTTP/2 with prior knowledge "
                           "(h2c): drop --h2, or give an https:// URL for h2 over TLS")
    while True:
        try:
            data = sock.recv(65536)
            events = conn.receive_data(data) if data else None
        except (h2.exceptions.ProtocolError, OSError):
            raise not_h2 from None
        if not events and not data:
            raise not_h2
        for event in events or ():
            if isinstance(event, h2.events.RemoteSettingsChanged):
                return
            if isinstance(event, h2.events.ConnectionTerminated):
                raise not_h2


class H2BenchConnection(asyncio.Protocol):
    """One HTTP/2 connection: h2's state machine and the transport; its driver does the rest."""

    __slots__ = ("_sweeper", "_timeout", "closed", "deadline", "driver", "h2", "ready", "tally",
                 "transport", "unacked")

    def __init__(self, sweeper: DeadlineSweeper, timeout: float, tally: Tally) -> None:
        self._sweeper = sweeper
        self._timeout = timeout
        self.tally = tally
        self.h2 = new_h2_connection()
        self.transport: asyncio.Transport | None = None
        self.driver: H2Driver | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deadline = NEVER
        self.closed = False
        self.unacked = 0  # DATA bytes received since the last connection WINDOW_UPDATE

    @classmethod
    async def open(cls, host: str, port: int, sweeper: DeadlineSweeper, timeout: float,
                   tally: Tally, *, ssl: ssl.SSLContext | None = None,
                   server_hostname: str | None = None) -> H2BenchConnection:
        """Connect, and wait for the server's SETTINGS: a connection is handed to a driver
        only once it speaks HTTP/2. Raises UpstreamConnectError."""
        tls: dict[str, Any] = {}
        if ssl is not None:
            tls = {"ssl": ssl, "server_hostname": server_hostname or host,
                   "ssl_handshake_timeout": timeout}
        conn = await connect_upstream(lambda: cls(sweeper, timeout, tally), host, port,
                                      timeout, **tls)
        try:
            async with asyncio.timeout(timeout):
                await conn.ready
        except TimeoutError:
            conn.close()
            raise UpstreamConnectError(f"no HTTP/2 SETTINGS from {host}:{port}") from None
        except UpstreamConnectError:
            conn.close()
            raise
        return conn

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # create_connection hands a Transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:  # as net.client: the loops set it already, but a request must not wait
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
            self.ready.set_exception(NotHttp2Error("the server did not choose h2 in ALPN"))
            return
        self._sweeper.add(self)
        self.transport.write(self.h2.data_to_send())  # type: ignore[union-attr]  # just set

    def data_received(self, data: bytes) -> None:
        self.tally.bytes_in += len(data)
        self.deadline = self._sweeper.now + self._timeout
        try:
            events = self.h2.receive_data(data)  # every frame of the read in one call
        except h2.exceptions.ProtocolError as exc:
            if not self.ready.done():
                self.ready.set_exception(NotHttp2Error(f"not an HTTP/2 answer: {exc}"))
            self.fail(UpstreamResetError(f"HTTP/2 protocol error: {exc}"))
            return
        driver = self.driver
        if driver is not None:
            driver.on_events(events)
        else:
            self._handshake(events)
        out = self.h2.data_to_send()  # the next requests of every stream that ended: one write
        if out and not self.closed:
            self.transport.write(out)  # type: ignore[union-attr]  # set in connection_made

    def _handshake(self, events: list[h2.events.Event]) -> None:
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged) and not self.ready.done():
                self.ready.set_result(None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                if not self.ready.done():
                    self.ready.set_exception(UpstreamConnectError("GOAWAY before any request"))
                self.close()

    def eof_received(self) -> bool:
        return False  # close: HTTP/2 has no half-closed connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._sweeper.discard(self)
        if not self.ready.done():
            self.ready.set_exception(NotHttp2Error("closed before its HTTP/2 SETTINGS"))
        driver = self.driver
        if driver is not None and driver.conn is self:
            driver.connection_lost(UpstreamResetError("connection closed"))

    # -- ours --------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return (not self.closed
                and self.h2.state_machine.state != h2.connection.ConnectionState.CLOSED)

    def on_deadline(self, now: float) -> None:
        """No byte for --timeout while streams were open (the sweeper's tick)."""
        driver = self.driver
        if driver is not None and driver.streams:
            driver.connection_lost(UpstreamTimeout("no HTTP/2 progress"))
            self.close()
        else:
            self.deadline = NEVER

    def fail(self, exc: Exception) -> None:
        driver = self.driver
        if driver is not None and driver.conn is self:
            driver.connection_lost(exc)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sweeper.discard(self)
            if self.transport is not None:
                self.transport.abort()

    def flush(self) -> None:
        """Write what h2 has buffered (outside data_received: the first requests, timers),
        and start the --timeout clock if it was stopped (an idle connection's): a server
        that never answers must not hold its streams for the whole run."""
        out = self.h2.data_to_send()
        if out and not self.closed:
            self.transport.write(out)  # type: ignore[union-attr]  # connected before any request
            if self.deadline == NEVER:
                self.deadline = self._sweeper.refresh() + self._timeout


class H2Driver:
    """One connection slot: its streams, its schedule (open loop), its records."""

    __slots__ = ("base", "body", "capacity", "conn", "due", "headers", "interval", "loop", "n",
                 "open_loop", "pending", "record", "record_lag", "record_raw", "running",
                 "sent_raw", "streams", "tally", "timer", "waiter", "want")

    def __init__(self, headers: list[tuple[bytes, bytes]], body: bytes | None, streams: int,
                 record: Callable[[int], None], tally: Tally, *,
                 record_raw: Callable[[int], None] | None = None,
                 record_lag: Callable[[int], None] | None = None, interval_ns: float = 0.0,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.headers = headers
        self.body = body
        self.want = streams  # -m
        self.capacity = streams  # min(-m, the server's SETTINGS_MAX_CONCURRENT_STREAMS)
        self.record = record
        self.record_raw = record_raw
        self.record_lag = record_lag
        self.tally = tally
        self.open_loop = record_raw is not None
        self.interval = interval_ns
        self.loop = loop
        self.conn: H2BenchConnection | None = None
        self.running = True
        #: Stream id -> the time its latency is counted from (open loop: its due time when it
        #: waited for a free stream).
        self.streams: dict[int, int] = {}
        #: Open loop only: stream id -> when it really left (the uncorrected latency).
        self.sent_raw: dict[int, int] = {}
        #: Request bodies still waiting for flow-control window: stream id -> rest.
        self.pending: dict[int, bytes] = {}
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.base = 0
        self.n = 0
        self.due = 0

    @property
    def busy(self) -> bool:
        return bool(self.streams)

    def outstanding(self) -> int:
        return len(self.streams)

    def set_schedule(self, base_ns: int) -> None:
        self.base = base_ns
        self.n = 0
        self.due = base_ns

    # -- slot bookkeeping (as BaseDriver's) ---------------------------------------------------

    def attach(self, conn: H2BenchConnection, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        self.conn = conn
        conn.driver = self
        limit = conn.h2.remote_settings.max_concurrent_streams
        self.capacity = min(self.want, limit)
        waiter = self.waiter = loop.create_future()
        return waiter

    def begin(self, started: int | None, slept: bool = False) -> None:
        """A connection is attached: fill its streams. `started`: when the slot began
        connecting for them (their latency includes the connect), None at the run's start."""
        now = perf_counter_ns()
        if self.open_loop:
            self._pump(now)
        else:
            self._fill(now if started is None else started)
        if self.conn is not None:
            self.conn.flush()

    def lost(self) -> None:
        self.cancel_timer()
        self.conn = None
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop(self) -> None:
        self.running = False
        self.cancel_timer()
        if not self.streams:
            self.lost()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def connection_lost(self, exc: Exception) -> None:
        """The connection is gone (or timed out): every open stream is an error."""
        if self.streams:
            for _ in self.streams:
                self.tally.count_error(exc)
            self.streams.clear()
            self.sent_raw.clear()
        self.pending.clear()
        self.lost()

    # -- the hot path ------------------------------------------------------------------------

    def on_events(self, events: list[h2.events.Event]) -> None:
        """One read's events (called by the connection once per read)."""
        streams = self.streams
        ended = 0
        now = 0
        for event in events:
            kind = type(event)
            if kind is _DataReceived:
                conn = self.conn
                conn.unacked += event.flow_controlled_length  # type: ignore[union-attr,attr-defined]  # events of our connection; DataReceived carries it
                if conn.unacked >= CONNECTION_TOP_UP:  # type: ignore[union-attr]  # as above
                    conn.h2.increment_flow_control_window(conn.unacked)  # type: ignore[union-attr]  # as above
                    conn.unacked = 0  # type: ignore[union-attr]  # as above
            elif kind is _StreamEnded:
                start = streams.pop(event.stream_id, None)  # type: ignore[attr-defined]  # StreamEnded has stream_id
                if start is not None:
                    if not now:
                        now = perf_counter_ns()
                    self.record((now - start) // 1000)
                    if self.open_loop:
                        self.record_raw((now - self.sent_raw.pop(event.stream_id)) // 1000)  # type: ignore[misc,attr-defined]  # set with the stream in open loop
                    ended += 1
            elif kind is _ResponseReceived:
                head = event.headers  # type: ignore[attr-defined]  # ResponseReceived has headers
                if head[0] != _STATUS_200:
                    self._status(head)
            else:
                self._rare(event)
        if not self.running or not self.capacity:  # stopping, or the connection retiring
            if not streams:
                conn = self.conn
                self.lost()
                if conn is not None and self.running:
                    conn.close()
            return
        if ended or len(streams) < self.capacity:
            if not now:
                now = perf_counter_ns()
            if self.open_loop:
                self._pump(now)
            else:
                self._fill(now)

    def _fill(self, start: int) -> None:
        """Closed loop: open streams up to the capacity, timed from `start`."""
        conn = self.conn
        if conn is None or not conn.usable:
            return
        streams = self.streams
        h2conn = conn.h2
        headers = self.headers
        body = self.body
        tally = self.tally
        try:
            while len(streams) < self.capacity:
                sid = h2conn.get_next_available_stream_id()
                if body is None:
                    h2conn.send_headers(sid, headers, end_stream=True)
                else:
                    h2conn.send_headers(sid, headers)
                    self._send_body(sid, body)
                streams[sid] = start
                tally.sent += 1
        except h2.exceptions.NoAvailableStreamIDError:
            self._retire()
        except h2.exceptions.ProtocolError:
            self._retire()  # the connection is closing (GOAWAY): no new stream on it

    def _pump(self, now: int) -> None:
        """Open loop: send every request already due while a stream is free (timed from its
        due time: it waited for a stream), and set a timer for the next one."""
        conn = self.conn
        if conn is None or not conn.usable or not self.running:
            return
        streams = self.streams
        while len(streams) < self.capacity:
            due = self.due
            if due > now:
                if self.timer is None:
                    self.timer = self.loop.call_later((due - now) * 1e-9, self._fire)  # type: ignore[union-attr]  # open loop has its loop
                return
            if not self._send_one(due, now):
                return

    def _fire(self) -> None:
        self.timer = None
        conn = self.conn
        if not self.running or conn is None or not conn.usable:
            return
        now = perf_counter_ns()
        lag = now - self.due
        self.record_lag(lag // 1000 if lag > 0 else 0)  # type: ignore[misc]  # open loop has it
        if len(self.streams) < self.capacity and self._send_one(now, now):
            self._pump(now)
        conn.flush()

    def _send_one(self, start: int, sent: int) -> bool:
        h2conn = self.conn.h2  # type: ignore[union-attr]  # callers checked the connection
        try:
            sid = h2conn.get_next_available_stream_id()
            if self.body is None:
                h2conn.send_headers(sid, self.headers, end_stream=True)
            else:
                h2conn.send_headers(sid, self.headers)
                self._send_body(sid, self.body)
        except (h2.exceptions.NoAvailableStreamIDError, h2.exceptions.ProtocolError):
            self._retire()
            return False
        self.streams[sid] = start
        self.sent_raw[sid] = sent
        self.tally.sent += 1
        self.n += 1
        self.due = self.base + int(self.n * self.interval)
        return True

    # -- the rest ------------------------------------------------------------------------------

    def _status(self, head: list[tuple[bytes, bytes]]) -> None:
        for name, value in head:
            if name == b":status":
                status = int(value)
                if status != 200 and status >= 200:
                    self.tally.note_status(status)
                return

    def _send_body(self, sid: int, body: bytes) -> None:
        """As much of the body as the windows allow; the rest when the server opens them."""
        h2conn = self.conn.h2  # type: ignore[union-attr]  # called while sending on it
        size = min(h2conn.local_flow_control_window(sid), len(body))
        frame = h2conn.max_outbound_frame_size
        sent = 0
        while sent < size:
            chunk = body[sent:min(size, sent + frame)]
            sent += len(chunk)
            h2conn.send_data(sid, chunk, end_stream=sent == len(body))
        if sent < len(body):
            self.pending[sid] = body[sent:]
        elif not body:
            h2conn.end_stream(sid)

    def _rare(self, event: h2.events.Event) -> None:
        conn = self.conn
        if isinstance(event, _StreamReset):
            if self.streams.pop(event.stream_id, None) is not None:
                self.sent_raw.pop(event.stream_id, None)
                self.pending.pop(event.stream_id, None)
                self.tally.errors_read += 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            # Streams above last_stream_id were not processed: errors; the others may end.
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for sid in [s for s in self.streams if s > last]:
                del self.streams[sid]
                self.sent_raw.pop(sid, None)
                self.tally.errors_read += 1
            self._retire()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            limit = conn.h2.remote_settings.max_concurrent_streams if conn else self.want
            self.capacity = min(self.want, limit)
        elif isinstance(event, h2.events.WindowUpdated) and self.pending and conn is not None:
            waiting, self.pending = self.pending, {}
            for sid, rest in waiting.items():
                if sid in self.streams:
                    try:
                        self._send_body(sid, rest)
                    except h2.exceptions.ProtocolError:
                        pass  # the stream was reset meanwhile: counted with its reset

    def _retire(self) -> None:
        """No new stream on this connection (GOAWAY, stream ids used up): let its open streams
        end, then the slot opens another."""
        self.capacity = 0
        if not self.streams:
            conn = self.conn
            self.lost()
            if conn is not None:
                conn.close()
