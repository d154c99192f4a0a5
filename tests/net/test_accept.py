"""net/accept.py's Acceptor, on real sockets: batches, TLS, the connection cap.

A burst of new connections against a busy uvloop server is accepted within a tick or two:
libuv accepts one connection per loop iteration (net/accept.py says why this matters). Here
each iteration is made to take 30 ms, as a thousand busy keep-alive connections make it take,
and 150 connections arrive at once: with the Acceptor every one is answered within a second;
libuv's server alone gets through a few dozen in that time.

The cap (limits.max_connections): at it the Acceptor stops accepting, the next connection
waits in the kernel's queue, and is taken when one closes. Descriptor exhaustion (EMFILE) is
tested on a veloxy process under a lowered RLIMIT_NOFILE: tests/proxy/test_overload.py.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import pytest

uvloop = pytest.importorskip("uvloop")

from veloxy.net.accept import Acceptor, default_max_connections  # noqa: E402
from veloxy.net.server_connection import ConnectionRegistry  # noqa: E402

BURST = 150
ITERATION = 0.03  # seconds of work per loop iteration
WINDOW = 1.0  # seconds the burst gets to be answered
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Answer(asyncio.Protocol):
    """Answers every request; in `registry` while open, as ServerConnection is."""

    registry: ConnectionRegistry | None = None
    bytes_in = bytes_out = 0  # what ConnectionRegistry.discard reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        registry = self.registry
        if registry is not None:  # as ServerConnection.connection_made
            registry.connections.add(self)  # type: ignore[arg-type]  # a stand-in
            if len(registry.connections) >= registry.busy_at:
                registry.on_busy()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.registry is not None:
            self.registry.discard(self)  # type: ignore[arg-type]  # a stand-in

    def data_received(self, data: bytes) -> None:
        if data.endswith(b"\r\n\r\n"):
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def _burst(port: int, answered: list[float], start: threading.Event) -> None:
    """Open BURST connections at once, send a request on each, time each answer."""
    start.wait()
    t0 = time.perf_counter()
    socks: list[socket.socket] = []
    for _ in range(BURST):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(REQUEST)  # lands in the queued connection's receive buffer
        socks.append(s)
    deadline = t0 + WINDOW
    for s in socks:
        s.settimeout(max(0.001, deadline - time.perf_counter()))
        try:
            if s.recv(100).startswith(b"HTTP/1.1 200"):
                answered.append(time.perf_counter() - t0)
        except OSError:
            pass  # not answered within the window
    for s in socks:
        s.close()


def _run(with_acceptor: bool) -> list[float]:
    loop = uvloop.new_event_loop()
    answered: list[float] = []
    try:
        async def main() -> None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(4096)
            listener.setblocking(False)
            registry = ConnectionRegistry()
            acceptor = None
            if with_acceptor:
                acceptor = Acceptor(loop, registry, max_connections=10_000)
                acceptor.watch(listener, Answer)
                await acceptor.start()
            else:
                server = await loop.create_server(Answer, sock=listener, backlog=4096)
            start = threading.Event()
            client = threading.Thread(
                target=_burst, args=(listener.getsockname()[1], answered, start))
            client.start()
            await asyncio.sleep(0.05)  # an idle loop accepts fast: make it busy first

            busy_until = time.perf_counter() + WINDOW + 1.0

            def busy() -> None:  # one slow iteration after another
                time.sleep(ITERATION)
                if time.perf_counter() < busy_until:
                    loop.call_soon(busy)

            loop.call_soon(busy)
            await asyncio.sleep(0)
            start.set()
            while client.is_alive():
                await asyncio.sleep(0.01)
            if acceptor is not None:
                acceptor.stop()
            else:
                server.close()

        loop.run_until_complete(main())
    finally:
        loop.close()
    return answered


def test_burst_on_busy_loop_is_answered_within_a_second() -> None:
    answered = _run(with_acceptor=True)
    assert len(answered) == BURST, f"{len(answered)} of {BURST} answered within {WINDOW}s"


def test_connections_it_accepts_on_a_tls_listener_get_the_listener_context() -> None:
    """Each connection the Acceptor takes on a TLS listener is wrapped with the listener's
    context, handshakes and is answered."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    loop = uvloop.new_event_loop()
    replies: list[bytes] = []

    def clients(port: int) -> None:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    client_tls.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(REQUEST)
                replies.append(s.recv(100))

    try:
        async def main() -> None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            listener.setblocking(False)
            registry = ConnectionRegistry()
            acceptor = Acceptor(loop, registry, max_connections=100)
            acceptor.watch(listener, Answer, ssl=server_tls, ssl_handshake_timeout=5.0)
            await acceptor.start()
            client = threading.Thread(target=clients, args=(listener.getsockname()[1],))
            client.start()
            while client.is_alive():
                await asyncio.sleep(0.01)
            acceptor.stop()

        loop.run_until_complete(main())
    finally:
        loop.close()
    assert replies == [RESPONSE] * 5


def test_libuv_alone_accepts_one_connection_per_iteration() -> None:
    """One reason the Acceptor exists. If a uvloop release accepts in batches again, this
    fails and net/accept.py's docstring should say so."""
    answered = _run(with_acceptor=False)
    assert len(answered) < BURST // 2, f"{len(answered)} answered: libuv accepted in batches"


def _cap_scenario(loop: asyncio.AbstractEventLoop) -> None:
    """max_connections=3: three clients are served, a fourth waits in the kernel's queue
    (its connect succeeds, its request is not answered), and is served once one closes."""
    registry = ConnectionRegistry()
    most = [0]

    class Watched(Answer):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            most[0] = max(most[0], len(registry.connections))

    Watched.registry = registry

    async def ask(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        return reader, writer

    async def main() -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        acceptor = Acceptor(loop, registry, max_connections=3)
        acceptor.watch(listener, Watched)
        await acceptor.start()
        first = [await ask(port) for _ in range(3)]
        for reader, _writer in first:
            assert await asyncio.wait_for(reader.readexactly(len(RESPONSE)), 2) == RESPONSE
        waiting_reader, waiting_writer = await ask(port)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(waiting_reader.readexactly(len(RESPONSE)), 0.3)
        assert not acceptor.accepting
        assert registry.limit_pauses == 1
        first[0][1].close()
        assert await asyncio.wait_for(
            waiting_reader.readexactly(len(RESPONSE)), 1.0) == RESPONSE
        assert registry.limit_pauses == 2  # the fourth took the freed place: at the cap again
        for _reader, writer in first[1:]:
            writer.close()
        waiting_writer.close()
        await asyncio.sleep(0.05)
        assert acceptor.accepting  # below the cap again
        # uvloop: back to the loop's own server once well below the cap (FAST_SHARE)
        assert acceptor.fast == (type(loop).__module__ == "uvloop")
        acceptor.stop()
        assert most[0] == 3

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_at_max_connections_new_connections_wait_in_the_queue_uvloop() -> None:
    _cap_scenario(uvloop.new_event_loop())


def test_at_max_connections_new_connections_wait_in_the_queue_stdlib() -> None:
    _cap_scenario(asyncio.new_event_loop())


def test_default_cap_leaves_a_descriptor_per_client_for_its_upstream() -> None:
    assert default_max_connections(1024) == 480
    assert default_max_connections(1_048_576) == (1_048_576 - 64) // 2
    assert default_max_connections(50) == 16  # never nothing


class NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch a socket for readiness, as Windows' Proactor loop."""

    def add_reader(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError


def test_a_loop_without_add_reader_gets_its_own_server_accepting() -> None:
    """Windows: no cap, no back-off, but connections are served and stop() stops them."""
    loop = NoReaderLoop()
    registry = ConnectionRegistry()

    async def main() -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        acceptor = Acceptor(loop, registry, max_connections=1)
        acceptor.watch(listener, Answer)
        await acceptor.start()
        await asyncio.sleep(0.05)
        port = listener.getsockname()[1]
        for _ in range(2):  # beyond the cap: it does not apply here
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            assert await asyncio.wait_for(reader.readexactly(len(RESPONSE)), 2) == RESPONSE
        acceptor.stop()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
