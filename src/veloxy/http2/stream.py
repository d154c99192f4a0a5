"""One HTTP/2 stream, seen by the proxy's exchange as its client.

An `H2Stream` is a `net.server.Downstream`, as an HTTP/1.1 `ServerConnection` is: the
exchanges (proxy/h2exchange.py, proxy/h2c_exchange.py) make the same calls on it
(`pause_reading`/`resume_reading`, `finish`, `abort`, `answer`, `client_ip`, `scheme`...),
and give the response by `send_head`/`send_body`/`send_trailers`/`send_end` instead of
bytes. Their HTTP/2 meaning:

- reading paused: the request body already received is not acknowledged, so the client's
  stream window closes and it stops sending (per-stream backpressure toward the client);
  resuming sends the WINDOW_UPDATE held back;
- a 1xx answer (`send_informational`) goes out at once in a HEADERS frame of its own;
- the response is queued (`send_head`, `send_body`, `send_end`) and `push` sends what the
  stream's and the connection's send windows allow; beyond HIGH_WATER bytes left queued
  the exchange is told `downstream_paused` (the upstream connection stops reading) and,
  below LOW_WATER, `downstream_resumed`;
- `abort`: RST_STREAM(INTERNAL_ERROR), the client sees the response was cut;
- `finish` after a response that ended before the request body did: RST_STREAM(NO_ERROR)
  once the response is out (RFC 9113 §8.1), so the client stops sending.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError, ProtocolError, StreamClosedError

if TYPE_CHECKING:
    from veloxy.http2.connection import H2ServerConnection

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
#: DATA handed to h2 in one go before the connection writes it out: the socket's
#: backpressure (pause_writing) is then seen before more is taken from the stream's queue,
#: where the watermarks pause the upstream. (libuv reads up to 32 times 64 KiB from a fast
#: upstream per loop iteration: without it, one flush could be megabytes.)
FLUSH_AT = 128 * 1024


class H2Stream:
    __slots__ = (
        "_data",
        "_end",
        "_headers",
        "_out_done",
        "_out_paused",
        "_received",
        "_reset_after",
        "_trailers",
        "_unacked",
        "bytes_out",
        "client_ip",
        "conn",
        "exchange",
        "reading_paused",
        "request_done",
        "scheme",
        "stalled_since",
        "stream_id",
        "tunnel",
    )

    keep_alive = True
    writing_paused = False

    def __init__(self, conn: H2ServerConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        # The connection's, copied: read per request (routing, forwarding fields), where a
        # property would cost a call each time; neither changes once the connection is made.
        self.client_ip: bytes = conn.client_ip
        #: The listener's scheme (https over TLS), for X-Forwarded-Proto.
        self.scheme: bytes = conn.scheme
        self.exchange: Any = None
        self.request_done = False
        self.reading_paused = False
        self._unacked = 0
        self._received = 0
        self._headers: list[tuple[bytes, bytes]] | None = None
        self._data = bytearray()
        self._end = False
        self._out_done = False
        self._out_paused = False
        self._reset_after = False
        self._trailers: list[tuple[bytes, bytes]] | None = None
        #: Response body bytes given to the stream (the access log's size).
        self.bytes_out = 0
        #: When the response began to wait for the client's window (0: it is not waiting).
        self.stalled_since = 0.0
        #: The exchange, once the stream carries a WebSocket (RFC 8441) as raw DATA.
        self.tunnel: Any = None

    # -- what the exchange reads -----------------------------------------------------------

    @property
    def peer(self) -> tuple[str, int] | None:
        return self.conn.peer

    @property
    def connected(self) -> bool:
        """The stream is alive (not reset) on a connection still open."""
        transport = self.conn.transport
        return (self.conn.streams.get(self.stream_id) is self and transport is not None
                and not transport.is_closing())

    # -- request body from the connection ----------------------------------------------------

    def on_data(self, data: bytes, flow_length: int) -> bool:
        """Body bytes; False when they pass the body limit (the stream was answered)."""
        self._received += len(data)
        limit = self.conn.max_body_bytes
        if limit is not None and self._received > limit:
            self._too_large()
            return False
        exchange = self.exchange
        if exchange is not None:
            exchange.request_body(data)
        if self.reading_paused:
            self._unacked += flow_length
        elif flow_length:
            self._ack(flow_length)
        return True

    def on_end(self) -> None:
        self.request_done = True
        exchange = self.exchange
        if exchange is not None:
            exchange.request_end()
        elif self._out_done:
            self.conn.forget(self)

    def on_reset(self) -> None:
        """The client cancelled the stream."""
        exchange, self.exchange = self.exchange, None
        self._data.clear()
        self._out_done = True
        if exchange is not None:
            exchange.downstream_lost()

    # -- the ServerConnection calls the exchange makes ---------------------------------------

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            unacked, self._unacked = self._unacked, 0
            if unacked:
                self._ack(unacked)
                self.conn.flush()

    def finish(self, keep_alive: bool = True) -> None:
        """The response is complete (queued); the stream closes once it is sent."""
        self.exchange = None
        if not self.request_done:
            self._reset_after = True
        if not self._out_done:  # (else it is all sent, and flushed by whoever sent it)
            self.push()
            self.conn.flush_soon()

    def abort(self) -> None:
        self.exchange = None
        self._data.clear()
        self._reset(ErrorCodes.INTERNAL_ERROR)
        self.conn.flush()

    def cancel(self) -> None:
        """Given up on our side (the client kept the window shut past http2.send_timeout,
        or a tunnel at shutdown): RST_STREAM(CANCEL), and the exchange lets its upstream
        connection go."""
        exchange, self.exchange = self.exchange, None
        self.tunnel = None
        self._data.clear()
        if exchange is not None:
            exchange.downstream_lost()
        self._reset(ErrorCodes.CANCEL)

    def refuse(self) -> None:
        """Not taken (the connection is shutting down): the client may send it again."""
        self.exchange = None
        self._reset(ErrorCodes.REFUSED_STREAM)

    def close(self) -> None:
        """Outside a tunnel: abort. A tunnel whose upstream is gone: what it sent goes out,
        then END_STREAM; a client still sending is then told to stop (RST_STREAM)."""
        if self.tunnel is None:
            self.abort()
            return
        self.tunnel = self.exchange = None
        if self._out_done:  # END_STREAM already went (the upstream's EOF)
            if self.request_done:
                self.conn.forget(self)
            else:
                self._reset(ErrorCodes.CANCEL)
                self.conn.flush()
            return
        self._end = True
        self._reset_after = not self.request_done
        self.push_soon()

    def answer(self, status: int, message: str, *, keep_alive: bool = True,
               fields: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """A short answer of veloxy's own (an error), with `fields` (name, value) besides its
        own, and the end of the exchange."""
        self.respond(status, f"{status} {message}\n".encode(), fields)
        self.finish()

    def write_eof(self) -> None:
        """A tunnel's upstream finished sending: END_STREAM after what is queued."""
        self._end = True
        self.push_soon()

    def write(self, data: bytes) -> None:
        """A tunnel's bytes from the upstream, as DATA frames (flow-controlled)."""
        self.send_body(data)
        self.push_soon()

    def start_tunnel(self, exchange: object) -> None:
        """The upstream switched to WebSocket: DATA both ways from now on (the exchange's
        request_body/request_end relay the client's side)."""
        self.tunnel = exchange

    # -- the response ------------------------------------------------------------------------

    def send_head(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._headers = headers

    def send_informational(self, headers: list[tuple[bytes, bytes]]) -> None:
        """A 1xx (100 Continue, 103 Early Hints) before the final head: a HEADERS frame of
        its own without END_STREAM (RFC 9113 §8.1), sent at the end of this iteration.
        HEADERS are not flow-controlled, so it never waits for a window."""
        if self._out_done or self._headers is not None:
            return  # reset, or the final head is already queued: too late for a 1xx
        try:
            self.conn.h2.send_headers(self.stream_id, headers)
        except (StreamClosedError, ProtocolError):
            return
        self.conn.flush_soon()

    def send_body(self, data: bytes) -> None:
        if data:
            self._data += data
            self.bytes_out += len(data)

    def send_end(self) -> None:
        self._end = True

    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Trailer fields (gRPC's status) to end the response with; then send_end()."""
        self._trailers = headers

    def push_soon(self) -> None:
        """Send what the windows allow once the current callbacks are done (one flush of
        the connection for all the streams that a read touched)."""
        self.push()
        self.conn.flush_soon()

    def push(self) -> None:
        """Send what the flow-control windows allow (the caller flushes the connection)."""
        if self._out_done:
            return
        conn = self.conn
        h2 = conn.h2
        sid = self.stream_id
        data = self._data
        trailers = self._trailers
        try:
            if self._headers is not None:
                last = self._end and not data and trailers is None
                h2.send_headers(sid, self._headers, end_stream=last)
                self._headers = None
                if last:
                    self._sent_all()
                    return
            while data:
                if conn.writing_paused:
                    break  # the socket is full: the rest waits in the queue
                piece = None
                if len(data) <= h2.max_outbound_frame_size:
                    # The rest fits one frame (most responses): sent without asking for the
                    # window first, since send_data looks it up itself and raises
                    # FlowControlError before changing anything when it is too small.
                    piece = bytes(data)
                    last = self._end and trailers is None
                    try:
                        h2.send_data(sid, piece, end_stream=last)
                    except FlowControlError:
                        piece = None
                    else:
                        data.clear()
                if piece is None:
                    window = h2.local_flow_control_window(sid)
                    if window <= 0:
                        conn.stream_stalled(self)
                        break
                    size = min(window, h2.max_outbound_frame_size)
                    if size >= len(data):
                        piece = bytes(data)
                        data.clear()
                    else:
                        piece = bytes(data[:size])
                        del data[:size]
                    last = self._end and not data and trailers is None
                    h2.send_data(sid, piece, end_stream=last)
                self.stalled_since = 0.0
                if last:
                    self._sent_all()
                    return
                conn.unflushed += len(piece)
                if conn.unflushed >= FLUSH_AT:
                    conn.flush()
            if self._end and not data and self._headers is None:
                if trailers is not None:
                    h2.send_headers(sid, trailers, end_stream=True)
                else:
                    h2.end_stream(sid)
                self._sent_all()
                return
        except (StreamClosedError, ProtocolError):
            self._data.clear()
            self._out_done = True
            self.conn.forget(self)
            return
        self._watermarks(len(data))

    # -- internals -------------------------------------------------------------------------

    def _watermarks(self, queued: int) -> None:
        exchange = self.exchange
        if queued > HIGH_WATER and not self._out_paused:
            self._out_paused = True
            if exchange is not None:
                exchange.downstream_paused()
        elif queued < LOW_WATER and self._out_paused:
            self._out_paused = False
            if exchange is not None and not self.conn.writing_paused:
                exchange.downstream_resumed()

    @property
    def out_paused(self) -> bool:
        return self._out_paused

    def _sent_all(self) -> None:
        self._out_done = True
        if self._reset_after and not self.request_done:
            self._reset(ErrorCodes.NO_ERROR)
        elif self.request_done:
            self.conn.forget(self)

    def _reset(self, code: int) -> None:
        self._out_done = True
        try:
            self.conn.h2.reset_stream(self.stream_id, code)
        except (StreamClosedError, ProtocolError):
            pass
        self.conn.forget(self)

    def _ack(self, size: int) -> None:
        try:
            self.conn.h2.acknowledge_received_data(size, self.stream_id)
        except (StreamClosedError, ProtocolError):
            pass

    def _too_large(self) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.downstream_lost()
        if exchange is not None and exchange.response_started:
            self.abort()
            return
        self._reset_after = True  # the rest of the body is refused once the answer is out
        self._headers, self._end = None, False
        self.respond(413, b"413 Content Too Large: request body too large\n")

    def respond(self, status: int, body: bytes, fields: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """A short answer of veloxy's own (an error); the stream closes once it is sent.
        `fields`: more (name, value) pairs, names lowercased here as HTTP/2 wants them."""
        self.send_head([(b":status", b"%d" % status),
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", b"%d" % len(body)),
                        *[(name.lower(), value) for name, value in fields]])
        self.send_body(body)
        self.send_end()
        self.push()
        self.conn.flush()
