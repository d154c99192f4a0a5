"""A burst of new connections against a busy uvloop server is accepted within a tick or two.

libuv accepts one connection per loop iteration (net/accept.py says why this matters). Here
each iteration is made to take 30 ms, as a thousand busy keep-alive connections make it take,
and 150 connections arrive at once: with AcceptCatchUp every one is answered within a second;
without it libuv alone gets through a few dozen in that time.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import pytest

uvloop = pytest.importorskip("uvloop")

from veloxy.net.accept import (  # noqa: E402
    AcceptCatchUp,
    accept_queue_length,
    needs_accept_catch_up,
)

BURST = 150
ITERATION = 0.03  # seconds of work per loop iteration
WINDOW = 1.0  # seconds the burst gets to be answered
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

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


def _run(with_catch_up: bool) -> list[float]:
    loop = uvloop.new_event_loop()
    answered: list[float] = []
    try:
        async def main() -> None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(4096)
            listener.setblocking(False)
            server = await loop.create_server(Answer, sock=listener, backlog=4096)
            catch_up = AcceptCatchUp(loop) if with_catch_up else None
            if catch_up is not None:
                catch_up.watch(listener, Answer)
                catch_up.start()
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
            if catch_up is not None:
                catch_up.stop()
                assert catch_up.accepted > 0  # it, not libuv, took most of the burst
            server.close()

        loop.run_until_complete(main())
    finally:
        loop.close()
    return answered


def test_uvloop_is_recognised() -> None:
    loop = uvloop.new_event_loop()
    try:
        assert needs_accept_catch_up(loop)
    finally:
        loop.close()
    stdlib = asyncio.new_event_loop()
    try:
        assert not needs_accept_catch_up(stdlib)
    finally:
        stdlib.close()


def test_burst_on_busy_loop_is_answered_within_a_second() -> None:
    answered = _run(with_catch_up=True)
    assert len(answered) == BURST, f"{len(answered)} of {BURST} answered within {WINDOW}s"


def test_connections_it_accepts_on_a_tls_listener_get_the_listener_context() -> None:
    """The catch-up alone on a TLS listener (no server accepting beside it): each connection
    it takes is wrapped with the listener's context, handshakes and is answered."""
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
            catch_up = AcceptCatchUp(loop, interval=0.01)
            catch_up.watch(listener, Answer, ssl=server_tls, ssl_handshake_timeout=5.0)
            catch_up.start()
            client = threading.Thread(target=clients, args=(listener.getsockname()[1],))
            client.start()
            while client.is_alive():
                await asyncio.sleep(0.01)
            catch_up.stop()
            listener.close()
            assert catch_up.accepted == 5

        loop.run_until_complete(main())
    finally:
        loop.close()
    assert replies == [RESPONSE] * 5


def test_libuv_alone_accepts_one_connection_per_iteration() -> None:
    """The behaviour the catch-up exists for. If a uvloop release accepts in batches again,
    this fails and net/accept.py can go."""
    answered = _run(with_catch_up=False)
    assert len(answered) < BURST // 2, f"{len(answered)} answered: libuv accepted in batches"


def test_it_takes_only_connections_that_waited_a_whole_visit() -> None:
    """A connection libuv would accept an iteration later stays with libuv (its path costs
    far less; docs/BENCHMARKS.md, "nginx-class in the hard cases"): a visit takes only what
    was already queued at the previous one. No server here accepts beside the catch-up, so
    each visit is seen."""
    if accept_queue_length(socket.socket()) is None:
        pytest.skip("the OS does not report a listening socket's accept queue")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        catch_up = AcceptCatchUp(loop, interval=3600)  # visits made by hand below
        catch_up.watch(listener, Answer)
        clients = [socket.create_connection(listener.getsockname(), timeout=5)
                   for _ in range(3)]
        try:
            assert accept_queue_length(listener) == 3
            catch_up._tick()  # they have just arrived: left for libuv
            assert catch_up.accepted == 0 and accept_queue_length(listener) == 3
            clients.append(socket.create_connection(listener.getsockname(), timeout=5))
            catch_up._tick()  # the three waited a whole visit; the fourth has not
            assert catch_up.accepted == 3 and accept_queue_length(listener) == 1
            catch_up._tick()
            assert catch_up.accepted == 4 and accept_queue_length(listener) == 0
            for client in clients:  # each was wrapped and is answered
                client.sendall(REQUEST)
            for client in clients:
                assert await loop.run_in_executor(None, client.recv, 100) == RESPONSE
        finally:
            catch_up.stop()
            for client in clients:
                client.close()
            listener.close()

    asyncio.run(main())
