"""The closed streams a connection remembers are bounded (http2/bounded.py).

h2 alone remembers 2**16 closed streams per connection, ~8.5 MiB on a long-lived one; the
bound keeps the newest CLOSED_STREAMS_KEPT. Two h2 state machines talk through bytes handed
from one to the other (no I/O involved: this is the protocol state, not the network)."""

from __future__ import annotations

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame

from veloxy.http2.bounded import CLOSED_STREAMS_KEPT, BoundedH2Connection

HEADERS = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"),
           (b":authority", b"x")]


def _pair() -> tuple[H2Connection, BoundedH2Connection]:
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    server = BoundedH2Connection(H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def _frames(data: bytes) -> list[Frame]:
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        data = data[9 + length:]
    return frames


def test_closed_streams_remembered_are_bounded_and_late_frames_still_handled() -> None:
    client, server = _pair()
    total = CLOSED_STREAMS_KEPT + 10
    for n in range(total):
        stream_id = 1 + 2 * n
        client.send_headers(stream_id, HEADERS, end_stream=True)
        server.receive_data(client.data_to_send())
        server.reset_stream(stream_id, ErrorCodes.CANCEL)  # closed by our RST_STREAM
        client.receive_data(server.data_to_send())
    server._open_streams(0)  # h2 moves closed streams to its memory when it counts
    remembered = len(server._closed_streams)
    assert remembered <= CLOSED_STREAMS_KEPT < total

    def late_trailers(stream_id: int) -> list[Frame]:
        # a HEADERS frame (END_STREAM, END_HEADERS; HPACK 0x82 = :method GET) the client sent
        # before it saw our reset, built by hand: the client's own state machine knows the
        # stream is closed. (DATA on any closed stream is a stream error in h2 either way.)
        frame = b"\x00\x00\x01\x01\x05" + stream_id.to_bytes(4, "big") + b"\x82"
        try:
            server.receive_data(frame)
        except ProtocolError:
            pass  # a connection error: h2 queued the GOAWAY
        return _frames(server.data_to_send())

    # h2 answers a frame on a stream it reset with RST_STREAM(STREAM_CLOSED), a stream error
    # that leaves the connection up, as long as it remembers the stream
    recent = 1 + 2 * (total - 1)
    assert [(type(f), f.stream_id, getattr(f, "error_code", None))
            for f in late_trailers(recent)] == [(RstStreamFrame, recent, ErrorCodes.STREAM_CLOSED)]
    # a stream reset more than CLOSED_STREAMS_KEPT streams ago is known to be closed (its id
    # is below the highest), no longer how: a frame on it is a connection error (RFC 9113
    # §5.1 lets an endpoint limit how long it treats such frames as stream errors)
    assert [type(f) for f in late_trailers(1)] == [GoAwayFrame]


def test_h2_alone_would_remember_every_closed_stream() -> None:
    """The reason for the bound: without it the memory grows with every stream."""
    assert H2Connection.MAX_CLOSED_STREAMS == 2**16 > CLOSED_STREAMS_KEPT
    assert BoundedH2Connection.MAX_CLOSED_STREAMS == CLOSED_STREAMS_KEPT
