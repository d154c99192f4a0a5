"""One HTTP/2 client connection: the `h2` state machine fed from an asyncio transport.

`H2ServerConnection` is the HTTP/2 counterpart of net.server.ServerConnection: it owns the
transport, registers with the sweeper (timeouts) and the ConnectionRegistry (graceful
shutdown), and for every request asks the application for an exchange, with an `H2Stream`
(stream.py) standing in for the client connection.

One read from the socket: its frames go through h2 at once; the events are dispatched
(streams started, body bytes handed to exchanges, resets, window updates); each exchange
that got body bytes is flushed (one upstream write per read, as for HTTP/1.1); then what h2
has to send (SETTINGS and PING acknowledgements, WINDOW_UPDATEs, responses) goes out in one
transport.write.

Limits: SETTINGS_MAX_CONCURRENT_STREAMS (h2 refuses a stream beyond it), header list size
(limits.max_header_bytes), the request body (limits.max_body_bytes: 413, then
RST_STREAM), the flood guard (guard.py). Timeouts: the first request must come within
limits.header_timeout; a connection without streams closes after limits.idle_timeout; one
whose streams all wait for request bytes that do not come (a stalled upload) has those
streams reset after idle_timeout; a response that waits for a client's flow-control window
longer than http2.send_timeout has its stream reset (the connection closed when its own
window is the one kept shut, or when the client does not read the socket at all).
Graceful shutdown: GOAWAY with the last stream taken, streams in flight finish, then the
connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from h2.config import H2Configuration
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from veloxy.errors import DownstreamError
from veloxy.http2.bounded import BoundedH2Connection
from veloxy.http2.guard import FloodGuard
from veloxy.http2.headers import request_head
from veloxy.http2.hpack_lane import use_lane
from veloxy.http2.stream import H2Stream
from veloxy.net.timers import NEVER, DeadlineSweeper

log = logging.getLogger("veloxy.http2")

#: Bytes a client that does not read may leave queued in our send buffer (acknowledgements
#: of its PINGs and SETTINGS, responses) before it is disconnected.
MAX_WRITE_BUFFER = 4 * 1024 * 1024


class H2ServerConnection(asyncio.Protocol):
    def __init__(self, app: Any, limits: Any, settings: Any, sweeper: DeadlineSweeper,
                 registry: Any, initial: bytes = b"", *, scheme: bytes = b"http") -> None:
        self._app = app
        #: The listener's scheme (https over TLS), for X-Forwarded-Proto.
        self.scheme = scheme
        self._sweeper = sweeper
        self._registry = registry
        self._timeouts = (limits.header_timeout, limits.idle_timeout)
        self._send_timeout: float = settings.send_timeout
        #: Until when the client may stay silent (the header or idle timeout, or request
        #: bodies that stopped coming), or NEVER; `deadline` is the earlier of it and the
        #: end of a write stall (_set_deadline).
        self._quiet_deadline = NEVER
        self.max_body_bytes: int | None = limits.max_body_bytes
        self._initial = initial
        # Outbound headers are ours (lowercased, connection-specific fields dropped) over
        # values llhttp already checked upstream: h2's second validation pass is skipped.
        # Inbound ones are validated by h2 (RFC 9113 §8.2); its inbound normalisation only
        # joins cookie fields, which request_head does itself (headers.py): skipped, one
        # generator layer less per field.
        config = H2Configuration(client_side=False, header_encoding=None,
                                 validate_outbound_headers=False,
                                 normalize_outbound_headers=False,
                                 normalize_inbound_headers=False)
        h2 = self.h2 = BoundedH2Connection(config)
        h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: settings.stream_window,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
            SettingCodes.ENABLE_PUSH: 0,
            # WebSocket over HTTP/2 (RFC 8441): extended CONNECT, relayed as an HTTP/1.1
            # Upgrade (http2/headers.py, proxy/h2exchange.py)
            SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
        })
        use_lane(h2)  # HPACK decoding in C where built (hpack_lane.py)
        h2.decoder.max_header_list_size = limits.max_header_bytes
        self._connection_window = settings.connection_window
        self.streams: dict[int, H2Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.client_ip = b""
        self.peer: tuple[str, int] | None = None
        self.deadline = NEVER
        self.writing_paused = False
        #: DATA bytes handed to h2 since the last flush (stream.py flushes past FLUSH_AT).
        self.unflushed = 0
        #: When the socket stopped taking our bytes (transport paused), or 0.
        self._write_paused_since = 0.0
        self._closing = False
        self._guard = FloodGuard(sweeper.now)
        self._seen_request = False
        self._flush_scheduled = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a server protocol is handed a Transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
            self.client_ip = peer[0].encode("ascii")
        self.deadline = self._quiet_deadline = self._sweeper.now + self._timeouts[0]
        self._sweeper.add(self)
        registry = self._registry
        registry.connections.add(self)
        registry.accepted += 1  # counted for the metrics as HTTP/1.1 ones are
        h2 = self.h2
        h2.initiate_connection()
        extra = self._connection_window - 65535
        if extra > 0:
            h2.increment_flow_control_window(extra)
        if self._registry.closing:
            self.close_when_done()
        self.flush()
        initial, self._initial = self._initial, b""
        if initial:
            self.data_received(initial)

    def data_received(self, data: bytes) -> None:
        try:
            # Any: the loop below dispatches on the exact event type (`type(e) is C`, cheaper
            # than an isinstance chain), which mypy cannot narrow.
            events: list[Any] = self.h2.receive_data(data)
        except ProtocolError as exc:
            # h2 has queued GOAWAY with the right code (PROTOCOL_ERROR, FLOW_CONTROL_ERROR,
            # ENHANCE_YOUR_CALM for CONTINUATION or header-list abuse...).
            # A bad preface is refused before h2 queues anything: GOAWAY by hand, so the
            # client learns why (RFC 9113 §3.4) before the close.
            log.info("http2 client %s: %s", self.peer, exc)
            if self.h2.state_machine.state is not ConnectionState.CLOSED:
                self.h2.close_connection(ErrorCodes.PROTOCOL_ERROR)
            self._terminate()
            return
        touched: list[H2Stream] = []
        in_headers: set[int] = set()
        now = self._sweeper.now
        guard = self._guard
        streams = self.streams
        for event in events:
            kind = type(event)
            if kind is DataReceived:
                stream = streams.get(event.stream_id)
                if stream is None:
                    self._ack_orphan(event)
                elif stream.on_data(event.data, event.flow_controlled_length):
                    touched.append(stream)
            elif kind is RequestReceived:
                if event.priority_updated is not None:  # part of HEADERS: not a flood
                    in_headers.add(id(event.priority_updated))
                stream = self._request(event)
                if stream is not None:
                    touched.append(stream)
            elif kind is StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None and not stream.request_done:
                    stream.on_end()
                    touched.append(stream)
            elif kind is WindowUpdated:
                self._window_opened(event.stream_id)
            elif kind is StreamReset:
                stream = streams.pop(event.stream_id, None)
                if stream is not None:
                    stream.on_reset()
                if event.remote_reset and not guard.spend("reset", now):
                    self._calm("rapid reset")
                    return
            elif kind is PingReceived:
                if not guard.spend("ping", now):
                    self._calm("PING flood")
                    return
            elif kind is RemoteSettingsChanged:
                if not guard.spend("settings", now):
                    self._calm("SETTINGS flood")
                    return
                if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                    self._window_opened(0)
            elif kind is PriorityUpdated:
                if id(event) not in in_headers and not guard.spend("priority", now):
                    self._calm("PRIORITY flood")
                    return
            elif kind is ConnectionTerminated:
                self._closing = True
                self._abandon_streams()
                self.flush()
                if self.transport is not None:
                    self.transport.close()
                return
            # TrailersReceived (dropped: HTTP/1.1 upstream requests end with the body),
            # StreamEnded handled with DataReceived, the rest: nothing to do.
        seen = set()
        for stream in touched:
            if stream.stream_id not in seen:
                seen.add(stream.stream_id)
                exchange = stream.exchange
                if exchange is not None:
                    exchange.flush()
        self._set_deadline()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._sweeper.discard(self)
        self._registry.discard(self)
        self.deadline = NEVER
        self._abandon_streams()
        self.transport = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        # a client that stops reading the socket is a write stall too (http2.send_timeout)
        self._write_paused_since = self._sweeper.now or 1e-9
        self.deadline = min(self.deadline, self._write_paused_since + self._send_timeout)
        for stream in list(self.streams.values()):
            if stream.exchange is not None:
                stream.exchange.downstream_paused()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._write_paused_since = 0.0
        for stream in list(self.streams.values()):
            stream.push()  # what was held back while the socket was full
            if stream.exchange is not None and not stream.out_paused:
                stream.exchange.downstream_resumed()
        self.flush()

    # -- used by streams and the registry --------------------------------------------------

    # ConnectionRegistry reads these two when it counts closed connections' traffic.
    bytes_in = 0
    bytes_out = 0

    def flush_soon(self) -> None:
        """Write what h2 has queued at the end of this loop iteration: the responses of
        several streams that one iteration produced then share one TLS record and one
        system call."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what h2 has queued, in one call."""
        self._flush_scheduled = False
        self.unflushed = 0
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)
            if self.writing_paused and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                log.info("http2 client %s does not read: closing", self.peer)
                self._abandon_streams()
                transport.abort()

    def forget(self, stream: H2Stream) -> None:
        """The stream is over on our side and the client's."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            if not self.streams:
                self._set_deadline()
                if self._closing:
                    self._close_soon()

    def close_when_done(self) -> None:
        """Graceful shutdown: GOAWAY now; close once the streams in flight are done."""
        if self._closing or self.transport is None:
            return
        # A WebSocket has no response to wait for: cut at once, as on HTTP/1.1, and before
        # the GOAWAY (a client may stop reading its streams' frames once it has one).
        for stream in [s for s in self.streams.values() if s.tunnel is not None]:
            stream.cancel()
        self._closing = True
        # GOAWAY by hand: h2's close_connection() would also close its state machine, and
        # the streams in flight could no longer send their responses.
        self.flush()
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = self.h2.highest_inbound_stream_id
        goaway.error_code = ErrorCodes.NO_ERROR
        transport = self.transport
        if not transport.is_closing():
            transport.write(goaway.serialize())
        if not self.streams:
            self._close_soon()

    def abort(self) -> None:
        self._abandon_streams()
        if self.transport is not None:
            self.transport.abort()

    # -- timers ----------------------------------------------------------------------------

    def stream_stalled(self, stream: H2Stream) -> None:
        """The stream has response bytes the client's window does not let out: it is reset
        if no window opens within http2.send_timeout."""
        if not stream.stalled_since:
            stream.stalled_since = self._sweeper.now or 1e-9
            self.deadline = min(self.deadline, stream.stalled_since + self._send_timeout)

    def on_deadline(self, now: float) -> None:
        self.deadline = NEVER
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._send_stalls(now):
            return
        if now < self._quiet_deadline:  # only a write stall was due
            self._set_deadline(refresh=False)
            return
        stalled = [s for s in self.streams.values()
                   if not s.request_done and s.exchange is not None and s.tunnel is None]
        if not self.streams:
            self._closing = True
            try:
                self.h2.close_connection(ErrorCodes.NO_ERROR)
            except ProtocolError:
                pass
            self.flush()
            transport.close()
            return
        for stream in stalled:  # request bodies that stopped coming
            exchange, stream.exchange = stream.exchange, None
            exchange.downstream_lost()
            stream.abort()
        self._set_deadline()

    # -- internals -------------------------------------------------------------------------

    def _request(self, event: RequestReceived) -> H2Stream | None:
        sid = event.stream_id
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        self._seen_request = True
        if self._closing:
            stream.refuse()  # after GOAWAY: REFUSED_STREAM, which a client may retry
            return None
        ended = event.stream_ended is not None
        try:
            head = request_head(event.headers, ended)
        except DownstreamError as exc:
            stream.request_done = ended
            stream._reset_after = not ended
            stream.respond(exc.status, f"{exc.status} {exc}\n".encode())
            return None
        stream.request_done = ended  # (h2's StreamEnded event that follows is then a no-op)
        exchange = stream.exchange = self._app.start_stream_exchange(stream, head)
        exchange.start()
        if ended and stream.exchange is exchange:
            exchange.request_end()
        return stream

    def _ack_orphan(self, event: DataReceived) -> None:
        """Body bytes for a stream we are done with: credit the connection window back."""
        if event.flow_controlled_length:
            try:
                self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                  event.stream_id)
            except (StreamClosedError, ProtocolError):
                # the stream is closed for h2 too; the connection window still counts it
                try:
                    self.h2.increment_flow_control_window(event.flow_controlled_length)
                except ProtocolError:
                    pass

    def _window_opened(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.push()
        else:
            for stream in list(self.streams.values()):
                stream.push()

    def _set_deadline(self, refresh: bool = True) -> None:
        """The next time to look: the client's quiet time (no streams, or request bodies
        that stopped coming; from now unless `refresh` is False), or the earliest write
        stall's end. Answers themselves are bounded by the upstream timeouts."""
        streams = self.streams
        if refresh:
            if not streams:
                self._quiet_deadline = self._sweeper.now + self._timeouts[
                    1 if self._seen_request else 0]
            elif any(not s.request_done and s.tunnel is None for s in streams.values()):
                # (a WebSocket's stream may stay quiet: tunnels have no timeout, as on
                # HTTP/1.1)
                self._quiet_deadline = self._sweeper.now + self._timeouts[1]
            else:
                self._quiet_deadline = NEVER
        deadline = self._quiet_deadline
        if self._write_paused_since:
            deadline = min(deadline, self._write_paused_since + self._send_timeout)
        for stream in streams.values():
            if stream.stalled_since:
                deadline = min(deadline, stream.stalled_since + self._send_timeout)
        self.deadline = deadline

    def _send_stalls(self, now: float) -> bool:
        """Reset the streams whose response waited for the client's window past
        send_timeout; close the connection when its own window is the one kept shut, or
        when the client has not read the socket for that long. True when it is closed."""
        limit = now - self._send_timeout
        if 0 < self._write_paused_since <= limit:  # the socket itself takes nothing
            log.info("http2 client %s has not read for %.0fs: closing", self.peer,
                     self._send_timeout)
            self._registry.send_timeouts += max(1, len(self.streams))
            self.abort()  # (a GOAWAY would not be read either)
            return True
        expired = [s for s in self.streams.values() if 0 < s.stalled_since <= limit]
        if not expired:
            return False
        self._registry.send_timeouts += len(expired)
        if self.h2.outbound_flow_control_window <= 0:
            log.info("http2 client %s kept its connection window shut for %.0fs: closing",
                     self.peer, self._send_timeout)
            self._goaway_calm()
            return True
        for stream in expired:
            log.info("http2 client %s kept stream %d's window shut for %.0fs: resetting it",
                     self.peer, stream.stream_id, self._send_timeout)
            stream.cancel()
        self.flush()
        return False

    def _calm(self, what: str) -> None:
        log.warning("http2 client %s: %s, disconnecting", self.peer, what)
        self._goaway_calm()

    def _goaway_calm(self) -> None:
        """GOAWAY(ENHANCE_YOUR_CALM) naming the last stream seen, then close."""
        try:
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM,
                                     last_stream_id=self.h2.highest_inbound_stream_id)
        except ProtocolError:
            pass
        self._terminate()

    def _terminate(self) -> None:
        self._closing = True
        self._abandon_streams()
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def _close_soon(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.flush()
            transport.close()

    def _abandon_streams(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            exchange, stream.exchange = stream.exchange, None
            if exchange is not None:
                exchange.downstream_lost()
