#!/usr/bin/env python3
"""Compare veloxy against peer reverse proxies, all fronting the same origin, in one run.

What it does
------------
One origin is started (``--origin nginx``, the default: a one-worker nginx whose server block
answers every request with a fixed 100-byte body via ``return 200``; or ``--origin veloxy``:
``python -m veloxy origin``, asked for ``GET /?size=100``).  Then every selected target is started
in front of that same origin:

``direct``      the origin itself (the ceiling of the client side; no proxy in the path)
``veloxy``      ``python -m veloxy serve --listen ... --upstream ... --workers 1``
``veloxy-python`` the same with ``VELOXY_PURE_PYTHON=1``: llhttp alone, without the C fast
                lane of ``h1/_fastpath.c`` (what a machine without a C compiler runs)
``go-default``  ``httputil.NewSingleHostReverseProxy`` with Go's ``DefaultTransport``
                (MaxIdleConnsPerHost = 2), GOMAXPROCS=1 (``benchmarks/peers/goproxy``)
``go-tuned``    the same binary with ``-tuned`` (10000 idle upstream connections kept)
``go-bufpool``  ``-tuned -bufpool``: also reuses the 32 KiB response copy buffer
                (``ReverseProxy.BufferPool``) instead of allocating one per request; what a
                carefully tuned Go proxy does, so the strongest Go baseline
``nginx``       nginx 1 worker, ``upstream { keepalive N }``, proxy_http_version 1.1,
                ``Connection ""``, access_log off
``haproxy``     HAProxy ``nbthread 1``, mode http, ``http-reuse always``

A target whose command is missing or fails to start (for example ``veloxy serve`` while it is
still being written) is skipped with a message; the others still run.

For each repetition, for each scenario, every target is driven once by ``wrk -t1`` (a warm-up of
``--warmup`` then a measured run of ``--duration``).  Targets are interleaved, and the order is
rotated each repetition, so slow drift of the machine (thermal, noisy neighbours, TIME_WAIT build
up) hits all targets alike instead of biasing whichever runs last.

Scenarios (``--scenarios``):

``keepalive-c64``    keep-alive, 64 connections
``keepalive-c1000``  keep-alive, 1000 connections
``close-c64``        ``Connection: close`` on every request, 64 connections (a TCP connect per
                     request on the client side; the proxy should still reuse upstream connections)
``browser-c64``      keep-alive, 64 connections, 10 browser-like request headers (~600 bytes)
``body16k-c64``      keep-alive, 64 connections, 16 KiB responses (GET /?size=16384: the nginx
                     origin serves a file of that size, ``veloxy origin`` makes the body)
``body1m-c64``       the same with 1 MiB responses
``post4k-c64``       keep-alive, 64 connections, POST with a 4 KiB body (a wrk Lua script)
``rate10k-c1000``    the study's fixed rate: 1000 connections, 10,000 req/s in total, driven by
                     ``veloxy bench -p 1 -R`` instead of wrk (latency from each request's
                     intended send time, coordinated omission corrected)

Measurements per cell
---------------------
* requests/s, p50/p99/max latency, socket errors and non-2xx/3xx count: parsed from
  ``wrk --latency`` output.
* proxy CPU µs per request: utime+stime+cutime+cstime summed over the proxy process and every
  descendant (``/proc/PID/stat``; cutime/cstime carry children that exited and were reaped during
  the run), sampled right before and right after the measured wrk run, divided by the number of
  requests wrk completed.  Resolution is one clock tick (10 ms) per process, i.e. well under 1 %
  for a 5 s run.  For ``direct`` the column shows the origin's own CPU per request.  Softirq time
  (loopback packet processing) is not charged to any process and so is not included, for any
  target alike; the JSON also has ``proxy_core_us_per_req`` (whole proxy core busy time per
  request), which includes it but also anything else that ran on that core, and
  ``proxy_sys_us_per_req``, the system (kernel) part of the CPU column (stime+cstime).
* upstream connections opened during the measured run: with the nginx origin, the exact delta of
  the origin's ``stub_status`` "accepts" counter (only one target is driven at a time, so every
  accept during the run belongs to it; our own status requests are subtracted).  This total
  includes re-opening the upstream connections a proxy dropped when the previous wrk run (the
  warm-up) stopped with requests in flight, so the same counter is also read at 20 % and 90 % of
  the run: "opened/s (steady)" is the churn rate in that window, ~0 for a proxy that pools.
  Independently, the proxy's established sockets to the origin port are sampled (``ss``, else
  ``/proc/net/tcp``, matched to the socket inodes in ``/proc/PID/fd`` of the proxy tree) every
  ``--conn-sample-interval`` seconds and at the window marks: "held" is the count at 90 % of the
  run (under load); with ``--origin veloxy`` (no stub_status) the "opened" columns are distinct
  new sockets seen by sampling, lower bounds.
* CPU busy % of the proxy core and of the client core (``/proc/stat``), and the proxy's own CPU
  as % of one core, to show which side saturated.

Reported: medians over repetitions plus [min-max] for req/s and CPU/req, and the ratio of each
target's CPU/req to the references (``--reference``, default go-tuned and nginx).

CPU pinning (``--pin split``, the default on machines with >= 2 CPUs)
---------------------------------------------------------------------
The machine this was written for has 2 cores.  Three parties want a core: the load generator,
the origin and the proxy under test.  The proxy is what is measured, so it gets a core to itself
(``--proxy-cpu``, default 1): every proxy target is pinned there, and all of them are configured
for one worker/thread (GOMAXPROCS=1 for Go, nbthread 1, worker_processes 1, --workers 1).  wrk,
the origin and this script share the other core (``--client-cpu``, default 0).  Consequences:

* CPU µs/request is the fair comparison: it does not depend on who saturates first.
* req/s is capped by whichever core saturates first.  A very cheap proxy (nginx, HAProxy) can be
  limited by the client core (wrk + origin) rather than by itself; the "client core %" column
  shows when that happens (close to 100 %).  ``direct`` puts wrk and the origin on one core with
  the proxy core idle, so its req/s is the client-side ceiling, not an upper bound on a proxy.
* ``--pin none`` lets the scheduler place everything (noisier, more realistic for multi-core).

Connection: close and ephemeral ports
-------------------------------------
In ``close-c64`` the server side (the proxy) closes first, so the TIME_WAIT sockets it leaves are
keyed by the proxy's listening port and do not consume the client's ephemeral ports.  A proxy that
closes *upstream* connections itself (go-default: only 2 idle upstream connections kept) leaves
TIME_WAIT on the client side of the upstream connection and can exhaust
``net.ipv4.ip_local_port_range`` (~28k ports, 60 s each); ``net.ipv4.tcp_tw_reuse`` (2 = loopback
only, the default) lets connect() reuse them on loopback.  The TIME_WAIT count at the start of each
cell is recorded in the JSON output; watch for "connect" socket errors.

How to run
----------
From the repository root (wrk and nginx required; go and haproxy optional)::

    python benchmarks/proxy_compare.py                       # all targets, defaults
    python benchmarks/proxy_compare.py --duration 3s --reps 1 --targets direct,nginx,go-tuned
    python benchmarks/proxy_compare.py --json benchmarks/results/compare.json \\
        --markdown benchmarks/results/compare.md

The Markdown report goes to stdout (progress to stderr).  Only 127.0.0.1 is ever contacted.
Every process is started in its own process group and stopped (TERM, then KILL) on exit, errors,
Ctrl-C or SIGTERM.
"""

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # veloxy.lab, without installing the package

# Process management and the peers' configs are shared with `veloxy suite` (veloxy/lab/).
from veloxy.config.values import parse_duration  # noqa: E402  (5s, 1m, 500ms, 1m30s)
from veloxy.lab.peers import (  # noqa: E402
    build_goproxy,
    haproxy_conf,
    nginx_origin_conf,
    nginx_proxy_conf,
)
from veloxy.lab.procs import (  # noqa: E402
    Proc,
    cpu_model,
    established_inodes,
    free_port,
    proc_stat_fields,
    socket_inodes,
    time_wait_count,
    tree_cpu_seconds,
    tree_pids,
)

GOPROXY_SRC = REPO / "benchmarks" / "peers" / "goproxy"
HOST = "127.0.0.1"
BODY_SIZE = 100
REQUEST_PATH = f"/?size={BODY_SIZE}"
STUB_PATH = "/__veloxy_bench_stub_status"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_TARGETS = ("direct", "veloxy", "veloxy-python", "go-default", "go-tuned", "go-bufpool",
               "nginx", "haproxy")

# 100 bytes exactly, no characters special to nginx's config syntax.
NGINX_BODY = ("veloxy benchmark origin body " * 4)[: BODY_SIZE - 1] + "\n"
assert len(NGINX_BODY) == BODY_SIZE

BROWSER_HEADERS: tuple[str, ...] = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9,de;q=0.8",
    "Accept-Encoding: gzip, deflate, br",
    "Cache-Control: no-cache",
    "Upgrade-Insecure-Requests: 1",
    "Sec-Fetch-Dest: document",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-Site: same-origin",
    "Referer: http://127.0.0.1/products/index.html?page=2",
    "Cookie: session=3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c; theme=dark; consent=1; "
    "_ga=GA1.1.123456789.1700000000",
)


def log(msg: str) -> None:
    print(f"[proxy_compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    headers: tuple[str, ...]
    description: str
    #: Response body size: GET /?size=N (the nginx origin serves a file of N bytes for the
    #: sizes of SIZED_BODIES, `veloxy origin` makes them).
    body_size: int = BODY_SIZE
    #: A POST with a body of this many bytes instead of a GET (a wrk Lua script sends it).
    post_size: int = 0
    #: Open loop: `veloxy bench -R rate` instead of wrk, latency from the intended send time.
    rate: int | None = None

    @property
    def path(self) -> str:
        return f"/?size={self.body_size}"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("keepalive-c64", 64, (), "keep-alive, 64 connections"),
        Scenario("keepalive-c1000", 1000, (), "keep-alive, 1000 connections"),
        Scenario(
            "close-c64",
            64,
            ("Connection: close",),
            "`Connection: close` on every request, 64 connections",
        ),
        Scenario(
            "browser-c64",
            64,
            BROWSER_HEADERS,
            f"keep-alive, 64 connections, {len(BROWSER_HEADERS)} browser-like request headers",
        ),
        Scenario("body16k-c64", 64, (), "keep-alive, 64 connections, 16 KiB responses",
                 body_size=16 * 1024),
        Scenario("body1m-c64", 64, (), "keep-alive, 64 connections, 1 MiB responses",
                 body_size=1024 * 1024),
        Scenario("post4k-c64", 64, ("Content-Type: application/octet-stream",),
                 "keep-alive, 64 connections, POST with a 4 KiB body (100-byte responses)",
                 post_size=4096),
        Scenario("rate10k-c1000", 1000, (),
                 "the study's fixed rate: 1000 connections, 10,000 req/s in total "
                 "(`veloxy bench -R`, latency from each request's intended send time)",
                 rate=10_000),
    )
}
#: Response sizes other than BODY_SIZE that the scenarios ask the origin for.
SIZED_BODIES = tuple(sorted({s.body_size for s in SCENARIOS.values()} - {BODY_SIZE}))


# --------------------------------------------------------------------------------------------
# Process management: every child in its own session/process group, all stopped on exit.


REGISTRY: list[Proc] = []  # every started Proc, stopped by stop_all()


def stop_all() -> None:
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave strays
    try:
        for p in reversed(list(REGISTRY)):
            p.stop()
    finally:
        signal.signal(signal.SIGINT, old)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------------
# Measurements from /proc


def tree_sys_seconds(root: int) -> float:
    """stime+cstime of root and its live descendants (tree_cpu_seconds's system part), so that
    a cell can say how its CPU splits between user space and the kernel."""
    ticks = 0
    for pid in tree_pids(root):
        f = proc_stat_fields(pid)
        if f is not None:
            ticks += int(f[12]) + int(f[14])  # stime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        m = re.match(r"cpu(\d+)\s+(.*)", line)
        if m:
            v = [int(x) for x in m.group(2).split()[:8]]
            total = sum(v)
            out[int(m.group(1))] = (total - v[3] - v[4], total)  # minus idle, iowait
    return out


def cpu_busy_pct(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpu: int
                 ) -> float | None:
    if cpu not in before or cpu not in after:
        return None
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return 100.0 * busy / total if total > 0 else None


def busy_now(seconds: float = 1.0) -> dict[int, float]:
    """Per-CPU busy % over the next `seconds` (to check that the machine is idle)."""
    before = cpu_times()
    time.sleep(seconds)
    after = cpu_times()
    return {c: round(v, 1) for c in before if (v := cpu_busy_pct(before, after, c)) is not None}


SS = shutil.which("ss")


def _established_to_port(port: int) -> Iterator[int]:
    """Socket inodes of ESTABLISHED IPv4 TCP connections whose remote port is `port`.

    Uses `ss` (filtered in the kernel through sock_diag: cheap even with tens of thousands of
    TIME_WAIT sockets around after the close scenario), else parses /proc/net/tcp."""
    if SS is not None:
        r = subprocess.run(
            [SS, "-4tnHe", "state", "established", "dport", "=", f":{port}"],
            capture_output=True, text=True, timeout=10,
        )
        if r.returncode == 0:
            yield from (int(inode) for inode in re.findall(r"\bino:(\d+)", r.stdout))
            return
    yield from established_inodes(remote_port=port)


def upstream_sockets(root: int, origin_port: int) -> set[int]:
    """Inodes of ESTABLISHED TCP sockets owned by root's tree whose peer is the origin port."""
    inodes = socket_inodes(tree_pids(root))
    return {ino for ino in _established_to_port(origin_port) if ino in inodes}


class ConnSampler(threading.Thread):
    """Watches upstream connections while wrk runs.

    * If root is given: samples the ESTABLISHED sockets from root's process tree to the origin
      every `interval` seconds (plus at the window marks), to report how many it holds and how
      many distinct new ones appear (a lower bound on connections opened).
    * If `stub` (nginx origin): reads the origin's accepts counter at the two marks of the
      steady-state window, [20 %, 90 %] of the run, so connections re-opened right after start
      (a proxy drops the upstream connections whose requests were in flight when the previous
      wrk run stopped) are told apart from churn that lasts the whole run.
    """

    WINDOW = (0.2, 0.9)

    def __init__(self, root: int | None, origin_port: int, interval: float, duration: float,
                 stub: bool) -> None:
        super().__init__(daemon=True)
        self.root, self.origin_port, self.stub = root, origin_port, stub
        self.start_set = upstream_sockets(root, origin_port) if root is not None else set()
        self.seen: set[int] = set(self.start_set)
        self.max_established = len(self.start_set)
        self.end_count = 0
        self.loaded_count: int | None = None  # established at the 90 % mark, under load
        marks = [f * duration for f in self.WINDOW]
        times = set(marks)
        if interval > 0 and root is not None:
            times |= {k * interval for k in range(1, int(duration / interval) + 1)}
        self.plan = sorted(t for t in times if t < duration)
        self.marks = marks
        self.window_sets: list[set[int]] = []  # socket samples inside the window
        self.window_stub: list[tuple[float, int | None]] = []  # (time, accepts) at the marks
        self._stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        for t in self.plan:
            if self._stop_event.wait(max(0.0, t0 + t - time.monotonic())):
                return
            if t in self.marks and self.stub:  # first: its timing matters most
                self.window_stub.append((time.monotonic(), stub_accepts(self.origin_port)))
            cur = self._sample()
            in_window = self.marks[0] <= t <= self.marks[1]
            if in_window and cur is not None:
                self.window_sets.append(cur)
            if t == self.marks[1] and cur is not None:
                self.loaded_count = len(cur)

    def _sample(self) -> set[int] | None:
        if self.root is None:
            return None
        cur = upstream_sockets(self.root, self.origin_port)
        self.seen |= cur
        self.max_established = max(self.max_established, len(cur))
        return cur

    def finish(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join()
        cur = self._sample()
        self.end_count = len(cur) if cur is not None else 0

    @property
    def new_seen(self) -> int:
        return len(self.seen - self.start_set)

    @property
    def window_seconds(self) -> float | None:
        if len(self.window_stub) == 2:
            return self.window_stub[1][0] - self.window_stub[0][0]
        return None

    @property
    def steady_opened_stub(self) -> int | None:
        """Origin accepts inside the window, minus the status request of the second mark."""
        if len(self.window_stub) == 2:
            a, b = self.window_stub[0][1], self.window_stub[1][1]
            if a is not None and b is not None:
                return b - a - 1
        return None

    @property
    def steady_new_sampled(self) -> int | None:
        if len(self.window_sets) < 2:
            return None
        first = self.window_sets[0]
        return len(set().union(*self.window_sets[1:]) - first)


def stub_accepts(port: int) -> int | None:
    """nginx stub_status 'accepts' of the origin (None if not available)."""
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        conn.request("GET", STUB_PATH, headers={"Connection": "close"})
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(r"server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)", text)
    return int(m.group(1)) if m else None


def http_get(port: int, path: str = REQUEST_PATH) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# wrk


_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"bad wrk time {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """Parse `wrk --latency` text output."""
    res: dict[str, Any] = {}
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+%", out, re.M)
    if m:
        res["lat_avg_ms"], res["lat_max_ms"] = _ms(m.group(1)), _ms(m.group(3))
    for pct, val in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M):
        res[f"p{pct}_ms"] = _ms(val)
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out)
    if m:
        res["requests"] = int(m.group(1))
        res["wrk_seconds"] = _ms(m.group(2) + m.group(3)) / 1e3
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs = [int(x) for x in m.groups()] if m else [0, 0, 0, 0]
    res["err_connect"], res["err_read"], res["err_write"], res["err_timeout"] = errs
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    return res


def post_script(workdir: Path, size: int) -> Path:
    """A wrk Lua script that makes every request a POST with a `size`-byte body."""
    path = workdir / f"post-{size}.lua"
    if not path.exists():
        path.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n')
    return path


def parse_bench_json(path: Path) -> dict[str, Any]:
    """The fields parse_wrk gives, from `veloxy bench --json` (an open-loop run)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    lat = doc["latency"]
    pct = {float(k): v / 1e3 for k, v in lat["percentiles"].items()}  # "50": µs
    errors = doc["errors"]
    res: dict[str, Any] = {
        "requests": doc["requests"]["completed"],
        "rps": doc["requests_per_s"],
        "p50_ms": pct.get(50.0), "p99_ms": pct.get(99.0), "lat_max_ms": lat["max_us"] / 1e3,
        "lat_avg_ms": lat["mean_us"] / 1e3, "wrk_seconds": doc["duration_s"],
        "err_connect": errors["connect"], "err_read": errors["read"],
        "err_write": errors["write"], "err_timeout": errors["timeout"],
        "non2xx": errors["status"], "rate_held": doc["rate"]["held"],
    }
    return res


def run_wrk(
    url: str,
    scenario: Scenario,
    seconds: float,
    cpu: int | None,
    log_path: Path,
    timeout_s: float,
) -> tuple[str, int, float]:
    """Run wrk (or, for a fixed-rate scenario, `veloxy bench -R`); returns (stdout, exit code,
    the generator's own CPU seconds)."""
    if scenario.rate is not None:
        # One generator process on the client core, as wrk -t1; its JSON goes next to the log.
        argv = [sys.executable, "-m", "veloxy", "bench", "-p", "1",
                "-c", str(scenario.connections), "-R", str(scenario.rate),
                "-d", f"{round(seconds)}s", "--timeout", f"{round(timeout_s)}s",
                "--json", str(log_path.with_suffix(".json"))]
    else:
        argv = ["wrk", "-t1", f"-c{scenario.connections}", f"-d{round(seconds)}s", "--latency",
                "--timeout", f"{round(timeout_s)}s"]
        if scenario.post_size:
            argv += ["-s", str(post_script(log_path.parent, scenario.post_size))]
    for h in scenario.headers:
        argv += ["-H", h]
    argv.append(url)
    p = Proc("wrk", argv, log_path, cpu=cpu, registry=REGISTRY,
             env=python_env() if scenario.rate is not None else None)
    log_path.write_text("")
    p.start()
    deadline = time.monotonic() + seconds + 30.0  # bounded, whatever wrk does
    status, ru = None, None
    try:
        while time.monotonic() < deadline:
            pid, st, ru_ = os.wait4(p.pid, os.WNOHANG)
            if pid:
                status, ru = st, ru_
                break
            time.sleep(0.02)
    finally:
        if status is None and time.monotonic() >= deadline:
            log(f"wrk did not finish within {seconds + 30:.0f}s; killing it")
        if status is not None and p.popen is not None:
            p.popen.returncode = os.waitstatus_to_exitcode(status)
        p.stop()
    out = log_path.read_text(errors="replace")
    code = p.popen.returncode if p.popen and p.popen.returncode is not None else -1
    cpu_s = (ru.ru_utime + ru.ru_stime) if ru is not None else float("nan")
    return out, code, cpu_s


# --------------------------------------------------------------------------------------------
# Targets and origin


@dataclass
class Running:
    name: str
    port: int
    proc: Proc | None  # None for direct (the origin is measured instead)
    note: str = ""


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Ctx:
    args: argparse.Namespace
    workdir: Path
    origin_port: int
    proxy_cpu: int | None
    client_cpu: int | None
    max_connections: int


def start_origin(ctx: Ctx) -> Proc:
    port = ctx.origin_port
    if ctx.args.origin == "nginx":
        conf = ctx.workdir / "origin.conf"
        conf.write_text(nginx_origin_conf(ctx.workdir, port, NGINX_BODY, STUB_PATH,
                                          sized=SIZED_BODIES))
        argv = ["nginx", "-p", str(ctx.workdir), "-e", str(ctx.workdir / "origin-error.log"),
                "-c", str(conf)]
        proc = Proc("origin", argv, ctx.workdir / "origin.log", cpu=ctx.client_cpu,
                    registry=REGISTRY)
        pattern = None
    else:
        argv = [sys.executable, "-m", "veloxy", "origin", "--listen", f"{HOST}:{port}"]
        proc = Proc("origin", argv, ctx.workdir / "origin.log", env=python_env(), registry=REGISTRY,
                    cpu=ctx.client_cpu, cwd=REPO)
        pattern = None
    proc.start()
    why = proc.wait_ready(port, ctx.args.start_timeout, pattern)
    if why is None:
        try:
            status, body = http_get(port)
            if status != 200 or len(body) != BODY_SIZE:
                why = f"GET {REQUEST_PATH} gave {status} with {len(body)} bytes"
        except (OSError, http.client.HTTPException) as e:
            why = f"GET {REQUEST_PATH} failed: {e}"
    if why is not None:
        tail = proc.tail()
        proc.stop()
        raise SystemExit(f"origin ({ctx.args.origin}) failed to start: {why}\n{tail}")
    return proc


def target_command(
    name: str, ctx: Ctx, port: int
) -> tuple[list[str], dict[str, str] | None, str | None] | str:
    """(argv, env, ready log pattern) to start a target, or a string: why it cannot run."""
    upstream = f"http://{HOST}:{ctx.origin_port}"
    wd = ctx.workdir
    if name in ("veloxy", "veloxy-python"):
        argv = [sys.executable, "-m", "veloxy", "serve", "--listen", f"{HOST}:{port}"]
        if ctx.args.veloxy_config is not None:
            # a config template: {upstream} becomes the origin's URL
            text = ctx.args.veloxy_config.read_text().replace("{upstream}", upstream)
            conf = wd / "veloxy.yaml"
            conf.write_text(text)
            argv += ["--config", str(conf)]
        else:
            argv += ["--upstream", upstream]
        argv += ["--workers", "1", *shlex.split(ctx.args.veloxy_args)]
        env = python_env()
        if name == "veloxy-python":
            env["VELOXY_PURE_PYTHON"] = "1"  # llhttp alone: the C fast lane's effect
        return argv, env, r"veloxy listening on"
    if name.startswith("go-"):
        binary, msg = ctx.args.goproxy_binary
        if binary is None:
            return msg
        argv = [str(binary), "-listen", f"{HOST}:{port}", "-upstream", upstream]
        if name in ("go-tuned", "go-bufpool"):
            argv.append("-tuned")
        if name == "go-bufpool":
            argv.append("-bufpool")
        env = dict(os.environ, GOMAXPROCS=str(ctx.args.go_maxprocs))
        return argv, env, r"goproxy listening on"
    if name == "nginx":
        if not shutil.which("nginx"):
            return "nginx is not installed"
        conf = wd / "nginx-proxy.conf"
        keepalive = max(1024, ctx.max_connections + 64)
        conf.write_text(nginx_proxy_conf(wd, port, ctx.origin_port, keepalive))
        return (["nginx", "-p", str(wd), "-e", str(wd / "nginx-proxy-error.log"), "-c", str(conf)],
                None, None)
    if name == "haproxy":
        if not shutil.which("haproxy"):
            return "haproxy is not installed"
        conf = wd / "haproxy.cfg"
        conf.write_text(haproxy_conf(port, ctx.origin_port))
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(conf)], capture_output=True,
                               text=True)
        if check.returncode != 0:
            return f"haproxy config check failed: {(check.stdout + check.stderr).strip()[-400:]}"
        return ["haproxy", "-db", "-f", str(conf)], None, None
    return f"unknown target {name!r}"


def start_target(name: str, ctx: Ctx, origin: Proc) -> Running | str:
    if name == "direct":
        return Running(name, ctx.origin_port, None, "CPU column = the origin's own CPU")
    port = free_port()
    spec = target_command(name, ctx, port)
    if isinstance(spec, str):
        return spec
    argv, env, pattern = spec
    proc = Proc(name, argv, ctx.workdir / f"{name}.log", env=env, cpu=ctx.proxy_cpu, cwd=REPO,
                registry=REGISTRY)
    try:
        proc.start()
    except OSError as e:
        return f"cannot start {argv[0]}: {e}"
    why = proc.wait_ready(port, ctx.args.start_timeout, pattern)
    if why is None:
        try:
            status, body = http_get(port)
            if status != 200 or len(body) != BODY_SIZE:
                why = f"GET {REQUEST_PATH} through it gave {status} with {len(body)} bytes"
        except (OSError, http.client.HTTPException) as e:
            why = f"GET {REQUEST_PATH} through it failed: {e}"
    if why is not None:
        tail = proc.tail()
        proc.stop()
        log(f"{name} failed to start: {why}; log tail:\n    " + tail.replace("\n", "\n    "))
        last = [ln.strip() for ln in tail.splitlines() if ln.strip()][-1:]
        return why + (f": {last[0][:160]}" if last else "")
    return Running(name, port, proc)


# --------------------------------------------------------------------------------------------
# One cell


@dataclass
class Cell:
    rep: int
    scenario: str
    target: str
    ok: bool = True
    error: str = ""
    rps: float | None = None
    requests: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    err_connect: int = 0
    err_read: int = 0
    err_write: int = 0
    err_timeout: int = 0
    non2xx: int = 0
    proxy_cpu_s: float | None = None
    cpu_us_per_req: float | None = None
    proxy_cpu_pct: float | None = None
    origin_cpu_us_per_req: float | None = None
    wrk_cpu_s: float | None = None
    proxy_core_busy_pct: float | None = None
    client_core_busy_pct: float | None = None
    upstream_opened_stub: int | None = None
    upstream_new_sampled: int | None = None
    upstream_opened_per_s_steady: float | None = None
    upstream_held_end: int | None = None
    upstream_held_loaded: int | None = None
    upstream_max_established: int | None = None
    time_wait_at_start: int | None = None
    wrk_exit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def socket_errors(self) -> int:
        return self.err_connect + self.err_read + self.err_write + self.err_timeout


def wait_idle(limit: float, threshold: float = 10.0) -> tuple[float, dict[int, float]]:
    """Wait up to `limit` seconds until every CPU is below `threshold` % busy (0.5 s samples).

    Returns (seconds waited, last sample).  Our own processes are idle between cells, so a busy
    CPU here means someone else's load (a shared machine)."""
    t0 = time.monotonic()
    sample = busy_now(0.5)
    while limit > 0 and max(sample.values(), default=0.0) > threshold \
            and time.monotonic() - t0 < limit:
        sample = busy_now(0.5)
    return time.monotonic() - t0, sample


def run_cell(ctx: Ctx, rep: int, scen: Scenario, tgt: Running, origin: Proc) -> Cell:
    a = ctx.args
    cell = Cell(rep, scen.name, tgt.name)
    if a.wait_idle > 0:
        waited, sample = wait_idle(a.wait_idle)
        cell.extra["idle_wait_s"] = round(waited, 1)
        cell.extra["busy_before_pct"] = sample
        if max(sample.values(), default=0.0) > 10:
            log(f"warning: machine still busy after waiting {waited:.0f}s "
                f"({', '.join(f'cpu{c} {v:.0f} %' for c, v in sample.items())}); running anyway")
        elif waited > 1:
            log(f"waited {waited:.0f}s for the machine to be idle")
    url = f"http://{HOST}:{tgt.port}{scen.path}"
    if tgt.proc is not None and not tgt.proc.alive():
        cell.ok, cell.error = False, "target process is not running"
        return cell
    wrk_log = ctx.workdir / f"wrk-{rep}-{scen.name}-{tgt.name}.txt"
    if a.warmup > 0:
        out, code, _ = run_wrk(url, scen, a.warmup, ctx.client_cpu, wrk_log, a.wrk_timeout)
        if code != 0:
            log(f"warning: warm-up of {tgt.name}/{scen.name} failed (wrk exit {code}): "
                + " | ".join(out.strip().splitlines()[-2:]))
        time.sleep(0.2)
    measured_root = tgt.proc.pid if tgt.proc is not None else origin.pid
    cell.time_wait_at_start = time_wait_count()
    use_stub = a.origin == "nginx"
    stub0 = stub_accepts(ctx.origin_port) if use_stub else None
    sampler = ConnSampler(tgt.proc.pid if tgt.proc is not None else None, ctx.origin_port,
                          a.conn_sample_interval, a.duration, use_stub)
    own0 = os.times()
    sys0 = tree_sys_seconds(measured_root)
    cpu0, ocpu0, core0, t0 = (tree_cpu_seconds(measured_root), tree_cpu_seconds(origin.pid),
                              cpu_times(), time.monotonic())
    sampler.start()
    out, code, wrk_cpu = run_wrk(url, scen, a.duration, ctx.client_cpu, wrk_log, a.wrk_timeout)
    cpu1, ocpu1, core1, t1 = (tree_cpu_seconds(measured_root), tree_cpu_seconds(origin.pid),
                              cpu_times(), time.monotonic())
    sys1 = tree_sys_seconds(measured_root)
    sampler.finish()
    own1 = os.times()
    stub1 = stub_accepts(ctx.origin_port) if use_stub else None

    cell.wrk_exit, cell.wrk_cpu_s = code, wrk_cpu
    parsed = parse_bench_json(wrk_log.with_suffix(".json")) if scen.rate else parse_wrk(out)
    if code != 0 or "requests" not in parsed:
        cell.ok = False
        cell.error = f"wrk exit {code}: " + " | ".join(out.strip().splitlines()[-3:])
    cell.rps = parsed.get("rps")
    cell.requests = parsed.get("requests")
    cell.p50_ms, cell.p99_ms = parsed.get("p50_ms"), parsed.get("p99_ms")
    cell.max_ms = parsed.get("lat_max_ms")
    for k in ("err_connect", "err_read", "err_write", "err_timeout", "non2xx"):
        setattr(cell, k, parsed.get(k, 0))
    cell.extra["wrk_seconds"] = parsed.get("wrk_seconds")
    if scen.rate is not None:
        cell.extra["rate_held"] = parsed.get("rate_held")
    cell.proxy_cpu_s = cpu1 - cpu0
    wall = t1 - t0
    cell.proxy_cpu_pct = 100.0 * cell.proxy_cpu_s / wall if wall > 0 else None
    if cell.requests:
        cell.cpu_us_per_req = 1e6 * cell.proxy_cpu_s / cell.requests
        cell.origin_cpu_us_per_req = 1e6 * (ocpu1 - ocpu0) / cell.requests
        cell.extra["proxy_sys_us_per_req"] = 1e6 * (sys1 - sys0) / cell.requests
    if ctx.proxy_cpu is not None:
        cell.proxy_core_busy_pct = cpu_busy_pct(core0, core1, ctx.proxy_cpu)
    if ctx.client_cpu is not None:
        cell.client_core_busy_pct = cpu_busy_pct(core0, core1, ctx.client_cpu)
        # what ran there besides wrk, the origin and this driver (other processes, softirq)
        driver_s = (own1.user + own1.system) - (own0.user + own0.system)
        ours = 100.0 * (wrk_cpu + (ocpu1 - ocpu0) + driver_s) / wall if wall > 0 else 0.0
        if cell.client_core_busy_pct is not None and wrk_cpu == wrk_cpu:  # not NaN
            cell.extra["client_core_other_pct"] = cell.client_core_busy_pct - ours
        cell.extra["driver_cpu_s"] = driver_s
    if ctx.proxy_cpu is not None and cell.requests and ctx.proxy_cpu in core0:
        # whole-core cost per request: includes softirq work not charged to any process, and
        # anything else that ran on that core (so only meaningful on an otherwise idle core)
        busy_s = (core1[ctx.proxy_cpu][0] - core0[ctx.proxy_cpu][0]) / CLK_TCK
        cell.extra["proxy_core_us_per_req"] = 1e6 * busy_s / cell.requests
    if stub0 is not None and stub1 is not None:
        # minus our own status requests: the one after the run and the sampler's
        cell.upstream_opened_stub = stub1 - stub0 - 1 - len(sampler.window_stub)
    steady = sampler.steady_opened_stub
    if steady is None:
        steady = sampler.steady_new_sampled
    win = sampler.window_seconds or ConnSampler.WINDOW[1] * a.duration - \
        ConnSampler.WINDOW[0] * a.duration
    if steady is not None and win > 0:
        cell.upstream_opened_per_s_steady = steady / win
    if tgt.proc is not None:
        cell.upstream_new_sampled = sampler.new_seen
        cell.upstream_held_end = sampler.end_count
        cell.upstream_held_loaded = sampler.loaded_count
        cell.upstream_max_established = sampler.max_established
    if (tgt.proc is not None and cell.proxy_core_busy_pct is not None
            and cell.proxy_cpu_pct is not None):
        # Work on the proxy's core that is not the proxy's own (other processes; some softirq).
        other = cell.proxy_core_busy_pct - cell.proxy_cpu_pct
        cell.extra["proxy_core_other_pct"] = other
        if other > 15:
            log(f"warning: {tgt.name}/{scen.name}: the proxy core was {other:.0f} % busy with "
                "other work; is something else running on this machine?")
    if tgt.proc is not None and not tgt.proc.alive():
        cell.ok = False
        cell.error = (cell.error + "; " if cell.error else "") + "target died during the run"
    return cell


# --------------------------------------------------------------------------------------------
# Report


def _med(vals: list[float]) -> float | None:
    return statistics.median(vals) if vals else None


def _f(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def _ms_fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1:
        return f"{v:.3f}"
    if v < 100:
        return f"{v:.2f}"
    return f"{v:.0f}"


def _sig(v: float | None) -> str:
    """Three significant digits."""
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def aggregate(cells: list[Cell]) -> dict[str, Any]:
    ok = [c for c in cells if c.ok and c.requests]

    def vals(attr: str) -> list[float]:
        return [getattr(c, attr) for c in ok if getattr(c, attr) is not None]

    agg: dict[str, Any] = {"reps_ok": len(ok), "reps_total": len(cells),
                           "errors": [c.error for c in cells if c.error]}
    for attr in ("rps", "cpu_us_per_req", "p50_ms", "p99_ms", "max_ms", "proxy_cpu_pct",
                 "origin_cpu_us_per_req", "proxy_core_busy_pct", "client_core_busy_pct",
                 "upstream_opened_stub", "upstream_new_sampled", "upstream_held_end",
                 "upstream_opened_per_s_steady", "upstream_held_loaded",
                 "time_wait_at_start"):
        v = vals(attr)
        agg[attr] = {"median": _med(v), "min": min(v) if v else None,
                     "max": max(v) if v else None}
    agg["socket_errors"] = sum(c.socket_errors for c in cells)
    agg["socket_errors_by_kind"] = {k: sum(getattr(c, k) for c in cells)
                                    for k in ("err_connect", "err_read", "err_write",
                                              "err_timeout")}
    agg["non2xx"] = sum(c.non2xx for c in cells)
    return agg


def machine_info() -> dict[str, str]:
    model = cpu_model() or "unknown"

    def ver(cmd: list[str], pat: str) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"
        m = re.search(pat, r.stdout + r.stderr)
        return m.group(1) if m else "n/a"

    def sysctl(name: str) -> str:
        try:
            return Path("/proc/sys/" + name.replace(".", "/")).read_text().split("\n")[0].strip()
        except OSError:
            return "n/a"

    return {
        "cpu_model": model,
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": ver(["wrk", "-v"], r"wrk (\S+)"),
        "nginx": ver(["nginx", "-v"], r"nginx/(\S+)"),
        "haproxy": ver(["haproxy", "-v"], r"version (\S+)"),
        "go": ver(["go", "version"], r"go version (\S+)"),
        "ip_local_port_range": sysctl("net.ipv4.ip_local_port_range").replace("\t", "-"),
        "tcp_tw_reuse": sysctl("net.ipv4.tcp_tw_reuse"),
        "somaxconn": sysctl("net.core.somaxconn"),
        "nofile": str(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
    }


def render_markdown(meta: dict[str, Any], results: dict[str, dict[str, dict[str, Any]]],
                    targets: list[str], refs: list[str]) -> str:
    m = meta["machine"]
    a = meta["settings"]
    lines = [
        f"## Proxy comparison ({meta['date']})",
        "",
        f"- Machine: {m['cpu_model']}, {m['nproc']} CPUs, Linux {m['kernel']}; Python "
        f"{m['python']}, wrk {m['wrk']}, nginx {m['nginx']}, HAProxy {m['haproxy']}, "
        f"Go {m['go']}",
        f"- Command: `{meta['command']}`",
        f"- Origin: {a['origin_desc']}; pinning: {a['pin_desc']}",
        f"- Each cell: wrk -t1, {a['warmup']:g}s warm-up + {a['duration']:g}s measured, "
        f"{a['reps']} rep(s), targets interleaved and rotated per rep; "
        f"{BODY_SIZE}-byte response body unless the scenario says otherwise; fixed-rate "
        "scenarios are driven by `veloxy bench -p 1 -R` instead of wrk (latency from each "
        "request's intended send time); medians over reps, [min-max] where shown",
        "- CPU µs/req: user+sys CPU of the proxy's whole process tree / requests completed "
        "(for `direct`: the origin's); ÷ columns: that ratio against the reference target "
        "(lower is better; 1.00 = same cost)",
        "- Upstream opened (run): connections the origin accepted during the measured run "
        + ("(nginx stub_status delta, exact)" if a["origin"] == "nginx"
           else "(distinct new proxy sockets seen by sampling, a lower bound)")
        + "; it includes re-opening the upstream connections a proxy drops when the previous "
        "wrk run stops with requests in flight. Upstream opened/s (steady): the same between "
        "20 % and 90 % of the run, i.e. churn; held: the proxy's established upstream sockets "
        "at 90 % of the run (under load)",
    ]
    if meta.get("interrupted"):
        lines.append("- **Interrupted**: partial results")
    busy = meta.get("busy_before_start") or {}
    if busy and max(busy.values()) > 10:
        lines.append("- **Warning**: the machine was not idle before the run (CPU busy %: "
                     + ", ".join(f"cpu{c} {v:.0f}" for c, v in busy.items()) + ")")
    if meta.get("noisy_cells"):
        lines.append(f"- **Warning**: in {meta['noisy_cells']} of {meta['n_cells']} cells the "
                     "proxy core was >15 % busy with work other than the proxy's (another "
                     "process on the machine?): treat req/s there with suspicion")
    if meta["skipped"]:
        lines.append("- Skipped targets: " + "; ".join(
            f"`{k}` ({v})" for k, v in meta["skipped"].items()))
    lines.append("")
    for scen_name, by_target in results.items():
        scen = SCENARIOS[scen_name]
        lines += [f"### {scen_name}: {scen.description}", ""]
        head = ["target", "req/s [min-max]", "p50 ms", "p99 ms", "max ms", "errors",
                "CPU µs/req [min-max]"]
        head += [f"÷ {r}" for r in refs]
        head += ["proxy CPU %", "client core %", "upstream opened (run)",
                 "upstream opened/s (steady)", "held"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for t in targets:
            agg = by_target.get(t)
            if agg is None:
                continue
            if agg["reps_ok"] == 0:
                err = (agg["errors"] or ["no successful run"])[0].replace("|", "/")[:80]
                lines.append(f"| {t} | failed: {err} |" + " |" * (len(head) - 2))
                continue
            rps, cpu = agg["rps"], agg["cpu_us_per_req"]
            errs = f"{agg['socket_errors']} sock / {agg['non2xx']} non-2xx"
            if agg["socket_errors"] == 0 and agg["non2xx"] == 0:
                errs = "0"
            if agg["reps_ok"] < agg["reps_total"]:
                errs += f" ({agg['reps_total'] - agg['reps_ok']} rep(s) failed)"
            ratios = []
            for r in refs:
                ref = by_target.get(r, {}).get("cpu_us_per_req", {}).get("median")
                if t == "direct" or ref in (None, 0) or cpu["median"] is None:
                    ratios.append("-")
                else:
                    ratios.append(f"{cpu['median'] / ref:.2f}")
            if t == "direct":
                opened, rate, held = "-", "-", "-"
            else:
                stub = agg["upstream_opened_stub"]["median"]
                samp = agg["upstream_new_sampled"]["median"]
                opened = _f(stub) if stub is not None else (
                    f">={_f(samp)}" if samp is not None else "-")
                held = _f(agg["upstream_held_loaded"]["median"])
                r = agg["upstream_opened_per_s_steady"]["median"]
                rate = ("-" if r is None else
                        (_f(r) if a["origin"] == "nginx" else f">={_f(r)}"))
            cells = [
                f"{t}" + (" (origin CPU)" if t == "direct" else ""),
                f"{_f(rps['median'])} [{_f(rps['min'])}-{_f(rps['max'])}]",
                _ms_fmt(agg["p50_ms"]["median"]),
                _ms_fmt(agg["p99_ms"]["median"]),
                _ms_fmt(agg["max_ms"]["median"]),
                errs,
                f"{_sig(cpu['median'])} [{_sig(cpu['min'])}-{_sig(cpu['max'])}]",
                *ratios,
                "-" if t == "direct" else _f(agg["proxy_cpu_pct"]["median"]),
                _f(agg["client_core_busy_pct"]["median"]),
                opened,
                rate,
                held,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main


def csv_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Interleaved wrk comparison of veloxy vs Go, nginx, HAProxy in front of "
        "one origin (see the module docstring for the method).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--targets", type=csv_list(ALL_TARGETS), default=list(ALL_TARGETS),
                   help="comma-separated targets")
    p.add_argument("--scenarios", type=csv_list(list(SCENARIOS)), default=list(SCENARIOS),
                   help="comma-separated scenarios")
    p.add_argument("--origin", choices=("nginx", "veloxy"), default="nginx")
    p.add_argument("--duration", type=parse_duration, default=5.0, help="measured time per cell")
    p.add_argument("--warmup", type=parse_duration, default=1.0,
                   help="un-measured wrk run before each cell (0 to skip)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (medians reported)")
    p.add_argument("--pause", type=parse_duration, default=0.5, help="idle time between cells")
    p.add_argument("--reference", type=csv_list(ALL_TARGETS), default=["go-tuned", "nginx"],
                   help="targets whose CPU/req the others are divided by")
    p.add_argument("--pin", choices=("split", "none"), default="split",
                   help="split: proxies on --proxy-cpu, wrk+origin+this script on --client-cpu")
    p.add_argument("--proxy-cpu", type=int, default=1)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--go-maxprocs", type=int, default=1)
    p.add_argument("--veloxy-args", default="",
                   help="extra arguments appended to `python -m veloxy serve`")
    p.add_argument("--veloxy-config", type=Path, metavar="YAML",
                   help="run veloxy with this config (instead of --upstream); the text "
                   "{upstream} in it is replaced by the origin's URL; --listen and --workers 1 "
                   "are still given as flags")
    p.add_argument("--wrk-timeout", type=parse_duration, default=5.0,
                   help="wrk --timeout (a response slower than this is a timeout error)")
    p.add_argument("--conn-sample-interval", type=float, default=1.0,
                   help="seconds between samples of the proxy's upstream sockets (0: start/end)")
    p.add_argument("--wait-idle", type=float, default=30.0,
                   help="before each cell wait up to this many seconds for all CPUs to be "
                   "<10 %% busy (for shared machines; 0: don't check)")
    p.add_argument("--start-timeout", type=float, default=20.0,
                   help="seconds to wait for a process to listen")
    p.add_argument("--json", type=Path, metavar="OUT", help="write raw cells + aggregates here")
    p.add_argument("--markdown", type=Path, metavar="OUT", help="also write the table here")
    p.add_argument("--workdir", type=Path,
                   help="keep configs and logs here (default: a temp dir, removed at the end)")
    return p


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(OSError, ValueError):
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        want = min(want, nr_open)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    if args.origin == "nginx" and shutil.which("nginx") is None:
        print("--origin nginx needs nginx (apt-get install nginx-light)", file=sys.stderr)
        return 2
    if args.reps < 1:
        print("--reps must be >= 1", file=sys.stderr)
        return 2
    for opt in ("duration", "warmup", "wrk_timeout"):  # wrk's -d and --timeout: whole seconds
        v = getattr(args, opt)
        if v != int(v) or (v < 1 and opt != "warmup"):
            print(f"--{opt.replace('_', '-')} must be a whole number of seconds"
                  + ("" if opt == "warmup" else " >= 1") + f" (wrk's unit), not {v:g}",
                  file=sys.stderr)
            return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    # Ctrl-C must work even if started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    nofile = raise_nofile()
    max_conn = max(SCENARIOS[s].connections for s in args.scenarios)
    if nofile < 4 * max_conn + 256:
        log(f"warning: RLIMIT_NOFILE is {nofile}; c={max_conn} may run out of descriptors")

    ncpu = os.cpu_count() or 1
    pin = args.pin == "split" and ncpu >= 2 and shutil.which("taskset") is not None
    if args.pin == "split" and not pin:
        log("pinning disabled (needs >= 2 CPUs and taskset)")
    proxy_cpu = args.proxy_cpu if pin else None
    client_cpu = args.client_cpu if pin else None
    if pin:
        os.sched_setaffinity(0, {args.client_cpu})  # this script's own work stays off the proxy

    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="veloxy-compare-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    ctx = Ctx(args, workdir, free_port(), proxy_cpu, client_cpu, max_conn)

    if any(t.startswith("go-") for t in args.targets):
        args.goproxy_binary = build_goproxy(GOPROXY_SRC)
        log(f"goproxy: {args.goproxy_binary[1]}")
    else:
        args.goproxy_binary = (None, "not needed")

    n_cells = args.reps * len(args.scenarios) * len(args.targets)
    est = n_cells * (args.warmup + args.duration + args.pause + 0.6
                     + (0.5 if args.wait_idle > 0 else 0))
    log(f"workdir {workdir}; up to {n_cells} cells, about {est / 60:.1f} min")

    command = shlex.join(["python", *sys.argv]) if argv is None else \
        shlex.join(["python", "benchmarks/proxy_compare.py", *argv])
    skipped: dict[str, str] = {}
    cells: list[Cell] = []
    running: dict[str, Running] = {}
    failed = False
    busy = busy_now(1.0)
    if busy and max(busy.values()) > 10:
        log("warning: the machine is not idle before starting (CPU busy %: "
            + ", ".join(f"cpu{c} {v:.0f}" for c, v in busy.items()) + ")")
    try:
        origin = start_origin(ctx)
        log(f"origin ({args.origin}) pid {origin.pid} on {HOST}:{ctx.origin_port}")
        for name in args.targets:
            r = start_target(name, ctx, origin)
            if isinstance(r, str):
                skipped[name] = r
                log(f"SKIP {name}: {r}")
            else:
                running[name] = r
                log(f"{name} ready on {HOST}:{r.port}"
                    + (f" (pid {r.proc.pid})" if r.proc else ""))
        order = [t for t in args.targets if t in running]
        if not order:
            raise SystemExit("no target could be started")
        for rep in range(args.reps):
            for scen_name in args.scenarios:
                scen = SCENARIOS[scen_name]
                k = rep % len(order)
                for tname in order[k:] + order[:k]:
                    cell = run_cell(ctx, rep, scen, running[tname], origin)
                    cells.append(cell)
                    status = "ok" if cell.ok else f"FAILED: {cell.error}"
                    log(f"rep {rep + 1}/{args.reps} {scen_name:<16} {tname:<10} "
                        f"{_f(cell.rps)} req/s  p99 {_ms_fmt(cell.p99_ms)} ms  "
                        f"cpu {_sig(cell.cpu_us_per_req)} us/req  "
                        f"sockerr {cell.socket_errors} non2xx {cell.non2xx}  "
                        f"upstream opened {cell.upstream_opened_stub} "
                        f"steady/s {_f(cell.upstream_opened_per_s_steady)} "
                        f"held {cell.upstream_held_loaded}  {status}")
                    time.sleep(args.pause)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        failed = True
    finally:
        stop_all()
        if own_workdir and not failed and not any(not c.ok for c in cells):
            shutil.rmtree(workdir, ignore_errors=True)
        elif own_workdir:
            log(f"logs kept in {workdir}")

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for scen_name in args.scenarios:
        by_target = {}
        for t in args.targets:
            cs = [c for c in cells if c.scenario == scen_name and c.target == t]
            if cs:
                by_target[t] = aggregate(cs)
        if by_target:
            results[scen_name] = by_target
    refs = [r for r in args.reference if r in running]
    origin_desc = (f"nginx {BODY_SIZE}-byte `return 200`, 1 worker" if args.origin == "nginx"
                   else f"`python -m veloxy origin`, GET {REQUEST_PATH}")
    if args.veloxy_config is not None:
        origin_desc += f"; veloxy config: `{args.veloxy_config}`"
    pin_desc = (f"proxy on CPU {proxy_cpu}; wrk, origin and the driver on CPU {client_cpu}"
                if pin else "none")
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": machine_info(),
        "settings": {
            "origin": args.origin, "origin_desc": origin_desc, "pin_desc": pin_desc,
            "duration": args.duration, "warmup": args.warmup, "reps": args.reps,
            "targets": args.targets, "scenarios": args.scenarios, "reference": refs,
            "go_maxprocs": args.go_maxprocs, "wrk_timeout": args.wrk_timeout,
        },
        "skipped": skipped,
        "busy_before_start": busy,
        "interrupted": failed,
        "n_cells": len(cells),
        "noisy_cells": sum(1 for c in cells if c.extra.get("proxy_core_other_pct", 0) > 15),
    }
    md = render_markdown(meta, results, [t for t in args.targets if t in running], refs)
    out: TextIO = sys.stdout
    out.write(md + "\n")
    out.flush()
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "aggregates": results, "cells": [asdict(c) for c in cells]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 130 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
