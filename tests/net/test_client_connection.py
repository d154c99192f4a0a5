"""net.ClientConnection against real loopback servers, on both loops."""

from __future__ import annotations

import asyncio
import socket

from veloxy.errors import UpstreamError, UpstreamResetError
from veloxy.h1.head import ResponseHead
from veloxy.net.client import ClientConnection
from veloxy.net.timers import sweeper_for


class Timeouts:
    connect = 1.0
    response_header = 1.0
    read = 1.0


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []
        self.done = asyncio.Event()

    def on_informational(self, head: ResponseHead) -> None:
        self.events.append(("1xx", head.status))

    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(("head", head.status))

    def on_response_body(self, chunk: bytes) -> None:
        self.events.append(("body", chunk))

    def on_response_end(self) -> None:
        self.events.append("end")
        self.done.set()

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        # The C fast lane's whole-response event: recorded as the three it stands for.
        self.on_response_head(head)
        if body:
            self.on_response_body(body)
        self.on_response_end()

    def on_read_done(self) -> None:
        pass

    def on_upstream_error(self, exc: UpstreamError, received: bool) -> None:
        self.events.append(("error", type(exc), received))
        self.done.set()

    def upstream_paused(self) -> None:
        pass

    def upstream_resumed(self) -> None:
        pass

    def on_tunnel_data(self, data: bytes) -> None:
        pass

    def on_tunnel_closed(self) -> None:
        pass


def test_send_on_a_connection_the_server_closed_reports_a_reset(run) -> None:
    async def scenario() -> list[object]:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        loop = asyncio.get_running_loop()
        conn_task = asyncio.ensure_future(
            ClientConnection.open("127.0.0.1", port, sweeper_for(loop), Timeouts()))
        accepted, _ = await loop.run_in_executor(None, listener.accept)
        conn = await conn_task
        accepted.close()  # the server closes the idle connection
        listener.close()
        await asyncio.sleep(0.1)
        assert not conn.usable
        sink = Sink()
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", sink)
        await asyncio.wait_for(sink.done.wait(), 3)
        return sink.events

    events = run(scenario())
    assert events == [("error", UpstreamResetError, False)]


def test_response_delimited_by_close_completes(run) -> None:
    async def scenario() -> list[object]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil-close")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await ClientConnection.open("127.0.0.1", port,
                                           sweeper_for(asyncio.get_running_loop()), Timeouts())
        sink = Sink()
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", sink)
        await asyncio.wait_for(sink.done.wait(), 3)
        server.close()
        return sink.events

    events = run(scenario())
    assert events[0] == ("head", 200)
    assert b"".join(e[1] for e in events if isinstance(e, tuple) and e[0] == "body") \
        == b"until-close"
    assert events[-1] == "end"
