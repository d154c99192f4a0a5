"""Accepting client connections: batched, capped at limits.max_connections, backed off on EMFILE.

veloxy accepts on its listening sockets itself instead of leaving it to the event loop's
server (`loop.create_server`), for three reasons, each measured here:

* **The cap.** At `max_connections` open client connections (per worker) the acceptor stops
  reading the listeners: new connections wait in the kernel's accept queue (the listen
  backlog), as with HAProxy's `maxconn`, and are accepted as soon as a connection closes.
  To make that happen sooner, while connections wait at the cap it asks kept-alive
  connections idle between requests to leave (a quarter of the cap at a time, at least 32,
  looked at every 20 ms and whenever the cap stops a batch), as nginx closes idle
  keep-alive connections when its worker_connections run out: closed at once when idle
  for 50 ms or more, else (its client may be sending right now) after answering the next
  request, with Connection: close. A kept-alive client costs a reconnect, a waiting one is
  served, and a new client waits a fraction of a second, not until some client leaves of
  its own accord (docs/BENCHMARKS.md, "Overload: connection cap"). Neither uvloop's server
  nor asyncio's can pause without closing the listening socket.
* **Descriptor exhaustion.** When accept() fails with EMFILE/ENFILE (no descriptor left,
  in the process or the system; a cap set above what `ulimit -n` allows) the acceptor
  asks kept-alive connections to leave as at the cap, stops accepting for a back-off (0.1 s,
  doubling to 1 s while it keeps failing, reset by the first success) and logs one line
  when it starts and one when it ends, with the count. Any other accept() error gets the
  same pause: never a spin. The loops' own servers do worse:
  libuv's "EMFILE trick" accepts and closes every queued connection (clients see their
  connection closed without an answer), and asyncio's logs a traceback per failed accept
  (769 lines in 3 s with 80 clients against a limit of 40 descriptors, measured here).
* **Batches.** Since libuv 1.45 (libuv#3696) a libuv server accepts ONE connection per
  event-loop iteration; when a thousand keep-alive connections keep the loop busy (one
  iteration takes tens of milliseconds), a burst of new connections drains from the accept
  queue at a few dozen a second (measured with uvloop 0.23: the last of 1000 connections
  waited 1-4 s, strace showed one accept4 per epoll_pwait). The acceptor takes up to
  `batch` per readiness event, as the stdlib loop does.

Accepting in Python costs more per new connection than the loop's server, which does it in
C (docs/BENCHMARKS.md, "Overload: connection cap"). So with uvloop the loop's own servers
accept while the connections are well below the cap (FAST_SHARE), each on a duplicate of
its listener (closing it leaves the listener and its queue alone), with a timer catching
up on what libuv leaves queued; ServerConnection tells the registry when the count reaches
the threshold (`busy_at`), and the acceptor takes over until the count is well below
again. The stdlib loop's server accepts in Python anyway, a whole burst before any
connection_made: there the acceptor accepts all the time.

Each accepted socket becomes a transport through `loop.connect_accepted_socket` (TLS
listeners: the same `ssl=` context and handshake timeouts their server had). Connections
are counted in the listener group's ConnectionRegistry (net/server_connection.py) plus the
ones still being wrapped (a TLS handshake in progress); HTTP/2 connections count the
same once their protocol is chosen.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import select
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger("veloxy")

#: Descriptors kept out of `max_connections`' default for what is not a client connection:
#: listeners, the admin listener, log files, health checks, DNS, the event loop's own.
FD_RESERVE = 64

#: accept() errors that mean "no descriptor or buffer left now" (the usual reason to back off).
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: When the cap is reached and connections wait to be accepted: how many idle kept-alive
#: connections are asked to leave at a time (at least; a quarter of the cap when that is
#: more), how long one must have been idle to be closed at once (else it closes after
#: answering its next request: a client that sends its next request as soon as it has an
#: answer, as load generators and pipelining clients do, is not closed under it), and how
#: often the queue is looked at meanwhile.
LEAVE_BATCH = 32
IDLE_GRACE = 0.05
ROOM_CHECK_INTERVAL = 0.02

#: Below this share of the cap (per cent) the loop's own servers accept: no Python call per
#: connection (the acceptor's own accept costs more per new connection: docs/BENCHMARKS.md,
#: "Overload: connection cap"). From there on, and until the count is
#: back under two thirds of it, the acceptor accepts itself. The share is of the cap or of
#: its default from `ulimit -n`, whichever is less: below the point where descriptors can
#: run out, so that EMFILE meets the acceptor, not libuv (whose EMFILE trick closes every
#: queued connection).
FAST_SHARE = 75
NEVER_BUSY = 1 << 62
CATCH_UP_INTERVAL = 0.05

FIRST_BACKOFF = 0.1
LONGEST_BACKOFF = 1.0


def default_max_connections(nofile: int) -> int:
    """limits.max_connections when the config leaves it out: half of what RLIMIT_NOFILE
    leaves after FD_RESERVE, since every client connection being proxied needs one upstream
    connection beside it: (nofile - 64) // 2, at least 16. With `ulimit -n 1024`: 480."""
    return max(16, (nofile - FD_RESERVE) // 2)


def descriptor_limit() -> int | None:
    """The process's soft RLIMIT_NOFILE; None where there is none (Windows) or unlimited."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


class Acceptor:
    """Accepts on a worker's listening sockets for one ConnectionRegistry.

    `registry` is a net/server_connection.ConnectionRegistry: its `connections` (the open
    ones), `on_vacancy` slot (called when a connection goes), `make_room` and counters.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, registry: Any, *,
                 max_connections: int, batch: int = 128, backlog: int = 4096,
                 fast: bool = True) -> None:
        self._loop = loop
        self._registry = registry
        self.max_connections = max_connections
        registry.max_connections = max_connections
        self._batch = batch
        self._listeners: list[tuple[socket.socket, Callable[[], asyncio.BaseProtocol],
                                    dict[str, Any]]] = []
        #: Sockets being wrapped, by the task that wraps them (connect_accepted_socket).
        self._pending: dict[asyncio.Task[Any], socket.socket] = {}
        #: Each listener's (family, type, proto), read once: socket.accept() reads them as
        #: enums, through Python calls, for every connection.
        self._kinds: dict[socket.socket, tuple[int, int, int]] = {}
        #: Accepted sockets whose connection is not in the registry yet (see `_attach`).
        self._wrapping = 0
        self._reading = False
        self._stopped = False
        self._native = False  # the loop's own servers accept (see _serve_natively)
        self._servers: list[asyncio.Server] = []
        # The fast mode (_go_fast): its servers, timer, threshold and whether libuv needs
        # catching up; `_switching` while it is being set up again.
        self._fast: list[asyncio.Server] = []
        self._fast_tick: asyncio.TimerHandle | None = None
        # (uvloop only: the stdlib loop's server accepts in Python too, a burst at a time
        # before any connection_made, so it would overshoot the cap and buys nothing)
        self._catch_up = type(loop).__module__.startswith("uvloop")
        nofile = descriptor_limit()
        safe = max_connections if nofile is None else min(max_connections,
                                                           default_max_connections(nofile))
        self._fast_below = safe * FAST_SHARE // 100 if fast and self._catch_up else 0
        self._switching = False
        self._switch_task: asyncio.Task[None] | None = None  # the set-up while _switching
        self._backlog = backlog
        registry.busy_at = NEVER_BUSY
        self._at_limit = False
        self._counted = False  # this stay at the cap is in limit_pauses
        self._room_check: asyncio.TimerHandle | None = None
        # The back-off episode in progress: its timer, next delay, failures and start.
        self._backoff: asyncio.TimerHandle | None = None
        self._delay = FIRST_BACKOFF
        self._failures = 0
        self._episode_start = 0.0

    def watch(self, listener: socket.socket, protocol_factory: Callable[[], asyncio.BaseProtocol],
              **connect_options: Any) -> None:
        """Accept on `listener` (listening, non-blocking), wrapping its connections with
        `protocol_factory` and `connect_options` (ssl=, ssl_handshake_timeout=, ...)."""
        self._listeners.append((listener, protocol_factory, connect_options))
        self._kinds[listener] = (int(listener.family), int(listener.type), listener.proto)

    @property
    def open_connections(self) -> int:
        return len(self._registry.connections) + self._wrapping

    @property
    def accepting(self) -> bool:
        """Connections are being accepted, by this acceptor or by the loop's servers."""
        return self._reading or bool(self._fast)

    @property
    def fast(self) -> bool:
        """The loop's own servers accept (well below the cap)."""
        return bool(self._fast)

    async def start(self) -> None:
        """Accept from now on: with the loop's own servers while well below the cap (see
        FAST_SHARE), else by this acceptor."""
        self._stopped = False
        if len(self._registry.connections) < self._fast_below:
            await self._go_fast()
        else:
            self._resume()

    def stop(self) -> None:
        """Stop accepting for good (shutdown) and close the listeners: what is still in
        their queues is reset by the kernel, as when the loop's server closes."""
        self._stopped = True
        self._pause()
        self._registry.on_vacancy = None
        if self._room_check is not None:
            self._room_check.cancel()
            self._room_check = None
        if self._backoff is not None:
            self._backoff.cancel()
            self._backoff = None
        self._leave_fast()
        for server in self._servers:
            server.close()
        for listener, _factory, _options in self._listeners:
            listener.close()
        for task in list(self._pending):
            task.cancel()  # a TLS handshake still in progress: its socket is closed
        if self._switch_task is not None:
            self._switch_task.cancel()

    # -- pausing and resuming ----------------------------------------------------------------

    def _pause(self) -> None:
        if self._native:
            return  # (the loop's own servers: they cannot pause)
        if self._reading:
            self._reading = False
            for listener, _factory, _options in self._listeners:
                self._loop.remove_reader(listener)

    def _resume(self) -> None:
        if self._reading or self._stopped or self._backoff is not None:
            return
        self._reading = True
        try:
            for entry in self._listeners:
                self._loop.add_reader(entry[0], self._accept, entry)
        except NotImplementedError:  # Windows' Proactor loop: no readiness to wait on
            self._serve_natively()

    def _serve_natively(self) -> None:
        """Where the loop cannot watch a listener (Windows' Proactor loop), its own server
        accepts, without the cap or the back-off (docs/config.md says so)."""
        self._native = True
        for listener, factory, options in self._listeners:
            task = self._loop.create_task(self._loop.create_server(
                factory, sock=listener, **options))
            task.add_done_callback(lambda done: self._servers.append(done.result()))

    # -- the fast mode: the loop's own servers -------------------------------------------------

    async def _go_fast(self) -> None:
        """The loop's own servers accept (in C: no Python call per connection), each on a
        duplicate of its listener, so that closing it leaves the listener and its queue
        as they are. A timer catches up on what libuv leaves queued (one accept per loop
        iteration) and looks at the count for HTTP/2 connections, which do not call
        `busy`; ServerConnection calls it when its registration reaches `busy_at`."""
        self._pause()
        servers = []
        for listener, factory, options in self._listeners:
            servers.append(await self._loop.create_server(factory, sock=listener.dup(),
                                                          backlog=self._backlog, **options))
        if self._stopped:
            for server in servers:
                server.close()
            return
        self._fast = servers
        self._registry.busy_at = self._fast_below
        self._registry.on_busy = self._busy
        self._registry.on_vacancy = None
        self._fast_tick = self._loop.call_later(CATCH_UP_INTERVAL, self._tick)

    def _tick(self) -> None:
        self._fast_tick = None
        if not self._fast:
            return
        if len(self._registry.connections) >= self._fast_below:
            self._busy()
            return
        if self._catch_up:
            for entry in self._listeners:
                self._accept(entry)
                if not self._fast:
                    return
        self._fast_tick = self._loop.call_later(CATCH_UP_INTERVAL, self._tick)

    def _busy(self) -> None:
        """Connections reached FAST_SHARE of the cap: this acceptor takes over, to stop at
        the cap and to back off should descriptors run out."""
        self._leave_fast()
        self._registry.on_vacancy = self._vacancy
        self._resume()

    def _leave_fast(self) -> None:
        self._registry.busy_at = NEVER_BUSY
        if self._fast_tick is not None:
            self._fast_tick.cancel()
            self._fast_tick = None
        for server in self._fast:
            server.close()  # (its duplicate of the listener: the queue stays)
        self._fast = []

    def _limit_reached(self) -> None:
        self._pause()
        if not self._at_limit:
            self._at_limit = True
            self._registry.on_vacancy = self._vacancy
            self._room_check = self._loop.call_later(ROOM_CHECK_INTERVAL, self._check_queue)
        self._count_pause()

    def _check_queue(self) -> None:
        """At the cap, every ROOM_CHECK_INTERVAL: when connections wait in a listener's
        queue, close idle keep-alive connections for them (one poll() per check)."""
        self._room_check = None
        if not self._at_limit or self._stopped:
            return
        listeners = [entry[0] for entry in self._listeners]
        try:
            waiting, _, _ = select.select(listeners, [], [], 0)
        except (OSError, ValueError):
            waiting = []
        if waiting:
            self._make_room()
        self._room_check = self._loop.call_later(ROOM_CHECK_INTERVAL, self._check_queue)

    def _make_room(self) -> None:
        self._registry.make_room(max(LEAVE_BATCH, self.max_connections // 4), IDLE_GRACE)

    def _count_pause(self) -> None:
        """limit_pauses counts the times the cap was reached by connections in the registry
        (not a pause while a wrapped connection counts twice for a moment)."""
        if not self._counted and len(self._registry.connections) >= self.max_connections:
            self._counted = True
            self._registry.limit_pauses += 1

    def _vacancy(self) -> None:
        """A connection closed or got wrapped (called while this acceptor accepts)."""
        open_now = self.open_connections
        if self._at_limit:
            if open_now >= self.max_connections:
                self._count_pause()
                return
            self._at_limit = self._counted = False
            if self._room_check is not None:
                self._room_check.cancel()
                self._room_check = None
            self._resume()
        if open_now < self._fast_below * 2 // 3 and self._backoff is None \
                and not self._switching and not self._stopped:
            self._switching = True
            self._registry.on_vacancy = None
            self._switch_task = self._loop.create_task(self._go_fast())
            self._switch_task.add_done_callback(self._switched)

    def _switched(self, _task: asyncio.Task[None]) -> None:
        self._switch_task = None
        self._switching = False

    # -- accepting -----------------------------------------------------------------------------

    def _accept(self, entry: tuple[socket.socket, Callable[[], asyncio.BaseProtocol],
                                   dict[str, Any]]) -> None:
        room = self.max_connections - self.open_connections
        if room <= 0:
            self._limit_reached()
            self._make_room()  # someone waits in the queue: this is why we were called
            return
        listener, factory, options = entry
        # socket.accept() without its Python layer: every connection comes this way, and it
        # costs more than libuv's accept (docs/BENCHMARKS.md, "nginx-class in the hard cases")
        raw_accept = listener._accept  # type: ignore[attr-defined]  # the C accept socket.accept wraps
        family, kind, proto = self._kinds[listener]
        loop = self._loop
        for _ in range(min(room, self._batch)):
            try:
                fd, _address = raw_accept()
            except (BlockingIOError, InterruptedError):
                if self._failures:
                    self._episode_over()  # accept() works again: the queue is just empty
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                # EMFILE and its kind (RESOURCE_ERRORS), or anything else accept() may say
                # (EPERM from a firewall hook, ENOMEM...): the same pause, never a spin.
                self._back_off(listener, exc)
                return
            if self._failures:
                self._episode_over()
            conn = socket.socket(family, kind, proto, fileno=fd)
            conn.setblocking(False)
            # Wrapped by a task of its own; it counts in `_wrapping` until the wrapping is
            # done, by which time its connection_made (TLS: after the handshake) has put it
            # in the registry: for a moment it counts twice, which errs on the safe side of
            # the cap.
            self._wrapping += 1
            task = loop.create_task(loop.connect_accepted_socket(factory, sock=conn, **options))
            self._pending[task] = conn
            task.add_done_callback(self._attached)
        if self.open_connections >= self.max_connections:
            self._limit_reached()
            self._make_room()  # the batch ended at the cap, not with an empty queue

    def _attached(self, task: asyncio.Task[Any]) -> None:
        conn = self._pending.pop(task)
        self._wrapping -= 1
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or exc is not None:
            # Reset before we could wrap it, a TLS handshake that failed or timed out, or
            # the shutdown: the loop's servers drop such a connection the same way.
            if exc is not None and not isinstance(exc, (OSError, TimeoutError)):
                log.error("wrapping an accepted connection failed", exc_info=exc)
            conn.close()
        if self._at_limit:
            self._vacancy()  # it no longer counts twice, or its handshake failed

    # -- back-off on descriptor exhaustion -----------------------------------------------------

    def _back_off(self, listener: socket.socket, exc: OSError) -> None:
        self._pause()
        if exc.errno in RESOURCE_ERRORS:
            self._make_room()  # kept-alive connections give their descriptors back
        self._failures += 1
        self._registry.accept_backoffs += 1
        if self._failures == 1:
            self._episode_start = self._loop.time()
            log.warning("accept on %s failed: %s; not accepting for %gs, then again "
                        "(backing off up to %gs while it fails)", _name(listener),
                        exc.strerror or exc, self._delay, LONGEST_BACKOFF)
        self._backoff = self._loop.call_later(self._delay, self._retry)
        self._delay = min(self._delay * 2, LONGEST_BACKOFF)

    def _retry(self) -> None:
        self._backoff = None
        self._resume()

    def _episode_over(self) -> None:
        log.warning("accepting again after %d failed accept(s) over %.1fs",
                    self._failures, self._loop.time() - self._episode_start)
        self._failures = 0
        self._delay = FIRST_BACKOFF


def _name(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return "a closed listener"
    return f"{host}:{port}"
