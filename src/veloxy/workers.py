"""Several worker processes on the same listeners: Python's answer to GOMAXPROCS.

One Python process runs one core's worth of proxying (the GIL), so `workers: N` forks N
processes, each with its own event loop and its own SO_REUSEPORT socket per listener (see
net/listen.py). The supervisor does no I/O of its own: it reserves the addresses, forks the
workers, waits until each reports ready, forwards SIGTERM/SIGINT/SIGHUP to them, and forks
a replacement for a worker that dies unasked (with a back-off, and giving up on a crash
loop).

POSIX only (fork and SO_REUSEPORT). On Windows `veloxy serve` runs a single process.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from veloxy.net.listen import bind_socket, format_address, listen_socket

log = logging.getLogger("veloxy.workers")

CAN_FORK = hasattr(os, "fork") and sys.platform != "win32"
READY_TIMEOUT = 30.0
# A worker that dies this many times within CRASH_WINDOW seconds is not restarted again.
CRASH_LIMIT = 10
CRASH_WINDOW = 60.0

WorkerMain = Callable[[list[socket.socket], Callable[[], None]], None]


class WorkerInfo:
    """Who this process is, set in each worker before `worker_main` runs (None in a process
    that is not a worker): its index (stable across restarts), the worker count and the
    supervisor's pid. The admin side uses them to find and signal its siblings."""

    def __init__(self, index: int, count: int, supervisor: int) -> None:
        self.index = index
        self.count = count
        self.supervisor = supervisor


current: WorkerInfo | None = None


class Supervisor:
    def __init__(self, addresses: list[tuple[str, int]], workers: int,
                 worker_main: WorkerMain, announce: Callable[[str], None],
                 listen_options: dict[str, Any] | None = None,
                 on_reload: Callable[[], None] | None = None) -> None:
        """`on_reload`: called in the supervisor on SIGHUP, before the signal goes on to
        the workers (the command line re-reads the config there, for the workers it will
        start later)."""
        self._requested = addresses
        self._on_reload = on_reload
        #: listen_socket's keywords for each worker's sockets (backlog, buffer sizes).
        self._listen_options = listen_options or {}
        self._count = workers
        self._worker_main = worker_main
        self._announce = announce
        self._children: dict[int, int] = {}  # pid -> worker index
        self._stopping = False
        self._crashes: list[float] = []

    def run(self) -> int:
        reserved = [bind_socket(host, port, reuse_port=True) for host, port in self._requested]
        self._addresses = [sock.getsockname()[:2] for sock in reserved]
        self._reserved = reserved
        ready_read, self._ready_write = os.pipe()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._forward)
        for index in range(self._count):
            self._spawn(index)
        if not self._await_ready(ready_read):
            self._stop_all()
            self._reap_all(5.0)
            return 1
        for sock in reserved:
            self._announce(format_address(sock))
        return self._watch()

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid:
            self._children[pid] = index
            return
        # In the child: default signal dispositions; the worker's loop installs its own.
        global current
        current = WorkerInfo(index, self._count, os.getppid())
        code = 0
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            # Ignored until the worker's loop installs its reload handler: a SIGHUP that
            # arrives during start-up must not kill the worker.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            for sock in self._reserved:
                sock.close()
            sockets = [listen_socket(host, port, reuse_port=True, **self._listen_options)
                       for host, port in self._addresses]
            ready_fd = self._ready_write
            self._worker_main(sockets, lambda: _signal_ready(ready_fd))
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)

    def _await_ready(self, ready_read: int) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        seen = 0
        while seen < self._count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping:
                log.error("workers did not start within %gs", READY_TIMEOUT)
                return False
            readable, _, _ = select.select([ready_read], [], [], min(remaining, 0.2))
            if readable:
                seen += len(os.read(ready_read, 64))
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                self._children.pop(pid, None)
                log.error("worker %d exited during start-up (%s)", pid, _describe(status))
                return False
        return True

    def _watch(self) -> int:
        while self._children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = self._children.pop(pid, None)
            if index is None or self._stopping:
                continue
            log.warning("worker %d died (%s); starting a new one", pid, _describe(status))
            now = time.monotonic()
            self._crashes = [t for t in self._crashes if now - t < CRASH_WINDOW] + [now]
            if len(self._crashes) > CRASH_LIMIT:
                log.error("workers keep dying (%d in %gs): giving up", len(self._crashes),
                          CRASH_WINDOW)
                self._stop_all()
                self._reap_all(10.0)
                return 1
            time.sleep(min(0.1 * len(self._crashes), 2.0))
            self._spawn(index)
        return 0

    def _forward(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        elif signum == signal.SIGHUP and self._on_reload is not None:
            try:
                self._on_reload()
            except Exception:
                log.exception("reloading the config in the supervisor failed")
        for pid in list(self._children):
            try:
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except ProcessLookupError:
                pass

    def _stop_all(self) -> None:
        self._stopping = True
        for pid in list(self._children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _reap_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._children and time.monotonic() < deadline:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid:
                self._children.pop(pid, None)
            else:
                time.sleep(0.05)
        for pid in list(self._children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.WEXITSTATUS(status)}"


def _signal_ready(fd: int) -> None:
    """A worker tells the supervisor it is serving: one byte on the readiness pipe."""
    os.write(fd, b"r")
