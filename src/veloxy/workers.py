"""Several worker processes on the same listeners: Python's answer to GOMAXPROCS.

One Python process runs one core's worth of proxying (the GIL), so `workers: N` forks N
processes, each with its own event loop and its own SO_REUSEPORT socket per listener (see
net/listen.py). The supervisor does no I/O of its own: it reserves the addresses, forks the
workers, waits until each reports ready, forwards SIGTERM/SIGINT/SIGHUP to them, and forks
a replacement for a worker that dies unasked (with a back-off, and giving up on a crash
loop).

Two ways to start a worker (config `workers_mode`):

- fork (`Supervisor`, POSIX): the worker is a copy of the supervisor and opens its own
  SO_REUSEPORT socket per listener, so the kernel spreads connections over the workers.
- spawn (`SpawnSupervisor`, the only way on Windows, selectable anywhere): the worker is a
  fresh interpreter running the same command line (`python -m veloxy serve ...`) with
  SPAWNED_ENV set. The supervisor opens the listening sockets (one set per worker with
  SO_REUSEPORT, else one shared set) and hands them over on the worker's stdin (`Handoff`:
  the descriptor number, inherited through pass_fds on POSIX; socket.share()'s bytes on
  Windows), with the worker's index and the latest config. The same pipe then carries the
  supervisor's commands ("stop", "reload": no signals between processes on Windows); the
  worker answers "ready" on its stdout.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from veloxy.net.listen import HAS_REUSEPORT, bind_socket, format_address, listen_socket

log = logging.getLogger("veloxy.workers")

CAN_FORK = hasattr(os, "fork") and sys.platform != "win32"
#: workers_mode "auto": fork where the platform can, spawn on Windows.
AUTO_MODE = "fork" if CAN_FORK else "spawn"
#: In a spawned worker's environment: its Handoff waits on stdin.
SPAWNED_ENV = "VELOXY_SPAWNED_WORKER"
READY_TIMEOUT = 30.0
# A worker that dies this many times within CRASH_WINDOW seconds is not restarted again.
CRASH_LIMIT = 10
CRASH_WINDOW = 60.0

WorkerMain = Callable[[list[socket.socket], Callable[[], None]], None]


class CrashBudget:
    """How often workers may die before the supervisor gives up (both worker modes)."""

    def __init__(self) -> None:
        self._times: list[float] = []

    def spent(self) -> bool:
        """Note a crash; True when more than CRASH_LIMIT fell within CRASH_WINDOW (the
        error is logged), else wait a little longer after each (at most 2 s) and go on."""
        now = time.monotonic()
        self._times = [t for t in self._times if now - t < CRASH_WINDOW] + [now]
        if len(self._times) > CRASH_LIMIT:
            log.error("workers keep dying (%d in %gs): giving up", len(self._times),
                      CRASH_WINDOW)
            return True
        time.sleep(min(0.1 * len(self._times), 2.0))
        return False


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
        self._crashes = CrashBudget()

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
            if self._crashes.spent():
                self._stop_all()
                self._reap_all(10.0)
                return 1
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


# -- spawn mode ------------------------------------------------------------------------------

#: share(listening socket, worker pid) -> bytes the worker turns back into the socket with
#: the matching FromShare. Injected in tests; `platform_sharing()` picks the real pair.
Share = Callable[[socket.socket, int], bytes]
FromShare = Callable[[bytes], socket.socket]


def _share_by_inheritance(sock: socket.socket, _pid: int) -> bytes:
    return str(sock.fileno()).encode()  # the same number in the worker (pass_fds)


def _from_inherited(data: bytes) -> socket.socket:
    return socket.socket(fileno=int(data))


def _share_windows(sock: socket.socket, pid: int) -> bytes:
    return sock.share(pid)  # type: ignore[attr-defined, unused-ignore]  # Windows only


def _from_share_windows(data: bytes) -> socket.socket:
    return socket.fromshare(data)  # type: ignore[attr-defined, unused-ignore]  # Windows only


def platform_sharing(platform: str = sys.platform) -> tuple[Share, FromShare, bool]:
    """(share, fromshare, inherit): how this platform hands a listening socket to a spawned
    worker; `inherit`: the descriptors go through Popen's pass_fds."""
    if platform == "win32":
        return _share_windows, _from_share_windows, False
    return _share_by_inheritance, _from_inherited, True


@dataclass
class Handoff:
    """What a spawned worker is given on stdin before it serves."""

    index: int
    count: int
    supervisor: int
    sockets: list[bytes]
    #: run_servers' state for the worker (the latest config, the admin control directory).
    extra: Any = None
    sharing: str = field(default=sys.platform)


def write_handoff(stream: IO[bytes], handoff: Handoff) -> None:
    data = pickle.dumps(handoff)
    stream.write(struct.pack("!I", len(data)) + data)
    stream.flush()


def read_handoff(stream: IO[bytes]) -> Handoff:
    (size,) = struct.unpack("!I", _read_exactly(stream, 4))
    handoff = pickle.loads(_read_exactly(stream, size))
    if not isinstance(handoff, Handoff):
        raise RuntimeError(f"not a worker handoff: {type(handoff).__name__}")
    return handoff


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise RuntimeError("the supervisor closed the handoff pipe early")
    return data


def is_spawned_worker() -> bool:
    return os.environ.get(SPAWNED_ENV) == "1"


def run_spawned_worker(worker_main: WorkerMain, adopt: Callable[[Any], None] | None = None,
                       stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None,
                       fromshare: FromShare | None = None) -> int:
    """The spawned worker's side: read the Handoff, take the sockets, follow the
    supervisor's commands on stdin (EOF: the supervisor is gone, stop), serve."""
    global current
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    # Ignored until the worker's loop installs its reload handler (as in fork mode).
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    handoff = read_handoff(stdin)
    os.environ.pop(SPAWNED_ENV, None)  # not for whatever this process starts
    current = WorkerInfo(handoff.index, handoff.count, handoff.supervisor)
    if adopt is not None:
        adopt(handoff.extra)
    take = fromshare or platform_sharing(handoff.sharing)[1]
    sockets = [take(data) for data in handoff.sockets]
    threading.Thread(target=_follow_commands, args=(stdin,), daemon=True,
                     name="veloxy-supervisor-commands").start()

    def ready() -> None:
        stdout.write(b"ready\n")
        stdout.flush()

    worker_main(sockets, ready)
    return 0


def _follow_commands(stdin: IO[bytes]) -> None:
    """Commands become this process's own signals, which serve() and the admin runtime
    already handle (signal.raise_signal works on Windows too, where os.kill cannot signal)."""
    for line in iter(stdin.readline, b""):
        command = line.strip()
        if command == b"stop":
            signal.raise_signal(signal.SIGTERM)
            return  # nothing more to do; the EOF that follows must not signal again
        if command == b"reload" and hasattr(signal, "SIGHUP"):
            signal.raise_signal(signal.SIGHUP)
    signal.raise_signal(signal.SIGTERM)  # EOF: the supervisor is gone


class SpawnSupervisor:
    """Spawn-mode supervisor: the same duties as `Supervisor` (readiness, forwarding stop
    and reload, restarting a worker that dies unasked, giving up on a crash loop), written
    with Popen and pipes only, so that it runs on Windows as on Linux."""

    def __init__(self, addresses: list[tuple[str, int]], workers: int, argv: list[str],
                 announce: Callable[[str], None],
                 listen_options: dict[str, Any] | None = None,
                 on_reload: Callable[[], None] | None = None,
                 extra: Callable[[], Any] | None = None,
                 sharing: tuple[Share, FromShare, bool] | None = None) -> None:
        """`argv`: the worker's command line (`python -m veloxy serve ...`); `extra()`: the
        state each new worker gets in its Handoff; `sharing`: platform_sharing()'s triple
        (injected in tests)."""
        self._requested = addresses
        self._count = workers
        self._argv = argv
        self._announce = announce
        self._listen_options = listen_options or {}
        self._on_reload = on_reload
        self._extra = extra or (lambda: None)
        self._share, _, self._inherit = sharing or platform_sharing()
        self._children: dict[int, tuple[subprocess.Popen[bytes], threading.Event]] = {}
        self._stopping = False
        self._crashes = CrashBudget()

    def run(self) -> int:
        # Where SO_REUSEPORT spreads connections (Linux), each worker gets sockets of its own,
        # made here and kept across its restarts; elsewhere (Windows) all share one per
        # address, and the workers accept from one queue.
        first = [listen_socket(host, port, reuse_port=HAS_REUSEPORT, **self._listen_options)
                 for host, port in self._requested]
        self._sockets = list(first)
        self._sets = [first]
        if HAS_REUSEPORT:
            bound = [sock.getsockname()[:2] for sock in first]
            for _ in range(1, self._count):
                own = [listen_socket(host, port, reuse_port=True, **self._listen_options)
                       for host, port in bound]
                self._sets.append(own)
                self._sockets += own
        signals = [signal.SIGTERM, signal.SIGINT]
        signals += [getattr(signal, name) for name in ("SIGHUP", "SIGBREAK")
                    if hasattr(signal, name)]
        for sig in signals:
            signal.signal(sig, self._forward)
        try:
            for index in range(self._count):
                self._spawn(index)
            if not self._await_ready():
                self._stop_all()
                self._reap_all(5.0)
                return 1
            for sock in first:
                self._announce(format_address(sock))
            return self._watch()
        finally:
            for sock in self._sockets:
                sock.close()

    def _spawn(self, index: int) -> None:
        env = dict(os.environ)
        env[SPAWNED_ENV] = "1"
        handed = self._sets[index % len(self._sets)]
        fds = [sock.fileno() for sock in handed] if self._inherit else []
        proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=env, pass_fds=fds)
        ready = threading.Event()
        threading.Thread(target=_watch_output, args=(proc, ready), daemon=True,
                         name=f"veloxy-worker-{index}-output").start()
        self._children[index] = (proc, ready)
        assert proc.stdin is not None
        try:
            write_handoff(proc.stdin, Handoff(
                index, self._count, os.getpid(),
                [self._share(sock, proc.pid) for sock in handed], self._extra()))
        except (BrokenPipeError, OSError) as exc:
            log.error("worker %d: the handoff failed: %s", proc.pid, exc)

    def _await_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(ready.is_set() for _, ready in self._children.values()):
            if time.monotonic() > deadline or self._stopping:
                log.error("workers did not start within %gs", READY_TIMEOUT)
                return False
            for index, (proc, _) in list(self._children.items()):
                if proc.poll() is not None:
                    del self._children[index]
                    log.error("worker %d exited during start-up (%s)", proc.pid,
                              _describe_code(proc.returncode))
                    return False
            time.sleep(0.02)
        return True

    def _watch(self) -> int:
        while self._children:
            time.sleep(0.05)
            for index, (proc, _) in list(self._children.items()):
                if proc.poll() is None:
                    continue
                del self._children[index]
                if self._stopping:
                    continue
                log.warning("worker %d died (%s); starting a new one", proc.pid,
                            _describe_code(proc.returncode))
                if self._crashes.spent():
                    self._stop_all()
                    self._reap_all(10.0)
                    return 1
                self._spawn(index)
        return 0

    def _forward(self, signum: int, _frame: object) -> None:
        if signum == getattr(signal, "SIGHUP", None):
            if self._on_reload is not None:
                try:
                    self._on_reload()
                except Exception:
                    log.exception("reloading the config in the supervisor failed")
            self._tell_all(b"reload")
            return
        self._stopping = True
        self._tell_all(b"stop")

    def _tell_all(self, command: bytes) -> None:
        for proc, _ in list(self._children.values()):
            try:
                assert proc.stdin is not None
                proc.stdin.write(command + b"\n")
                proc.stdin.flush()
            except (OSError, ValueError, RuntimeError):
                # exiting (_watch sees it), or the signal came while _spawn was writing
                # this very pipe (a reentrant write): it gets the command from its EOF
                pass

    def _stop_all(self) -> None:
        self._stopping = True
        self._tell_all(b"stop")

    def _reap_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc, _ in list(self._children.values()):
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
        self._children.clear()


def _watch_output(proc: subprocess.Popen[bytes], ready: threading.Event) -> None:
    """A spawned worker's stdout: its "ready" line, then anything else it prints, passed on
    to the supervisor's stdout."""
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, b""):
        if line == b"ready\n" and not ready.is_set():
            ready.set()
            continue
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


def _describe_code(returncode: int) -> str:
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
