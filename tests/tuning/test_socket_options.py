"""`tuning:` socket options and backlog, read back from real sockets on 127.0.0.1.

One request goes client -> veloxy (`server.serve` with the real ProxyApp) -> a scripted
upstream, on both loops. The downstream socket is read in the app's start_exchange (the
connection veloxy accepted), the upstream one from the pool's idle connection (the socket
veloxy connected); getsockopt says what the kernel really has. The backlog is what `ss`
reports for the listener (Send-Q of a listening socket is its backlog).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys

import pytest

from tests.upstream.harness import Client
from veloxy.config import parse_config
from veloxy.config.model import SocketOptions
from veloxy.net.listen import listen_socket
from veloxy.net.server_connection import ServerConnection
from veloxy.net.sockopt import (
    NagleServerConnection,
    effective_buffers,
    nodelay,
    server_connection_class,
)
from veloxy.proxy.app import ProxyApp
from veloxy.serving import serve

LINUX = sys.platform.startswith("linux")
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def kernel_size(value: int) -> int:
    """What getsockopt reports for a buffer set to `value` (Linux doubles it)."""
    return 2 * value if LINUX else value


def listen_queues(port: int) -> list[int]:
    """Send-Q (= the backlog) of each listening TCP socket on `port`, from ss."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]


needs_ss = pytest.mark.skipif(shutil.which("ss") is None or not LINUX, reason="needs Linux ss")


class _Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def _sock_readings(sock: socket.socket) -> dict[str, object]:
    rcv, snd = effective_buffers(sock)
    return {"nodelay": nodelay(sock), "rcvbuf": rcv, "sndbuf": snd}


async def _one_request(tuning: dict | None) -> dict[str, object]:
    """Serve one proxied request with `tuning`; what each socket and the listener said."""
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(_Upstream, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    data: dict[str, object] = {
        "routes": [{"upstream": "a"}],
        "upstreams": {"a": {"servers": [f"http://127.0.0.1:{up_port}"]}},
    }
    if tuning is not None:
        data["tuning"] = tuning
    config = parse_config(data)
    seen: dict[str, object] = {}
    apps: list[ProxyApp] = []

    class RecordingApp(ProxyApp):
        def start_exchange(self, conn, head):  # type: ignore[no-untyped-def]
            seen["downstream"] = _sock_readings(conn.transport.get_extra_info("socket"))
            seen["conn_class"] = type(conn)
            return super().start_exchange(conn, head)

    def make_app(sweeper):  # type: ignore[no-untyped-def]
        apps.append(RecordingApp(config, sweeper))
        return apps[0]

    listener = listen_socket("127.0.0.1", 0, backlog=config.tuning.backlog,
                             recv_buffer=config.tuning.downstream.recv_buffer,
                             send_buffer=config.tuning.downstream.send_buffer)
    port = listener.getsockname()[1]
    ready = asyncio.Event()
    task = asyncio.ensure_future(serve([listener], make_app, config.limits, ready=ready.set,
                                       tuning=config.tuning))
    try:
        await ready.wait()
        if shutil.which("ss") and LINUX:
            seen["backlog"] = listen_queues(port)
        client = Client(port)
        seen["response"] = await client.request()
        pool = apps[0].groups["a"].servers[0].pool
        seen["pool_options"] = pool.socket_options
        conn = pool.acquire_idle()
        assert conn is not None and conn.transport is not None
        seen["upstream"] = _sock_readings(conn.transport.get_extra_info("socket"))
        pool.release(conn)
        await client.close()
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        upstream.close()
    return seen


@pytest.mark.process
def test_defaults_keep_nodelay_on_both_sides_and_set_nothing(run) -> None:
    seen = run(_one_request(None))
    assert (seen["response"].status, seen["response"].body) == (200, b"ok")
    # TCP_NODELAY is on by default on both loops (the stdlib loop sets it only when the
    # listener's proto is IPPROTO_TCP: net/listen.py makes it so).
    assert seen["downstream"]["nodelay"] is True
    assert seen["upstream"]["nodelay"] is True
    # The zero-cost path: the plain protocol class, no options on the pool.
    assert seen["conn_class"] is ServerConnection
    assert seen["pool_options"] is None
    if "backlog" in seen:
        assert seen["backlog"] == [4096]


@pytest.mark.process
def test_configured_options_reach_the_kernel(run) -> None:
    tuning = {"backlog": 77,
              "downstream": {"tcp_nodelay": False, "recv_buffer": "48k", "send_buffer": "40k"},
              "upstream": {"tcp_nodelay": False, "recv_buffer": "56k", "send_buffer": "24k"}}
    seen = run(_one_request(tuning))
    assert (seen["response"].status, seen["response"].body) == (200, b"ok")
    assert seen["conn_class"] is NagleServerConnection
    assert seen["downstream"] == {"nodelay": False, "rcvbuf": kernel_size(48 * 1024),
                                  "sndbuf": kernel_size(40 * 1024)}
    assert seen["upstream"] == {"nodelay": False, "rcvbuf": kernel_size(56 * 1024),
                                "sndbuf": kernel_size(24 * 1024)}
    if "backlog" in seen:
        assert seen["backlog"] == [77]


@pytest.mark.process
def test_nodelay_alone_leaves_buffers_to_the_kernel(run) -> None:
    """Only what is configured is set: buffers stay autotuned (not the values above)."""
    seen = run(_one_request({"upstream": {"tcp_nodelay": False}}))
    assert seen["upstream"]["nodelay"] is False
    assert seen["downstream"]["nodelay"] is True
    assert seen["upstream"]["rcvbuf"] != kernel_size(56 * 1024)
    assert seen["conn_class"] is ServerConnection


def test_protocol_class_follows_downstream_nodelay() -> None:
    assert server_connection_class(None) is ServerConnection
    assert server_connection_class(SocketOptions()) is ServerConnection
    assert server_connection_class(SocketOptions(recv_buffer=65536)) is ServerConnection
    assert server_connection_class(SocketOptions(tcp_nodelay=False)) is NagleServerConnection


@pytest.mark.process
@needs_ss
def test_listen_socket_sets_backlog_and_buffers_before_listen() -> None:
    sock = listen_socket("127.0.0.1", 0, backlog=33, recv_buffer=40960, send_buffer=36864)
    try:
        assert listen_queues(sock.getsockname()[1]) == [33]
        assert effective_buffers(sock) == (kernel_size(40960), kernel_size(36864))
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
