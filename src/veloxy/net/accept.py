"""Catching up on queued connections that uvloop would accept too slowly.

Since libuv 1.45 (libuv#3696, "unix: don't accept() connections in a loop") a libuv server
accepts ONE connection per event-loop iteration and relies on level-triggered polling for the
next. That is the right call for an idle server, and a trap for a busy one: when a thousand
keep-alive connections keep the loop busy, one iteration takes tens of milliseconds (it reads
and writes hundreds of sockets), so a burst of new connections drains from the kernel's
accept queue at a few dozen per second. Measured here with uvloop 0.23 and 1000 connections
opened at once against a loaded proxy: the last few hundred waited 1-4 s in the accept queue
(`ss -ltn` showed Recv-Q ~200-800 on the listener; strace showed exactly one accept4 per
epoll_pwait), which wrk reports as requests over its 2 s timeout. The stdlib loop accepts up
to `backlog` connections per readiness event and does not have the problem.

`AcceptCatchUp` visits each listening socket every `interval` seconds and accepts the
connections that have waited in the queue since its previous visit (up to `batch` at a time),
handing each socket to the loop as an accepted connection with the same protocol factory.
libuv keeps accepting on its own; both may accept from the same socket, the kernel gives each
connection to exactly one of them.

Only those that waited a whole visit: a connection taken here costs far more than one libuv
accepts (a Python socket object, a task and uvloop's connect_accepted_socket coroutine: more
than a whole keep-alive request; docs/BENCHMARKS.md, "nginx-class in the hard cases").
Taking everything queued, as this did first, put a large share of the connections of a
Connection: close load on that path while libuv would have accepted them an iteration
later. The queue's length is the listening socket's TCP_INFO `unacked` (Linux); a visit
reads it (one getsockopt, where the old visit made one accept4 that failed with EAGAIN) and
accepts at most as many as were left queued at the previous visit: the queue is FIFO, so
those that waited are at its front, and when libuv took some of them meanwhile the count is
only an upper bound (a visit then also takes a few that arrived since, which is harmless).
Where TCP_INFO is not available every visit takes what is queued, as before.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("veloxy")


class AcceptCatchUp:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, interval: float = 0.025,
                 batch: int = 512) -> None:
        self._loop = loop
        self._listeners: list[tuple[socket.socket, Callable[[], asyncio.BaseProtocol],
                                    dict[str, Any]]] = []
        #: Per listener: connections left queued at the previous visit (None: unknown).
        self._left: list[int | None] = []
        self._interval = interval
        self._batch = batch
        self._handle: asyncio.TimerHandle | None = None
        #: Connections being wrapped (connect_accepted_socket), by the task that wraps them.
        self._pending: dict[asyncio.Task[Any], socket.socket] = {}
        #: Connections this catch-up accepted (the ones libuv left waiting): for metrics/tests.
        self.accepted = 0

    def watch(self, listener: socket.socket, protocol_factory: Callable[[], asyncio.BaseProtocol],
              **connect_options: Any) -> None:
        """Catch up on `listener`, wrapping its connections as its server does: the same
        factory, and for TLS listeners the same `ssl=` context and handshake timeouts."""
        self._listeners.append((listener, protocol_factory, connect_options))
        self._left.append(0 if accept_queue_length(listener) is not None else None)

    def start(self) -> None:
        if self._handle is None and self._listeners:
            self._handle = self._loop.call_later(self._interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        for index, (listener, factory, options) in enumerate(self._listeners):
            left = self._left[index]
            queued = None if left is None else _queue_length(listener)
            if left is None or queued is None:
                self._drain(listener, factory, options, self._batch)
                continue
            # Those still queued from the previous visit are the first min(left, queued).
            waited = min(left, queued, self._batch)
            if waited:
                self._drain(listener, factory, options, waited)
            self._left[index] = queued - waited
        self._handle = self._loop.call_later(self._interval, self._tick)

    def _drain(self, listener: socket.socket, factory: Callable[[], asyncio.BaseProtocol],
               options: dict[str, Any], count: int) -> None:
        # socket.accept() without its Python layer: it reads the listener's family and type
        # as enums (Python calls) for every connection; ours are known.
        family, kind, proto = listener.family, listener.type, listener.proto
        raw_accept = listener._accept  # type: ignore[attr-defined]  # the C accept socket.accept wraps
        loop = self._loop
        for _ in range(count):
            try:
                fd, _address = raw_accept()
            except (BlockingIOError, InterruptedError):
                return  # queue empty: the usual case
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                # EMFILE/ENFILE/ENOBUFS: leave the rest queued; the next tick tries again.
                log.warning("accept on %s failed: %s", _name(listener), exc)
                return
            conn = socket.socket(family, kind, proto, fileno=fd)
            conn.setblocking(False)
            self.accepted += 1
            task = loop.create_task(loop.connect_accepted_socket(factory, sock=conn, **options))
            self._pending[task] = conn
            task.add_done_callback(self._attached)

    def _attached(self, task: asyncio.Task[Any]) -> None:
        conn = self._pending.pop(task)
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        # Reset before we could wrap it, or a TLS handshake that failed or timed out: the
        # server's own path drops such a connection the same way. Anything else is a bug.
        if not isinstance(exc, (OSError, TimeoutError)):
            log.error("wrapping an accepted connection failed", exc_info=exc)
        conn.close()


# struct tcp_info: eight one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked; for a
# listening socket Linux reports the accept queue's length as `unacked` (tcp_get_info).
_TCP_INFO_UNACKED = struct.Struct("=I")
_UNACKED_OFFSET = 24
_HAS_TCP_INFO = sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")


def accept_queue_length(listener: socket.socket) -> int | None:
    """Connections waiting in `listener`'s accept queue, or None where the OS does not say."""
    if not _HAS_TCP_INFO or listener.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return _queue_length(listener)


def _queue_length(listener: socket.socket) -> int | None:
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _UNACKED_OFFSET + 4)
    except OSError:
        return None
    if len(info) < _UNACKED_OFFSET + 4:
        return None
    return int(_TCP_INFO_UNACKED.unpack_from(info, _UNACKED_OFFSET)[0])


def _name(sock: socket.socket) -> str:
    try:
        host, port = sock.getsockname()[:2]
    except OSError:
        return "a closed listener"
    return f"{host}:{port}"


def needs_accept_catch_up(loop: asyncio.AbstractEventLoop) -> bool:
    """True for libuv-based loops (uvloop); the stdlib loops accept in batches already."""
    return type(loop).__module__.startswith("uvloop")
