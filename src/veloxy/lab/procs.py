"""Child processes of the performance lab and what /proc says about them.

Why one module: `veloxy demo`, `veloxy suite` and benchmarks/proxy_compare.py all start
servers, wait until they listen, charge them the CPU they used and stop them without leaving
a stray process behind (also on Ctrl-C). Two shapes are kept:

- `Child`: `python -m veloxy ARGS`, ready when it prints "listening on HOST:PORT" (port 0
  resolves in the child, so nothing races for a port); stderr kept in memory.
- `Proc`: any command (nginx, haproxy, a Go binary, veloxy) in its own session and process
  group, output to a log file, optionally pinned with taskset; stopped with TERM then KILL
  to the whole group, and only reported stopped when no member is left.

CPU and memory come from /proc/PID/stat and /proc/PID/status (summed over the process tree,
so every worker counts), psutil where /proc is missing, None when neither is there.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
READY_TIMEOUT = 15.0
_LISTEN = re.compile(r"listening on (\S+):(\d+)\s*$")
_log = logging.getLogger("veloxy.lab")


class StartError(RuntimeError):
    """A child did not come up; the message says why, with the tail of its output."""


# -- `python -m veloxy ...` ---------------------------------------------------------------------


class Child:
    """`python -m veloxy ARGS` in its own session; stderr drained in a thread.

    `prefix` is the start of the line announcing the port ("veloxy listening on").
    `launcher` replaces `-m veloxy` (another entry point, e.g. a profiler's wrapper).
    """

    def __init__(self, args: list[str], ready_prefix: str, *,
                 env: dict[str, str] | None = None, cpus: Sequence[int] | None = None,
                 launcher: Sequence[str] = ("-m", "veloxy")) -> None:
        self.args = args
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._prefix = ready_prefix
        full_env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        command = [sys.executable, *launcher, *args]
        if cpus:
            command = ["taskset", "-c", ",".join(map(str, cpus)), *command]  # execs: same pid
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=full_env,
            start_new_session=True,  # Ctrl-C in the terminal is ours to handle, not theirs
        )
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            match = _LISTEN.search(line)
            if match and line.startswith(self._prefix) and not self._ready.is_set():
                self.port = int(match.group(2))
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> int:
        self._ready.wait(timeout)
        if not self.port:
            tail = " | ".join(self.lines[-3:]) or f"exit code {self.proc.poll()}"
            raise StartError(f"`veloxy {' '.join(self.args)}` did not start: {tail}")
        return self.port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    self.proc.kill()
                self.proc.wait(5)
        _kill_group_leftovers(self.proc.pid)
        self._thread.join(2)


def _kill_group_leftovers(pgid: int) -> None:
    """Workers of a supervisor that died first would linger: KILL what is left of the group."""
    if group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- any command --------------------------------------------------------------------------------


class Proc:
    """A child process running in its own process group, output to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *,
                 env: dict[str, str] | None = None, cpu: int | str | None = None,
                 cwd: Path | None = None, registry: list[Proc] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cpu = cpu
        self.cwd = cwd
        self.registry = registry
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def command(self) -> list[str]:
        if self.cpu is None:
            return self.argv
        return ["taskset", "-c", str(self.cpu), *self.argv]  # taskset execs: same pid

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._log.write(f"$ {shlex.join(self.command)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.cwd, start_new_session=True,
        )
        if self.registry is not None:
            self.registry.append(self)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def wait_ready(self, port: int, timeout: float, pattern: str | None = None,
                   host: str = HOST) -> str | None:
        """Wait until the port accepts connections (and pattern shows in the log).

        Returns None when ready, else a reason."""
        deadline = time.monotonic() + timeout
        port_ok = False
        while time.monotonic() < deadline:
            if not self.alive():
                assert self.popen is not None
                return f"exited with code {self.popen.returncode}"
            if not port_ok:
                try:
                    with socket.create_connection((host, port), 0.5):
                        port_ok = True
                except OSError:
                    pass
            if port_ok and (
                pattern is None or re.search(pattern, self.log_path.read_text(errors="replace"))
            ):
                return None
            time.sleep(0.05)
        return f"not ready after {timeout:.0f}s (port {'open' if port_ok else 'closed'})"

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen is None:
            return
        pgid = self.popen.pid  # session leader: pgid == pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 2.0)
            while time.monotonic() < deadline:
                self.popen.poll()
                if self.popen.returncode is not None and not group_members(pgid):
                    break
                time.sleep(0.05)
            else:
                if sig == signal.SIGTERM:
                    _log.warning("%s: still running %.0fs after SIGTERM, sending SIGKILL",
                                 self.name, timeout)
                continue
            break
        try:
            self.popen.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.registry is not None and self in self.registry:
            self.registry.remove(self)


def stop_all(procs: Sequence[subprocess.Popen[Any]], grace: float = 10.0) -> None:
    """Terminate what is still running of `procs`, last started first; kill what does not
    exit within `grace` seconds (the benchmarks' clean-up)."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def free_port(host: str = HOST) -> int:
    """A port free right now (a child binding it later may race; prefer port 0 when the
    child can report what it bound, as `veloxy` does)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- /proc --------------------------------------------------------------------------------------


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].decode().split()


def all_pids() -> Iterator[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _live_where(field: int, value: int) -> list[int]:
    """Live (non-zombie) processes whose stat field `field` (after the name) is `value`."""
    out = []
    for pid in all_pids():
        f = proc_stat_fields(pid)
        if f is not None and int(f[field]) == value and f[0] != "Z":
            out.append(pid)
    return out


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid."""
    return _live_where(2, pgid)


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session sid (a setsid child and all it started)."""
    return _live_where(3, sid)


def child_pids(parent: int) -> list[int]:
    """Live (non-zombie) processes whose parent is `parent`, sorted."""
    return sorted(_live_where(1, parent))


def tree_pids(root: int) -> list[int]:
    """root and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        f = proc_stat_fields(pid)
        if f is not None:
            children.setdefault(int(f[1]), []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _clk_tck() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


def tree_cpu_seconds(root: int, pids: Sequence[int] | None = None) -> float:
    """utime+stime+cutime+cstime of root and all its live descendants, in seconds.

    A descendant that exited and was reaped moved its times into its parent's cutime/cstime, so
    the sum over the live tree is monotonic as long as exits are reaped inside the tree."""
    ticks = 0
    for pid in pids if pids is not None else tree_pids(root):
        f = proc_stat_fields(pid)
        if f is not None:
            ticks += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    return ticks / _clk_tck()


def cpu_seconds(pid: int) -> float | None:
    """utime+stime of one process, from /proc (psutil elsewhere), None when unknown."""
    f = proc_stat_fields(pid)
    if f is not None:
        try:
            return (int(f[11]) + int(f[12])) / _clk_tck()
        except (ValueError, IndexError):
            pass
    try:
        import psutil  # type: ignore[import-not-found,import-untyped,unused-ignore]  # psutil is optional and untyped

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except Exception:
        return None


def status_kib(pid: int, key: str) -> int | None:
    """A kB line of /proc/PID/status (VmRSS, VmHWM, ...), None when unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident memory of one process (VmRSS), None when unknown."""
    kib = status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024


def tree_rss_bytes(root: int, pids: Sequence[int] | None = None) -> int:
    """Resident memory summed over the tree (shared pages of forked workers count once per
    worker, as `ps` shows them: an upper bound)."""
    return sum(rss_bytes(pid) or 0 for pid in (pids if pids is not None else tree_pids(root)))


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """Inodes of the sockets the processes `pids` hold open (from /proc/PID/fd)."""
    out: set[int] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(int(target[8:-1]))
    return out


def established_inodes(local_port: int | None = None, remote_port: int | None = None
                       ) -> set[int]:
    """Inodes of ESTABLISHED TCP sockets (IPv4 and IPv6) with that local and/or remote
    port, from /proc/net/tcp and tcp6."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "01":  # 01: ESTABLISHED
                continue
            local, remote = (int(address.rsplit(":", 1)[1], 16) for address in f[1:3])
            if local_port in (None, local) and remote_port in (None, remote):
                out.add(int(f[9]))
    return out


def cpu_model() -> str | None:
    """The CPU's model name, from /proc/cpuinfo; None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def time_wait_count() -> int | None:
    try:
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("tw") + 1])
    except (OSError, ValueError):
        pass
    return None


class Sampler(threading.Thread):
    """CPU seconds and RSS of a process tree every `interval` seconds, in a thread.

    The tree's pids are looked up again every second (workers restart), not every sample:
    walking /proc is the expensive part. Samples are (monotonic time, cpu seconds, rss bytes).
    """

    def __init__(self, root: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True, name=f"sampler-{root}")
        self.root = root
        self.interval = interval
        self.samples: list[tuple[float, float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        pids: list[int] = []
        refreshed = 0.0
        while True:
            now = time.monotonic()
            if now - refreshed >= 1.0:
                pids, refreshed = tree_pids(self.root), now
            self.samples.append((now, tree_cpu_seconds(self.root, pids),
                                 tree_rss_bytes(self.root, pids)))
            if self._stop_event.wait(self.interval):
                break

    def finish(self) -> list[tuple[float, float, int]]:
        self._stop_event.set()
        self.join(2.0)
        return self.samples

    def summary(self) -> dict[str, Any]:
        """CPU % of one core over time, RSS mean and max (MiB)."""
        s = self.samples
        cpu = [round(100 * (b[1] - a[1]) / (b[0] - a[0]), 1) for a, b in itertools.pairwise(s)
               if b[0] > a[0]]
        rss = [x[2] for x in s if x[2]]
        t0 = s[0][0] if s else 0.0
        return {
            "cpu_percent": cpu,
            "t_s": [round(x[0] - t0, 3) for x in s[1:]],
            "rss_mib_max": round(max(rss) / 2**20, 2) if rss else None,
            "rss_mib_mean": round(sum(rss) / len(rss) / 2**20, 2) if rss else None,
        }
