"""The connection to one server of an upstream group that speaks HTTP/2: without TLS
(`protocol: h2c`, gRPC backends) or over TLS with ALPN h2 (`protocol: h2`, https://
servers; the pool's `ssl` context offers h2 and the connection checks the server chose it).

HTTP/2 multiplexes: one connection per server carries every request in flight (up to the
server's SETTINGS_MAX_CONCURRENT_STREAMS, beyond which a second connection replaces it
for new requests), so there is no idle stack and no waiters. The class extends the HTTP/1.1
pool so that everything that reads pools (status, metrics, reload) reads this one the same
way; the HTTP/1.1 entry points refuse with a clear 503, since an HTTP/1.1 client's request
cannot be forwarded to an h2c group.
"""

from __future__ import annotations

import asyncio
from typing import Any

from veloxy.errors import NoUpstreamAvailable, UpstreamError
from veloxy.http2.client import H2ClientConnection
from veloxy.upstream.pool import ConnectionPool


class H2cPool(ConnectionPool):
    def __init__(self, host: str, port: int, *, group: str, **kw: Any) -> None:
        super().__init__(host, port, **kw)
        self._group = group
        self._conn: H2ClientConnection | None = None
        self._connecting: asyncio.Future[H2ClientConnection] | None = None

    # -- the HTTP/1.1 side refuses -----------------------------------------------------------

    def acquire_idle(self) -> None:
        return None

    async def acquire(self, fresh: bool = False) -> Any:
        raise NoUpstreamAvailable(
            f"upstream group {self._group!r} speaks HTTP/2 (protocol: "
            f"{'h2' if self.ssl is not None else 'h2c'}): only HTTP/2 clients can use it")

    # -- HTTP/2 --------------------------------------------------------------------------------

    def ready(self) -> H2ClientConnection | None:
        """The shared connection when it can take another stream now."""
        conn = self._conn
        return conn if conn is not None and conn.usable else None

    async def connection(self) -> H2ClientConnection:
        """The shared connection, connecting first when there is none (one connect for all
        the requests that ask meanwhile)."""
        conn = self.ready()
        if conn is not None:
            return conn
        if self.closed:
            raise NoUpstreamAvailable("upstream pool closed")
        if self._connecting is None:
            task = asyncio.ensure_future(self._open())
            task.add_done_callback(_retrieve)
            self._connecting = task
        return await asyncio.shield(self._connecting)

    async def _open(self) -> H2ClientConnection:
        self.open += 1
        try:
            conn = await H2ClientConnection.open(self.host, self.port, self._sweeper,
                                                 self._timeouts, self._closed, ssl=self.ssl,
                                                 server_hostname=self.server_hostname)
        except UpstreamError:
            self.open -= 1
            self.stats.connect_failures += 1
            raise
        finally:
            self._connecting = None
        self.stats.created += 1
        old, self._conn = self._conn, conn
        if old is not None:  # full (max concurrent streams) or going away: retire it
            old.going_away = True
            if not old.streams:
                old.close()
        return conn

    def _closed(self, conn: H2ClientConnection) -> None:
        self.open -= 1
        if self._conn is conn:
            self._conn = None

    def close(self) -> None:
        super().close()
        if self._conn is not None:
            self._conn.close()

    def retire(self) -> None:
        super().retire()
        conn = self._conn
        if conn is not None:
            conn.going_away = True  # no new streams; closed once its streams are done
            if not conn.streams:
                conn.close()


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # read, so that a failed connect is never reported as unretrieved
