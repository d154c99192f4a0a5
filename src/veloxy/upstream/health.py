"""Active health checks: one task per server, probing `GET path` every `interval` (over
HTTP/2 for the servers of an h2c group, `probe_h2c`).

Why a task per server and not a per-request concern: a probe is a request of its own, on
its own schedule, so the request path pays nothing for it. The probe speaks through the
same `ClientConnection` as the proxy (net/client.py), so what the check sees is what a
request would see; it opens a fresh connection each time (`Connection: close`), which also
tests that the server still accepts connections, something a pooled connection cannot
show.

A server starts healthy (a proxy that starts before its upstreams answers 503 only once
the checks have seen them fail), goes down after `unhealthy_threshold` failed probes in a
row and comes back after `healthy_threshold` good ones. A probe succeeds on a 2xx or 3xx
within `timeout`. Each worker probes on its own: servers see workers / interval probes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from veloxy.config import HealthCheck
from veloxy.errors import UpstreamError
from veloxy.h1.head import ResponseHead
from veloxy.http2.client import H2ClientConnection
from veloxy.net.client import ClientConnection
from veloxy.net.timers import DeadlineSweeper
from veloxy.upstream.endpoint import Endpoint
from veloxy.upstream.h2c_pool import H2cPool

log = logging.getLogger("veloxy.upstream")


class _ProbeTimeouts:
    """net.client.Timeouts with every step bounded by the check's timeout."""

    def __init__(self, timeout: float) -> None:
        self.connect = self.response_header = self.read = timeout


class _ProbeSink:
    """A ResponseSink that only wants the status and the end of the response."""

    def __init__(self, done: asyncio.Future[int]) -> None:
        self._done = done
        self.status = 0

    def on_informational(self, head: ResponseHead) -> None:
        pass

    def on_response_head(self, head: ResponseHead) -> None:
        self.status = head.status

    def on_response_body(self, chunk: bytes) -> None:
        pass

    def on_response_end(self) -> None:
        if not self._done.done():
            self._done.set_result(self.status)

    def on_read_done(self) -> None:
        pass

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        self.on_response_head(head)
        self.on_response_end()

    def on_upstream_error(self, exc: UpstreamError, received: bool) -> None:
        if not self._done.done():
            self._done.set_exception(exc)

    def upstream_paused(self) -> None:
        pass

    def upstream_resumed(self) -> None:
        pass

    def on_tunnel_data(self, data: bytes) -> None:
        pass

    def on_tunnel_closed(self) -> None:
        if not self._done.done():
            self._done.set_result(self.status)


def probe_request(path: str, authority: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: veloxy-health-check\r\n"
            "Connection: close\r\n\r\n").encode("latin-1")


async def probe(server: Endpoint, check: HealthCheck, sweeper: DeadlineSweeper,
                request: bytes) -> str | None:
    """One HTTP/1.1 check of `server`: None when healthy, else what went wrong."""

    async def ask() -> int:
        conn = await ClientConnection.open(server.host, server.port, sweeper,
                                           _ProbeTimeouts(check.timeout), ssl=server.pool.ssl,
                                           server_hostname=server.pool.server_hostname)
        try:
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            conn.send(request, _ProbeSink(done))
            return await done
        finally:
            conn.abort()

    return await _checked(check, ask)


async def _checked(check: HealthCheck, ask: Callable[[], Awaitable[int]]) -> str | None:
    """The verdict on one probe (`ask` connects, asks and gives the status): None when a
    2xx or 3xx came within the check's timeout, else what went wrong."""
    try:
        async with asyncio.timeout(check.timeout):
            status = await ask()
    except TimeoutError:
        return f"no answer within {check.timeout:g}s"
    except UpstreamError as exc:
        return str(exc)
    if 200 <= status < 400:
        return None
    return f"{check.path} answered {status}"


class _H2ProbeSink:
    """An http2.client.StreamSink that only wants the status of the response head."""

    def __init__(self, done: asyncio.Future[int]) -> None:
        self._done = done

    def on_h2_informational(self, headers: list[tuple[bytes, bytes]]) -> None:
        pass  # a 1xx is not the answer: the final head follows

    def on_h2_head(self, headers: list[tuple[bytes, bytes]]) -> None:
        if not self._done.done():
            self._done.set_result(int(dict(headers).get(b":status", b"0")))

    def on_h2_data(self, data: bytes) -> None:
        pass

    def on_h2_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        pass

    def on_h2_end(self) -> None:
        pass

    def on_h2_error(self, exc: UpstreamError, received: bool) -> None:
        if not self._done.done():
            self._done.set_exception(exc)

    def on_h2_drained(self) -> None:
        pass

    def on_read_done(self) -> None:
        pass


async def probe_h2c(server: Endpoint, check: HealthCheck, sweeper: DeadlineSweeper,
                    authority: bytes) -> str | None:
    """One check of a server of an h2c group: `GET path` as an HTTP/2 stream on a fresh
    connection (as the HTTP/1.1 probe opens one: it also shows that the server accepts
    connections). None when healthy, else what went wrong."""

    async def ask() -> int:
        pool = server.pool
        conn = await H2ClientConnection.open(server.host, server.port, sweeper,
                                             _ProbeTimeouts(check.timeout), ssl=pool.ssl,
                                             server_hostname=pool.server_hostname)
        try:
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            scheme = b"http" if pool.ssl is None else b"https"
            conn.start([(b":method", b"GET"), (b":scheme", scheme),
                        (b":authority", authority), (b":path", check.path.encode()),
                        (b"user-agent", b"veloxy-health-check")], _H2ProbeSink(done), True)
            conn.flush()
            return await done
        finally:
            conn.close()

    return await _checked(check, ask)


class HealthChecker:
    """Probes one server for as long as its task runs; reports changes to `on_change`."""

    def __init__(self, server: Endpoint, check: HealthCheck, sweeper: DeadlineSweeper,
                 on_change: Callable[[Endpoint, bool, str], None]) -> None:
        self.server = server
        self.check = check
        self._sweeper = sweeper
        self._on_change = on_change
        authority = server.name if ":" not in server.name else f"[{server.name}]"
        if server.port != 80:
            authority = f"{authority}:{server.port}"
        self._request = probe_request(check.path, authority)
        self._authority = authority.encode("latin-1")
        #: An h2c group's servers are probed over HTTP/2 (their pools say so).
        self._h2c = isinstance(server.pool, H2cPool)
        self.successes = 0
        self.failures = 0
        self.probes = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        check = self.check
        while True:
            started = loop.time()
            try:
                if self._h2c:
                    problem = await probe_h2c(self.server, check, self._sweeper,
                                              self._authority)
                else:
                    problem = await probe(self.server, check, self._sweeper, self._request)
            except OSError as exc:  # anything the socket layer raises past the client
                problem = str(exc)
            self.probes += 1
            self.record(problem)
            await asyncio.sleep(max(0.0, check.interval - (loop.time() - started)))

    def record(self, problem: str | None) -> None:
        """Count one probe's outcome; report a crossing of a threshold."""
        server = self.server
        if problem is None:
            self.failures = 0
            self.successes += 1
            if not server.healthy and self.successes >= self.check.healthy_threshold:
                self._on_change(server, True, f"{self.successes} good checks in a row")
        else:
            self.successes = 0
            self.failures += 1
            if server.healthy and self.failures >= self.check.unhealthy_threshold:
                self._on_change(server, False, f"{self.failures} failed checks in a row, "
                                               f"last: {problem}")
