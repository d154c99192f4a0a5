"""Helpers of the upstream suite: backends that tests slow down, break, kill and revive
while traffic flows, the proxy served on the test's own loop, and a small keep-alive client.

Why in-process: a policy's defining property shows only when a backend changes under load
(slower, failing, gone), and driving that from the outside through processes spends most of
a test's time starting them. Here the backends, the proxy (ProxyApp on net.server, exactly
what `veloxy serve` runs) and the clients share one loop, so a test flips `backend.delay`
and the next request sees it. test_failover.py also kills a real `veloxy origin` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.client import build_request
from tests.support.wire import parse_head
from veloxy.config import parse_config
from veloxy.net.server_connection import ConnectionRegistry, ServerConnection
from veloxy.net.timers import sweeper_for
from veloxy.proxy.app import ProxyApp

# -- backends --------------------------------------------------------------------------------


class _BackendConnection(asyncio.Protocol):
    """One connection to a Backend: parses requests (Content-Length bodies) and answers."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False
        self.served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.connections.add(self)
        self.backend.accepted += 1
        self.backend.peak_connections = max(self.backend.peak_connections,
                                            len(self.backend.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length:]
        method, target, _ = head[0].split(" ", 2)
        self.busy = True
        self.backend.on_request(self, method, target, headers)

    def respond(self, status: int, body: bytes, close: bool = False) -> None:
        self.busy = False
        self.served += 1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nX-Backend: %s\r\n%s\r\n"
                        % (status, len(body), self.backend.name.encode(),
                           b"Connection: close\r\n" if close else b"") + body)
        if close:
            transport.close()
        else:
            self._next()


class Backend:
    """An HTTP/1.1 server on 127.0.0.1 whose behaviour a test changes while it runs.

    `delay` (seconds before each answer), `status` (of normal answers), `health_status`
    (of GET /healthz, which is answered at once and not counted), `reset` (close each
    request's connection without answering). `kill()` stops listening and closes every
    connection, as a crashed process's kernel would; `revive()` listens again on the same
    port. The body of an answer is the backend's name.
    """

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.delay = 0.0
        self.status = 200
        self.health_status = 200
        self.reset = False
        #: Close a connection, unanswered, when a second request arrives on it: the
        #: keep-alive race, as a server whose idle timeout fires just then shows it.
        self.drop_reused = False
        #: Answer every Nth request with 500 (0: never).
        self.fail_every = 0
        self.hits = 0
        self.resets = 0
        self.health_probes = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.accepted = 0
        self.peak_connections = 0
        self.targets: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.connections: set[_BackendConnection] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, port: int | None = None) -> Backend:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _BackendConnection(self), self.host, self.port if port is None else port,
            reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def on_request(self, conn: _BackendConnection, method: str, target: str,
                   headers: dict[str, str]) -> None:
        if target == "/healthz":
            self.health_probes += 1
            conn.respond(self.health_status, b"health", close=True)
            return
        if self.reset or (self.drop_reused and conn.served):
            self.resets += 1
            self.targets.append(target)
            assert conn.transport is not None
            conn.transport.close()
            return
        self.hits += 1
        self.targets.append(target)
        self.headers.append(headers)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        status = self.status
        if self.fail_every and self.hits % self.fail_every == 0:
            status = 500

        def answer() -> None:
            self.in_flight -= 1
            conn.respond(status, self.name.encode())

        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, answer)
        else:
            answer()

    async def kill(self) -> None:
        """Stop listening and close every connection (FIN, as the kernel does for a dead
        process): requests in flight get no answer."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        self.in_flight = 0
        await asyncio.sleep(0.01)

    async def revive(self) -> None:
        await self.start(self.port)


@contextlib.asynccontextmanager
async def backends(*names: str, host: str = "127.0.0.1") -> AsyncIterator[list[Backend]]:
    started = [await Backend(name, host).start() for name in names]
    try:
        yield started
    finally:
        for backend in started:
            await backend.kill()


# -- the proxy -------------------------------------------------------------------------------


@dataclass
class Proxy:
    app: ProxyApp
    port: int

    def group(self, name: str = "app") -> Any:
        return self.app.groups[name]


def group_config(servers: list[Any], **settings: Any) -> dict[str, Any]:
    """An upstream group's config with short timeouts; `servers` are Backends or URLs."""
    urls = [s if isinstance(s, str | dict) else s.url for s in servers]
    return {"servers": urls,
            "timeouts": {"connect": "1s", "response_header": "5s", "read": "5s"},
            **settings}


@contextlib.asynccontextmanager
async def proxy(servers: list[Any] | None = None, *, config: dict[str, Any] | None = None,
                **settings: Any) -> AsyncIterator[Proxy]:
    """ProxyApp served on the running loop: one group "app" of `servers` with `settings`
    (balance=..., retries=...), or a whole `config`."""
    if config is None:
        config = {"routes": [{"upstream": "app"}],
                  "upstreams": {"app": group_config(servers or [], **settings)}}
    config.setdefault("listen", ["127.0.0.1:0"])
    config.setdefault("limits", {"shutdown_timeout": "1s"})
    parsed = parse_config(config)
    loop = asyncio.get_running_loop()
    sweeper = sweeper_for(loop)
    app = ProxyApp(parsed, sweeper)
    registry = ConnectionRegistry()
    server = await loop.create_server(
        lambda: ServerConnection(app, parsed.limits, sweeper, registry), "127.0.0.1", 0)
    try:
        yield Proxy(app, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for conn in list(registry.connections):
            conn.abort()
        app.close()
        await asyncio.sleep(0.01)
        sweeper.close()


# -- clients ---------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def backend(self) -> str:
        return self.headers.get("x-backend", "")


class Client:
    """A keep-alive HTTP/1.1 client, one request at a time; reconnects when closed."""

    def __init__(self, port: int, local_host: str | None = None) -> None:
        self.port = port
        self.local_host = local_host
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, path: str = "/", headers: dict[str, str] | None = None,
                      method: str = "GET", body: bytes = b"") -> Response:
        if self._writer is None or self._writer.is_closing():
            local = (self.local_host, 0) if self.local_host else None
            self._reader, self._writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=local)
        self._writer.write(build_request(
            method, path, "test.local", list((headers or {}).items()),
            body if body or method in ("POST", "PUT") else None))
        assert self._reader is not None
        try:
            head = parse_head(await self._reader.readuntil(b"\r\n\r\n"))
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        fields = {name.decode("latin-1").lower(): value.decode("latin-1")
                  for name, value in head.headers}
        length = int(fields.get("content-length", "0"))
        data = await self._reader.readexactly(length) if length else b""
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return Response(int(head.start_line.split(b" ")[1]), fields, data)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
            self._writer = None


async def get(port: int, path: str = "/", **kw: Any) -> Response:
    client = Client(port, kw.pop("local_host", None))
    try:
        return await client.request(path, **kw)
    finally:
        await client.close()


async def drive(port: int, requests: int, concurrency: int = 4, path: str = "/",
                pace: float = 0.0,
                headers: Callable[[int], dict[str, str]] | None = None) -> list[Response]:
    """`requests` GETs over `concurrency` keep-alive clients; a failed one is status 0.
    `pace`: pause between a client's requests."""
    results: list[Response | None] = [None] * requests
    counter = iter(range(requests))

    async def worker() -> None:
        client = Client(port)
        try:
            for i in counter:
                try:
                    results[i] = await client.request(
                        path, headers=headers(i) if headers else None)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    results[i] = Response(0, {}, repr(exc).encode())
                if pace:
                    await asyncio.sleep(pace)
        finally:
            await client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r if r is not None else Response(0) for r in results]


async def drive_for(port: int, seconds: float, concurrency: int = 4, path: str = "/"
                    ) -> list[tuple[float, Response]]:
    """GETs over `concurrency` keep-alive clients for `seconds`: (time since start, answer)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    results: list[tuple[float, Response]] = []

    async def worker() -> None:
        client = Client(port)
        try:
            while loop.time() - start < seconds:
                response = await client.request(path)
                results.append((loop.time() - start, response))
        finally:
            await client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def share(responses: list[Response], name: str) -> float:
    return sum(r.backend == name for r in responses) / max(1, len(responses))


async def eventually(condition: Callable[[], bool], timeout: float = 5.0,
                     step: float = 0.02) -> None:
    """Wait until `condition()` holds, or fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


def free_port_on(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (for servers that share a port across addresses,
    as DNS-discovered ones do)."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind((hosts[0], 0))
        port = probe.getsockname()[1]
        others = []
        try:
            for host in hosts[1:]:
                s = socket.socket()
                s.bind((host, port))
                others.append(s)
        except OSError:
            continue
        finally:
            probe.close()
            for s in others:
                s.close()
        return port
    raise RuntimeError("no port free on all of " + ", ".join(hosts))
