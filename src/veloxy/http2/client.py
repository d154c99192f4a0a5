"""HTTP/2 toward an upstream: without TLS (h2c with prior knowledge: gRPC backends) or
over TLS, where the server must choose h2 by ALPN (else the connect fails, nothing sent).

One `H2ClientConnection` carries many requests at once, each a stream with its own sink
(proxy/h2c_exchange.py). The sink gets the response head, body bytes, trailers and the end,
or one error; `on_read_done` closes each read so it can write what it gathered at once.

Flow control: request bodies are queued per stream and sent as the upstream's windows
allow; response bodies are acknowledged as the sink takes them, except while the sink has
paused the stream (its client reads slowly), so the upstream's window closes.
Timeouts: connect (asyncio.timeout); the response head per stream (`response_header`,
from the end of the request) and silence while the body streams (`read`) by the sweeper,
like the HTTP/1.1 client connection.
"""

from __future__ import annotations

import asyncio
from ssl import SSLContext
from typing import Any, Protocol

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError

from veloxy.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRefusedError,
    UpstreamResetError,
    UpstreamTimeout,
)
from veloxy.http2.bounded import BoundedH2Connection
from veloxy.http2.hpack_lane import use_lane
from veloxy.net.client import connect_upstream
from veloxy.net.timers import NEVER

Header = tuple[bytes, bytes]
CONNECTION_WINDOW = 16 * 1024 * 1024
STREAM_WINDOW = 1024 * 1024
#: Request bytes queued for a stream below which its sink is told it may send more.
DRAINED = 64 * 1024


class StreamSink(Protocol):
    def on_h2_informational(self, headers: list[Header]) -> None: ...
    def on_h2_head(self, headers: list[Header]) -> None: ...
    def on_h2_data(self, data: bytes) -> None: ...
    def on_h2_trailers(self, headers: list[Header]) -> None: ...
    def on_h2_end(self) -> None: ...
    def on_h2_error(self, exc: UpstreamError, received: bool) -> None: ...
    def on_h2_drained(self) -> None: ...
    def on_read_done(self) -> None: ...


class UpstreamStream:
    """One request in flight: its sink, queued body, held acknowledgements and deadline."""

    __slots__ = ("conn", "data", "deadline", "end", "paused", "received", "sent_all", "sink",
                 "stream_id", "unacked")

    def __init__(self, conn: H2ClientConnection, stream_id: int, sink: StreamSink) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.sink = sink
        self.data = bytearray()
        self.end = False
        self.sent_all = False
        self.paused = False
        self.unacked = 0
        self.received = False
        self.deadline = NEVER

    def on_deadline(self, now: float) -> None:
        self.deadline = NEVER
        what = ("upstream sent no response head in time" if not self.received
                else "upstream stopped sending the response body")
        self.conn.fail_stream(self, UpstreamTimeout(what), ErrorCodes.CANCEL)


class H2ClientConnection(asyncio.Protocol):
    def __init__(self, sweeper: Any, timeouts: Any, on_closed: Any = None) -> None:
        self._sweeper = sweeper
        self._timeouts = timeouts
        self._on_closed = on_closed
        self.h2 = BoundedH2Connection(H2Configuration(client_side=True, header_encoding=None,
                                               validate_outbound_headers=False,
                                               normalize_outbound_headers=False))
        use_lane(self.h2)  # HPACK in C where built (hpack_lane.py)
        self.streams: dict[int, UpstreamStream] = {}
        self.transport: asyncio.Transport | None = None
        self.going_away = False
        self._flush_scheduled = False

    @classmethod
    async def open(cls, host: str, port: int, sweeper: Any, timeouts: Any,
                   on_closed: Any = None, ssl: SSLContext | None = None,
                   server_hostname: str | None = None) -> H2ClientConnection:
        """Connect (and, with `ssl`, the TLS handshake, which must agree on h2)."""
        if ssl is None:
            return await connect_upstream(lambda: cls(sweeper, timeouts, on_closed), host,
                                          port, timeouts.connect)
        conn = await connect_upstream(lambda: cls(sweeper, timeouts, on_closed), host, port,
                                      timeouts.connect, ssl=ssl,
                                      server_hostname=server_hostname)
        transport = conn.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if chosen != "h2":
            conn._on_closed = None  # never counted as open by the pool
            if transport is not None:
                transport.abort()
            raise UpstreamConnectError(f"{host}:{port} did not choose HTTP/2 by ALPN "
                                       f"(chose {chosen or 'nothing'})")
        return conn

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # create_connection hands a Transport
        h2 = self.h2
        h2.initiate_connection()
        h2.update_settings({0x4: STREAM_WINDOW, 0x2: 0})  # INITIAL_WINDOW_SIZE, ENABLE_PUSH
        h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            # Any: dispatched on the exact event type below (`type(e) is C`, cheaper than
            # an isinstance chain), which mypy cannot narrow.
            events: list[Any] = self.h2.receive_data(data)
        except ProtocolError as exc:
            self._fail_all(UpstreamProtocolError(f"upstream HTTP/2 error: {exc}"))
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        touched: list[UpstreamStream] = []
        streams = self.streams
        read_timeout = self._timeouts.read
        for event in events:
            kind = type(event)
            stream = streams.get(getattr(event, "stream_id", 0) or 0)
            if kind is DataReceived:
                if stream is None:
                    self._ack(event.stream_id, event.flow_controlled_length)
                    continue
                stream.deadline = self._sweeper.now + read_timeout
                stream.sink.on_h2_data(event.data)
                if stream.paused:
                    stream.unacked += event.flow_controlled_length
                else:
                    self._ack(stream.stream_id, event.flow_controlled_length)
                touched.append(stream)
            elif kind is ResponseReceived and stream is not None:
                stream.received = True
                stream.deadline = self._sweeper.now + read_timeout
                stream.sink.on_h2_head(event.headers)
                touched.append(stream)
            elif kind is InformationalResponseReceived and stream is not None:
                stream.deadline = self._sweeper.now + self._timeouts.response_header
                stream.sink.on_h2_informational(event.headers)  # 100, 103: a head follows
                touched.append(stream)
            elif kind is TrailersReceived and stream is not None:
                stream.sink.on_h2_trailers(event.headers)
                touched.append(stream)
            elif kind is StreamEnded and stream is not None:
                self._forget(stream)
                stream.sink.on_h2_end()
                touched.append(stream)
            elif kind is StreamReset and stream is not None:
                self._forget(stream)
                stream.sink.on_h2_error(_reset_error(event), stream.received)
            elif kind is WindowUpdated:
                for one in ([stream] if stream is not None else list(streams.values())):
                    self._push(one)
                    if len(one.data) < DRAINED:
                        one.sink.on_h2_drained()
            elif kind is ConnectionTerminated:
                self.going_away = True
                last = event.last_stream_id or 0
                for one in [s for sid, s in streams.items() if sid > last]:
                    self._forget(one)
                    # Beyond the last stream id it processed: RFC 9113 §6.8 says these
                    # were not, so they may go elsewhere whatever their method.
                    one.sink.on_h2_error(UpstreamRefusedError(
                        "upstream went away (GOAWAY) before the request"), False)
        seen: set[int] = set()
        for stream in touched:
            if stream.stream_id not in seen:
                seen.add(stream.stream_id)
                stream.sink.on_read_done()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.going_away = True
        self._fail_all(UpstreamResetError("upstream closed the HTTP/2 connection"))
        if self._on_closed is not None:
            self._on_closed(self)

    # -- requests --------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        transport = self.transport
        return (transport is not None and not transport.is_closing() and not self.going_away
                and len(self.streams) < self.h2.remote_settings.max_concurrent_streams)

    def start(self, headers: list[Header], sink: StreamSink, end: bool) -> UpstreamStream:
        sid = self.h2.get_next_available_stream_id()
        stream = UpstreamStream(self, sid, sink)
        self.streams[sid] = stream
        self._sweeper.add(stream)
        self.h2.send_headers(sid, headers, end_stream=end)
        if end:
            stream.sent_all = True
            stream.deadline = self._sweeper.now + self._timeouts.response_header
        return stream

    def send(self, stream: UpstreamStream, data: bytes, end: bool = False) -> None:
        if data:
            stream.data += data
        stream.end = stream.end or end
        self._push(stream)

    def queued(self, stream: UpstreamStream) -> int:
        return len(stream.data)

    def pause(self, stream: UpstreamStream) -> None:
        stream.paused = True

    def resume(self, stream: UpstreamStream) -> None:
        if stream.paused:
            stream.paused = False
            unacked, stream.unacked = stream.unacked, 0
            if unacked:
                self._ack(stream.stream_id, unacked)
                self.flush()

    def cancel(self, stream: UpstreamStream) -> None:
        """The client went away: reset the upstream stream."""
        if self.streams.get(stream.stream_id) is stream:
            self._forget(stream)
            try:
                self.h2.reset_stream(stream.stream_id, ErrorCodes.CANCEL)
            except (StreamClosedError, ProtocolError):
                pass
            self.flush()

    def fail_stream(self, stream: UpstreamStream, exc: UpstreamError, code: int) -> None:
        self.cancel(stream)
        stream.sink.on_h2_error(exc, stream.received)

    def flush(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def close(self) -> None:
        if self.transport is not None:
            try:
                self.h2.close_connection()
            except ProtocolError:
                pass
            self.flush()
            self.transport.close()

    # -- internals -------------------------------------------------------------------------

    def _push(self, stream: UpstreamStream) -> None:
        if stream.sent_all or self.streams.get(stream.stream_id) is not stream:
            return
        h2 = self.h2
        sid = stream.stream_id
        data = stream.data
        try:
            while data:
                window = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size)
                if window <= 0:
                    return
                piece = bytes(data[:window])
                del data[:window]
                last = stream.end and not data
                h2.send_data(sid, piece, end_stream=last)
                if last:
                    self._sent_all(stream)
                    return
            if stream.end:
                h2.end_stream(sid)
                self._sent_all(stream)
        except (StreamClosedError, ProtocolError):
            pass

    def _sent_all(self, stream: UpstreamStream) -> None:
        stream.sent_all = True
        stream.deadline = self._sweeper.now + self._timeouts.response_header

    def _ack(self, stream_id: int, size: int) -> None:
        if size:
            try:
                self.h2.acknowledge_received_data(size, stream_id)
            except (StreamClosedError, ProtocolError):
                pass

    def _forget(self, stream: UpstreamStream) -> None:
        self.streams.pop(stream.stream_id, None)
        self._sweeper.discard(stream)
        stream.deadline = NEVER
        if self.going_away and not self.streams and self.transport is not None:
            asyncio.get_running_loop().call_soon(self.close)  # after this event's flush

    def _fail_all(self, exc: UpstreamError) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            self._sweeper.discard(stream)
            stream.sink.on_h2_error(exc, stream.received)


def _reset_error(event: StreamReset) -> UpstreamError:
    """The error of a stream the upstream reset: REFUSED_STREAM promises the request was not
    processed (RFC 9113 §8.7), any other code does not."""
    code = event.error_code
    if code == ErrorCodes.REFUSED_STREAM:
        return UpstreamRefusedError("upstream refused the stream (REFUSED_STREAM)")
    name = ErrorCodes(code).name if code in ErrorCodes._value2member_map_ else str(code)
    return UpstreamResetError(f"upstream reset the stream ({name})")
