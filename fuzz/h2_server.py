"""Coverage-guided fuzzing of the HTTP/2 server side: client frames into H2ServerConnection.

Each input is a client connection's bytes after the preface: the harness feeds the preface
and those bytes (in up to three reads) to an H2ServerConnection (http2/connection.py) on
an in-memory transport, with an application that answers each request in one of several
ways, lets the loop run the callbacks the connection scheduled, then loses the connection.
Instrumented: veloxy.http2 and the h2, hpack and hyperframe packages underneath.

What must hold, whatever the bytes:
* no exception escapes the connection (h2's ProtocolError is the connection's to turn into
  GOAWAY; anything else is a bug), and the loop's exception handler is never called;
* what veloxy writes back is a sequence of well-formed HTTP/2 frames (hyperframe parses
  every one, none is cut);
* after connection_lost no stream and no registry entry is left behind.

Input layout (fuzz/corpus/h2, written by fuzz/make_corpus.py):
    byte 0   bits 0-1 how the application answers (APP_MODES), bit 2 small limits
             (max_concurrent_streams 2, windows of 1 KiB, max_header_bytes 512)
    rest     client frames (after the preface, which the harness sends)

Run (docs/fuzzing.md): python fuzz/h2_server.py WORKDIR fuzz/corpus/h2 -max_total_time=60
"""

from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace
from typing import Any

import atheris

with atheris.instrument_imports(include=["veloxy", "h2", "hpack", "hyperframe"]):
    from hyperframe.exceptions import HyperframeError
    from hyperframe.frame import Frame

    from veloxy.config.model import Http2Settings
    from veloxy.http2.connection import H2ServerConnection
    from veloxy.net.server_connection import ConnectionRegistry
    from veloxy.net.timers import sweeper_for

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: How the application answers: at the end of the request, at once (before any body),
#: never (the stream is held until the connection goes), or by aborting.
APP_MODES = ("at_end", "at_start", "never", "abort")

DEFAULT_LIMITS = SimpleNamespace(header_timeout=10.0, idle_timeout=60.0,
                                 max_body_bytes=None, max_header_bytes=65536)
SMALL_LIMITS = SimpleNamespace(header_timeout=10.0, idle_timeout=60.0,
                               max_body_bytes=100, max_header_bytes=512)
# The config model itself, so that a setting added to the server connection is here too
# (a hand-made namespace once lacked http2.send_timeout and every input "crashed").
# model_construct: the small windows are below what a config may set, on purpose.
DEFAULT_HTTP2 = Http2Settings.model_construct(connection_window=1 << 20)
SMALL_HTTP2 = Http2Settings.model_construct(max_concurrent_streams=2, stream_window=1024,
                                            connection_window=1024)


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class Exchange:
    response_started = False

    def __init__(self, conn: Any, mode: str) -> None:
        self.conn = conn
        self.mode = mode

    def start(self) -> None:
        if self.mode == "at_start":
            self._answer()
        elif self.mode == "abort":
            self.response_started = True
            self.conn.abort()

    def _answer(self) -> None:
        if not self.response_started and self.conn.connected:
            self.response_started = True
            self.conn.answer(200, "ok")

    def request_body(self, chunk: bytes) -> None:
        pass

    def request_end(self) -> None:
        if self.mode == "at_end":
            self._answer()

    def flush(self) -> None:
        pass

    def downstream_paused(self) -> None:
        pass

    def downstream_resumed(self) -> None:
        pass

    def downstream_lost(self) -> None:
        pass

    def tunnel_data(self, data: bytes) -> None:
        pass


class App:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def start_stream_exchange(self, conn: Any, head: Any) -> Exchange:
        return Exchange(conn, self.mode)


def check_frames(data: bytes) -> None:
    """Every frame veloxy wrote parses, and none is cut short."""
    view = memoryview(data)
    while view:
        assert len(view) >= 9, ("a frame header cut short", bytes(view))
        frame, length = Frame.parse_frame_header(view[:9])
        assert len(view) >= 9 + length, ("a frame body cut short", frame)
        frame.parse_body(view[9:9 + length])
        view = view[9 + length:]


LOOP = asyncio.new_event_loop()
SWEEPER = sweeper_for(LOOP)
STRAY: list[dict[str, Any]] = []
LOOP.set_exception_handler(lambda _loop, context: STRAY.append(context))


def test_one_input(data: bytes) -> None:
    if data:
        LOOP.run_until_complete(one_connection(data[0], data[1:]))


async def one_connection(flags: int, frames: bytes) -> None:
    small = bool(flags & 4)
    registry = ConnectionRegistry()
    conn = H2ServerConnection(App(APP_MODES[flags & 3]), SMALL_LIMITS if small else DEFAULT_LIMITS,
                              SMALL_HTTP2 if small else DEFAULT_HTTP2, SWEEPER, registry)
    transport = MemoryTransport()
    conn.connection_made(transport)
    wire = PREFACE + frames
    third = max(1, len(wire) // 3)
    for piece in (wire[:third], wire[third:2 * third], wire[2 * third:]):
        if piece and not transport.closed:
            conn.data_received(piece)
            await asyncio.sleep(0)  # what the connection scheduled (flush_soon)
    conn.connection_lost(None)
    await asyncio.sleep(0)
    assert not STRAY, STRAY
    assert not registry.connections, "the connection is still registered"
    try:
        check_frames(bytes(transport.written))
    except HyperframeError as exc:
        raise AssertionError(f"veloxy wrote a malformed frame: {exc}") from exc


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
