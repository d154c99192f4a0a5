"""A keep-alive connection pool for one upstream server.

Bookkeeping is synchronous and done before any await (aiohttp's connector rule): a
connection is counted as in use the moment it leaves the idle stack, and a waiter is handed
a connection in the same call that releases it, so no other request can slip in between.

Beyond max_connections, requests queue FIFO (at most max_waiting, each for at most
wait_timeout, else 503). A connection released while someone waits goes straight to the
first waiter; a slot freed by a close is reserved for the first waiter before it is woken,
so a request arriving in between cannot take it and open never exceeds max_connections.

Idle connections are a LIFO stack: the most recently used connection is the warmest, and
the ones at the bottom age out through idle_timeout when traffic falls. An idle connection
that the server closes is removed when its close is seen (connection_lost), and one that
sends anything while idle is closed (see ClientConnection.data_received), so neither is
handed to a request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from ssl import SSLContext

from veloxy.errors import NoUpstreamAvailable
from veloxy.net.client import ClientConnection, Timeouts
from veloxy.net.sockopt import SocketOptions, apply_to_connection
from veloxy.net.timers import DeadlineSweeper


@dataclass
class PoolStats:
    """Counters since the pool was made (the gauges are on the pool: open, in_use, ...)."""

    created: int = 0
    reused: int = 0
    connect_failures: int = 0
    #: Requests that had to queue because max_connections were busy.
    waited: int = 0
    #: Requests refused with 503: the queue was full, or the wait passed wait_timeout.
    queue_full: int = 0
    wait_timeouts: int = 0


class ConnectionPool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeouts: Timeouts,
        sweeper: DeadlineSweeper,
        max_connections: int = 1024,
        max_idle: int = 256,
        idle_timeout: float = 60.0,
        max_lifetime: float = 300.0,
        max_waiting: int = 1024,
        wait_timeout: float = 5.0,
        socket_options: SocketOptions | None = None,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        #: TLS for an https:// server (None: cleartext); SNI and the name verified.
        self.ssl = ssl
        self.server_hostname = server_hostname
        self._timeouts = timeouts
        self._sweeper = sweeper
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.max_waiting = max_waiting
        self.wait_timeout = wait_timeout
        #: TCP options set on each new connection (`tuning.upstream`); None = leave as made.
        self.socket_options = socket_options
        self._idle: list[ClientConnection] = []
        self._waiters: deque[asyncio.Future[ClientConnection | None]] = deque()
        #: The same queue, read-only for others: its len() is what load shedding sums over
        #: a group per request (proxy/admission.py), without a property call per server.
        self.waiters = self._waiters
        self.open = 0  # connected or connecting
        self.in_use = 0
        self.stats = PoolStats()
        self.closed = False

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def snapshot(self) -> dict[str, int]:
        """Gauges and counters, for /status and the metrics: open (connected or
        connecting), idle, in use, waiting, and the PoolStats counters."""
        return {"open": self.open, "idle": len(self._idle), "in_use": self.in_use,
                "waiting": len(self._waiters), "created": self.stats.created,
                "reused": self.stats.reused, "connect_failures": self.stats.connect_failures,
                "waited": self.stats.waited, "queue_full": self.stats.queue_full,
                "wait_timeouts": self.stats.wait_timeouts}

    def acquire_idle(self) -> ClientConnection | None:
        """An idle connection ready for a request, or None. Never waits."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                self.in_use += 1
                self.stats.reused += 1
                return conn
            conn.close()
        return None

    async def acquire(self, *, fresh: bool = False) -> ClientConnection:
        """An idle connection, a new one, or the next released one within wait_timeout.

        `fresh` skips the idle stack (a retry after a stale one: its neighbours may be too).
        """
        if not fresh:
            conn = self.acquire_idle()
            if conn is not None:
                return conn
        if self.open >= self.max_connections or self._waiters:  # FIFO: no jumping the queue
            conn = await self._wait()
            if conn is not None:
                # Handed over by `release` as its exchange finished: it has just carried a
                # whole response, so it is not stale even when a `fresh` one was asked for.
                return conn
            # None: `_wake_one` reserved a slot for us (counted in open and in_use), so
            # that nobody arriving meanwhile takes it and open never passes max_connections.
        else:
            self.open += 1
            self.in_use += 1
        try:
            conn = await ClientConnection.open(
                self.host, self.port, self._sweeper, self._timeouts, self._connection_closed,
                ssl=self.ssl, server_hostname=self.server_hostname,
            )
        except BaseException as exc:
            self.open -= 1
            self.in_use -= 1
            if not isinstance(exc, asyncio.CancelledError):
                self.stats.connect_failures += 1
            self._wake_one()
            raise
        self.stats.created += 1
        if self.socket_options is not None and conn.transport is not None:
            apply_to_connection(conn.transport, self.socket_options)
        return conn

    def release(self, conn: ClientConnection) -> None:
        """Return a connection after its exchange; it goes back to the stack if reusable."""
        self.in_use -= 1
        now = self._sweeper.now
        retire_at = conn.created_at + self.max_lifetime
        if now > retire_at or self.closed:
            conn.close()  # a waiter is woken when the close completes (_connection_closed)
            return
        if not conn.release():
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                self.stats.reused += 1
                waiter.set_result(conn)
                return
        if len(self._idle) >= self.max_idle:
            conn.close()
            return
        # Idle until idle_timeout, or until its lifetime ends if that comes first: the
        # sweeper closes it then, so an old connection is not kept only to be refused later.
        deadline = now + self.idle_timeout
        conn.deadline = deadline if deadline < retire_at else retire_at
        self._idle.append(conn)

    def discard(self, conn: ClientConnection, *, graceful: bool = False) -> None:
        """An exchange gives up a connection that cannot carry another request: aborted
        mid-request, or (graceful) a finished tunnel whose last bytes must still go out."""
        self.in_use -= 1
        if graceful:
            conn.close()
        else:
            conn.abort()
        # A waiter is woken when the close completes (_connection_closed): not before, so
        # that `open` never passes max_connections.

    def retire(self) -> None:
        """A reload replaced the pool's group: close the idle connections now and each busy
        one when its exchange releases it; requests already waiting are still served."""
        self.closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    def close(self) -> None:
        self.closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(NoUpstreamAvailable("upstream pool closed"))
        self._waiters.clear()

    # -- internals -------------------------------------------------------------------------

    async def _wait(self) -> ClientConnection | None:
        """Queue (FIFO) for a connection: one handed over by `release`, or None when a
        slot freed up and the caller may connect anew. Only under overload, so a timer per
        waiter is acceptable here."""
        if len(self._waiters) >= self.max_waiting:
            self.stats.queue_full += 1
            raise NoUpstreamAvailable(
                f"{self.host}:{self.port}: all {self.max_connections} connections busy "
                f"and {self.max_waiting} requests already waiting"
            )
        waiter: asyncio.Future[ClientConnection | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        self.stats.waited += 1
        try:
            async with asyncio.timeout(self.wait_timeout):
                return await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()  # handed over as the timeout fired: take it
            self.stats.wait_timeouts += 1
            raise NoUpstreamAvailable(
                f"{self.host}:{self.port}: no connection free within {self.wait_timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            # The request went away. What was handed to it goes to the next in line.
            if waiter.done() and not waiter.cancelled():
                conn = waiter.result()
                if conn is not None:
                    self.release(conn)
                else:
                    self.open -= 1  # the reserved slot
                    self.in_use -= 1
                    self._wake_one()
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
                try:
                    self._waiters.remove(waiter)  # keep `waiting` exact
                except ValueError:
                    pass

    def _wake_one(self) -> None:
        """A slot freed up without a connection to hand over: let the first waiter connect
        anew, reserving the slot for it now (see `acquire`)."""
        while self._waiters and self.open < self.max_connections:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.open += 1
                self.in_use += 1
                waiter.set_result(None)
                return

    def _connection_closed(self, conn: ClientConnection) -> None:
        self.open -= 1
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        if self._waiters:
            self._wake_one()  # a slot is free: the first waiter connects anew
