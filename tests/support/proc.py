"""The `veloxy` command as a child process: start, wait for the listening line, strict stop.

`VeloxyProcess` runs `python -m veloxy ARGS` with the repo's src/ on PYTHONPATH (so the
suite works without installing the package) and the event loop chosen by VELOXY_LOOP.
A thread drains stderr continuously (a full pipe would stall the proxy) and keeps every
line for failure messages.

Set VELOXY_TEST_COMMAND to run the suite against another implementation of the same
command line (shell words, e.g. "python /tmp/other/proxy.py"); the default is
"<this python> -m veloxy".

What /proc says about it (its tree, memory, sockets) comes from veloxy.lab.procs, the
lab's /proc readers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from veloxy.lab.procs import child_pids, session_members, status_kib, tree_pids

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

# What the stdlib loop (and uvloop) print when a callback or task fails with nobody to
# handle it: a stray exception is a bug even if every response was right (uvloop's test
# base fails a test on any of them).
STRAY_EXCEPTION_MARKERS = (
    "Task exception was never retrieved",
    "Exception in callback",
    "Task was destroyed but it is pending",
    "Traceback (most recent call last)",
)

_LISTEN_RE = re.compile(r"listening on (\S+):(\d+)\s*$")


try:  # looked up once here: after fork, the child only makes the call
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL me if the test process dies (Linux
    PR_SET_PDEATHSIG), so a test run that is killed never leaves a proxy behind."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG


def _limited(nofile: int) -> Callable[[], None]:
    def preexec() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        _die_with_parent()
    return preexec


_live: set[VeloxyProcess] = set()


@atexit.register
def _kill_live() -> None:
    """Last resort at interpreter exit: end any veloxy process a teardown did not stop."""
    for proc in list(_live):
        proc.kill()


def base_command() -> list[str]:
    override = os.environ.get("VELOXY_TEST_COMMAND")
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "veloxy"]


def child_env(loop: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if loop:
        # "asyncio+python": the stdlib loop with the Python parsers alone, as on a machine
        # where the C fast lane (h1/_fastpath.c) could not be built
        loop, _, parsers = loop.partition("+")
        env["VELOXY_LOOP"] = loop
        if parsers == "python":
            env["VELOXY_PURE_PYTHON"] = "1"
    env.update(extra or {})
    return env


class VeloxyProcess:
    """One `veloxy` process (serve or origin)."""

    def __init__(self, args: list[str], loop: str | None, ready_prefix: str = "veloxy listening on",
                 env: dict[str, str] | None = None, cwd: str | None = None,
                 nofile: int | None = None) -> None:
        """`nofile`: the child's RLIMIT_NOFILE (soft and hard), as `ulimit -n` would set."""
        self.args = args
        self.argv = base_command() + args
        self.ready_prefix = ready_prefix
        self.lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.listeners: list[tuple[str, int]] = []
        self._cond = threading.Condition()
        self.returncode: int | None = None
        self.stopped = False
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=child_env(loop, env), cwd=cwd or str(REPO), start_new_session=True,
            preexec_fn=_die_with_parent if nofile is None else _limited(nofile),
        )
        _live.add(self)
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.lines, True),
                             daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout_lines, False),
                             daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- output ----------------------------------------------------------------------------
    def _drain(self, stream, sink: list[str], is_stderr: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                sink.append(line)
                if is_stderr and line.startswith(self.ready_prefix):
                    m = _LISTEN_RE.search(line)
                    if m:
                        self.listeners.append((m.group(1), int(m.group(2))))
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._cond.notify_all()

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines + self.stdout_lines)

    def describe(self) -> str:
        return (f"command: {shlex.join(self.argv)}\nexit code: {self.proc.poll()}\n"
                f"--- stderr ---\n{self.stderr[-6000:]}\n--- stdout ---\n"
                + "\n".join(self.stdout_lines)[-2000:])

    # -- lifecycle -------------------------------------------------------------------------
    def wait_ready(self, timeout: float = READY_TIMEOUT) -> VeloxyProcess:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.listeners:
                if self.proc.poll() is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            ready = bool(self.listeners)
        if not ready:
            self.kill()
            raise AssertionError(f"no '{self.ready_prefix} HOST:PORT' line within {timeout}s\n"
                                 + self.describe())
        return self

    @property
    def port(self) -> int:
        return self.listeners[0][1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._threads:
            t.join(2)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the process and, through its session, anything it started."""
        _live.discard(self)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._kill_leftovers()
        self.stopped = True

    def _kill_leftovers(self) -> None:
        # Workers that outlived their supervisor stay in its session: end them too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float = STOP_TIMEOUT, strict: bool = True,
             check_stray: bool = True) -> int | None:
        """SIGTERM and wait. With `strict`, raise AssertionError unless the exit code is 0
        within `timeout` (killing the process then) and, with `check_stray`, unless stderr is
        free of unhandled loop exceptions."""
        if self.stopped:
            return self.returncode
        _live.discard(self)
        self.send_signal(signal.SIGTERM)
        rc = self.wait(timeout)
        self.stopped = True
        survivors = self.leftover_pids()
        if rc is None:
            self.kill()
            if strict:
                raise AssertionError(f"veloxy did not exit within {timeout}s of SIGTERM\n"
                                     + self.describe())
            return None
        self._kill_leftovers()
        if strict:
            assert rc == 0, f"veloxy exited with {rc} after SIGTERM (expected 0)\n{self.describe()}"
            assert not survivors, (f"processes of veloxy's session still alive after it exited: "
                                   f"{survivors}\n{self.describe()}")
            if check_stray:
                self.assert_no_stray_exceptions()
        return rc

    def expect_exit(self, timeout: float, code: int = 0) -> None:
        """Wait for the process to exit by itself (after a signal the test sent) and assert
        its exit code; kill it on failure."""
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            raise AssertionError(f"veloxy still running {timeout}s later\n" + self.describe())
        self.stopped = True
        _live.discard(self)
        self._kill_leftovers()
        assert rc == code, f"veloxy exited with {rc}, expected {code}\n{self.describe()}"
        self.assert_no_stray_exceptions()

    def assert_no_stray_exceptions(self) -> None:
        text = self.stderr
        found = [m for m in STRAY_EXCEPTION_MARKERS if m in text]
        assert not found, f"unhandled exception(s) in veloxy's stderr: {found}\n{self.describe()}"

    def leftover_pids(self) -> list[int]:
        """Pids still in veloxy's session (it is started with setsid), other than zombies."""
        return [pid for pid in session_members(self.proc.pid) if pid != self.proc.pid]

    # -- /proc -----------------------------------------------------------------------------
    def tree(self) -> list[int]:
        return tree_pids(self.pid)

    def children(self) -> list[int]:
        return child_pids(self.pid)

    def rss_kib(self) -> int:
        """Resident memory of the whole process tree (supervisor and workers), KiB."""
        return sum(status_kib(p, "VmRSS") or 0 for p in self.tree())

    def hwm_kib(self) -> int:
        """Peak resident memory (VmHWM) summed over the process tree, KiB."""
        return sum(status_kib(p, "VmHWM") or 0 for p in self.tree())


@contextlib.contextmanager
def running_origin(loop: str | None) -> Iterator[VeloxyProcess]:
    """`veloxy origin --listen 127.0.0.1:0` on `loop` (None: the default one), ready;
    stopped, or killed, after."""
    proc = VeloxyProcess(["origin", "--listen", "127.0.0.1:0"], loop,
                         ready_prefix="veloxy origin listening on")
    try:
        proc.wait_ready()
    except AssertionError:
        proc.kill()
        raise
    try:
        yield proc
    finally:
        if proc.stop(strict=False) is None:
            proc.kill()


def loaded_libraries(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


class RssSampler:
    """Samples the resident memory of a process tree every `interval` seconds in a thread.

    with RssSampler(proc) as s: ...   then s.max_kib, s.samples
    """

    def __init__(self, proc: VeloxyProcess, interval: float = 0.02) -> None:
        self.proc = proc
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.proc.rss_kib())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        self.samples.append(self.proc.rss_kib())

    @property
    def max_kib(self) -> int:
        return max(self.samples) if self.samples else 0
