#!/usr/bin/env python3
"""Soak and chaos under load: what veloxy loses when things go wrong, beside nginx.

Each scenario starts `veloxy origin` as the upstream, then for each target (veloxy, and
nginx where it can do the same thing) starts the proxy in front of it, drives it with wrk
(keep-alive, `--connections`), does the scenario's damage during the run, and reports the
requests lost: wrk's socket errors (connect, read, write, timeout) plus answers that are
not 2xx/3xx. Targets run one after the other on the same origin.

    python benchmarks/chaos.py soak --seconds 120            # 1000 connections, RSS and fds
    python benchmarks/chaos.py upstream-restart --seconds 20 # origin kill -9 and restart x3
    python benchmarks/chaos.py reload-storm --seconds 20     # SIGHUP every 0.2 s
    python benchmarks/chaos.py shutdown                      # graceful stop, 1 MiB answers
    python benchmarks/chaos.py rolling-restart --seconds 20  # 2 workers replaced in turn
    python benchmarks/chaos.py slow-clients --seconds 20     # slowloris + slow readers
    python benchmarks/chaos.py all --seconds 20 --soak-seconds 120 --json out.json

Scenarios:

soak              `--soak-seconds` (default 120; run hours with a larger value) at
                  `--soak-connections` (1000): resident memory and open descriptors of the
                  proxy's process tree sampled every `--sample` seconds; flat means no leak.
upstream-restart  the origin is killed (SIGKILL) three times during the run and started
                  again on the same port 1 s later each time.
reload-storm      the configuration is reloaded every 0.2 s (SIGHUP; nginx: SIGHUP too).
shutdown          after 2 s of a run asking for 1 MiB answers, the proxy is told to stop
                  gracefully (veloxy SIGTERM, nginx SIGQUIT); counts what was cut.
rolling-restart   `--workers 2`; each worker in turn is stopped (SIGTERM) and replaced by the
                  supervisor, spaced over the run (nginx: SIGHUP, which replaces every worker
                  gracefully, as often).
overload          the proxy under `ulimit -n 1024` (prlimit; nginx's worker_rlimit_nofile and
                  worker_connections follow it), wrk with `--overload-clients` (3000)
                  connections, and a separate client making a new connection and one request
                  every 200 ms: its latencies, and the proxy's log lines about accept/EMFILE.
slow-clients      beside wrk, `--slowloris` connections send a request head one byte a second
                  and `--slow-readers` ask for 1 MiB and read 4 KiB every 0.5 s; reports the
                  normal clients' losses and p99, and how many slow connections the proxy
                  closed (limits.header_timeout; nginx client_header_timeout/send_timeout).

Figures: docs/BENCHMARKS.md, "Soak and chaos". The machine is shared; losses are counts,
not rates, and compare between targets of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from proxy_compare import parse_wrk, raise_nofile  # noqa: E402

from veloxy.lab.peers import nginx_proxy_conf  # noqa: E402
from veloxy.lab.procs import (  # noqa: E402
    Proc,
    child_pids,
    free_port,
    status_kib,
    tree_pids,
)

HOST = "127.0.0.1"
SCENARIOS = ("soak", "upstream-restart", "reload-storm", "shutdown", "rolling-restart",
             "slow-clients", "overload")


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH"))
                                        if p)
    return env


class Lab:
    """The origin and the proxies of one run, in a work directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.origin_port = free_port()
        self.origin: Proc | None = None

    def start_origin(self) -> None:
        self.origin = Proc("origin", [sys.executable, "-m", "veloxy", "origin", "--listen",
                                      f"{HOST}:{self.origin_port}"],
                           self.workdir / "origin.log", env=python_env(), cwd=REPO)
        self.origin.start()
        why = self.origin.wait_ready(self.origin_port, 15, "origin listening on")
        if why:
            raise SystemExit(f"origin: {why}\n{self.origin.tail()}")

    def kill_origin(self) -> None:
        if self.origin is not None and self.origin.popen is not None:
            os.killpg(self.origin.popen.pid, signal.SIGKILL)
            self.origin.popen.wait()
            self.origin.stop()

    def start(self, target: str, workers: int = 1, nofile: int | None = None
              ) -> tuple[Proc, int] | str:
        port = free_port()
        limit = [] if nofile is None else ["prlimit", f"--nofile={nofile}:{nofile}", "--"]
        if target == "veloxy":
            conf = self.workdir / "veloxy.yaml"
            conf.write_text(f"listen: ['{HOST}:{port}']\nworkers: {workers}\n"
                            f"upstreams:\n  o:\n    servers: ['http://{HOST}:{self.origin_port}']\n"
                            "routes:\n  - upstream: o\n")
            proc = Proc("veloxy", [*limit, sys.executable, "-m", "veloxy", "serve", "--config",
                                   str(conf)], self.workdir / "veloxy.log", env=python_env(),
                        cwd=REPO)
            pattern: str | None = "veloxy listening on"
        elif target == "nginx":
            if not shutil.which("nginx"):
                return "nginx is not installed"
            conf = self.workdir / "nginx.conf"
            text = nginx_proxy_conf(self.workdir, port, self.origin_port, 1024, workers=workers)
            if nofile is not None:  # as `ulimit -n`: nginx's own descriptor settings follow it
                text = re.sub(r"worker_rlimit_nofile \d+;", f"worker_rlimit_nofile {nofile};",
                              text)
                text = re.sub(r"worker_connections \d+;", f"worker_connections {nofile};", text)
            conf.write_text(text)
            proc = Proc("nginx", [*limit, "nginx", "-p", str(self.workdir), "-e",
                                  str(self.workdir / "nginx-error.log"), "-c", str(conf)],
                        self.workdir / "nginx.log")
            pattern = None
        else:
            return f"unknown target {target}"
        proc.start()
        why = proc.wait_ready(port, 20, pattern)
        if why:
            tail = proc.tail()
            proc.stop()
            return f"{target}: {why}\n{tail}"
        return proc, port


def wrk(port: int, connections: int, seconds: float, path: str = "/?size=100",
        timeout: float = 5.0) -> subprocess.Popen[str]:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", "--latency",
            "--timeout", f"{round(timeout)}s", f"http://{HOST}:{port}{path}"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(run: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    out, _ = run.communicate(timeout=seconds + 60)
    res = parse_wrk(out)
    res["lost"] = (res["err_connect"] + res["err_read"] + res["err_write"]
                   + res["err_timeout"] + res["non2xx"])
    return res


def tree_fds(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def tree_rss_kib(root: int) -> int:
    return sum(status_kib(pid, "VmRSS") or 0 for pid in tree_pids(root))


# -- scenarios ------------------------------------------------------------------------------


def soak(lab: Lab, proc: Proc, port: int, args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.soak_seconds
    run = wrk(port, args.soak_connections, seconds)
    samples: list[tuple[float, int, int]] = []
    start = time.monotonic()
    while time.monotonic() - start < seconds + 5:
        time.sleep(args.sample)
        if run.poll() is not None:
            break  # (a sample after wrk ended shows its connections gone, not a trend)
        samples.append((round(time.monotonic() - start, 1), tree_rss_kib(proc.pid),
                        tree_fds(proc.pid)))
    res = finish(run, seconds)
    steady = samples[len(samples) // 4:] or samples  # after the warm-up quarter
    res.update(samples=samples,
               rss_kib_first=steady[0][1], rss_kib_last=steady[-1][1],
               rss_kib_max=max(s[1] for s in steady),
               fds_first=steady[0][2], fds_last=steady[-1][2],
               fds_max=max(s[2] for s in steady))
    return res


def upstream_restart(lab: Lab, proc: Proc, port: int, args: argparse.Namespace
                     ) -> dict[str, Any]:
    seconds = args.seconds
    run = wrk(port, args.connections, seconds)
    for _ in range(3):
        time.sleep(seconds / 4 - 1.0)
        lab.kill_origin()
        time.sleep(1.0)
        lab.start_origin()
    res = finish(run, seconds)
    res["fds_after"] = tree_fds(proc.pid)
    return res


def reload_storm(lab: Lab, proc: Proc, port: int, args: argparse.Namespace
                 ) -> dict[str, Any]:
    seconds = args.seconds
    run = wrk(port, args.connections, seconds)
    reloads = 0
    stop_at = time.monotonic() + seconds - 1.0
    time.sleep(0.5)
    while time.monotonic() < stop_at:
        os.kill(proc.pid, signal.SIGHUP)
        reloads += 1
        time.sleep(0.2)
    res = finish(run, seconds)
    res["reloads"] = reloads
    res["fds_after"] = tree_fds(proc.pid)
    return res


def shutdown(lab: Lab, proc: Proc, port: int, args: argparse.Namespace, target: str
             ) -> dict[str, Any]:
    seconds = 6.0
    run = wrk(port, 50, seconds, path="/?size=1m", timeout=5)
    time.sleep(2.0)
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM if target == "veloxy" else signal.SIGQUIT)
    assert proc.popen is not None
    try:
        proc.popen.wait(30)
    except subprocess.TimeoutExpired:
        pass
    stopped_in = time.monotonic() - started
    res = finish(run, seconds)
    res["stopped_in_s"] = round(stopped_in, 2)
    # Once the proxy is gone wrk's reconnects and writes fail: not losses of the shutdown.
    # What it cut is what was in flight (read errors: a connection closed before the
    # answer's end, or a kept-alive one closed under wrk's next request).
    res["failed_after_stop"] = res["err_connect"] + res["err_write"]
    res["lost"] -= res["failed_after_stop"]
    return res


def rolling_restart(lab: Lab, proc: Proc, port: int, args: argparse.Namespace, target: str
                    ) -> dict[str, Any]:
    seconds = args.seconds
    run = wrk(port, args.connections, seconds)
    restarts = 0
    for _ in range(3):
        time.sleep(seconds / 4)
        if target == "nginx":
            os.kill(proc.pid, signal.SIGHUP)  # nginx: new workers, the old ones drain
            restarts += 1
            continue
        for worker in child_pids(proc.pid):  # veloxy: each worker in turn, replaced
            os.kill(worker, signal.SIGTERM)
            restarts += 1
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and worker in child_pids(proc.pid):
                time.sleep(0.05)
            while time.monotonic() < deadline and len(child_pids(proc.pid)) < args.workers:
                time.sleep(0.05)
            time.sleep(0.5)  # the new worker's listener is in the SO_REUSEPORT group
    res = finish(run, seconds)
    res["restarts"] = restarts
    return res


class SlowClients(threading.Thread):
    """Slowloris connections (a request head one byte a second) and slow readers (1 MiB
    asked, 4 KiB read every 0.5 s) on one selector; counts the ones the proxy closed."""

    def __init__(self, port: int, loris: int, readers: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.loris, self.readers, self.seconds = port, loris, readers, seconds
        self.closed_loris = self.closed_readers = self.read_bytes = 0

    def run(self) -> None:
        head = b"GET /?size=100 HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
        sel = selectors.DefaultSelector()
        loris: dict[socket.socket, int] = {}
        readers: list[socket.socket] = []
        for _ in range(self.loris):
            s = socket.create_connection((HOST, self.port))
            s.setblocking(False)
            loris[s] = 0
        for _ in range(self.readers):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((HOST, self.port))
            s.sendall(b"GET /?size=1m HTTP/1.1\r\nHost: slow\r\n\r\n")
            s.setblocking(False)
            readers.append(s)
        stop_at = time.monotonic() + self.seconds
        next_byte = time.monotonic()
        while time.monotonic() < stop_at:
            now = time.monotonic()
            if now >= next_byte:
                next_byte = now + 1.0
                for s, sent in list(loris.items()):
                    try:
                        if sent < len(head):
                            s.send(head[sent:sent + 1])
                            loris[s] = sent + 1
                        if s.recv(65536) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.closed_loris += 1
                        del loris[s]
                        s.close()
            for s in list(readers):
                try:
                    data = s.recv(4096)
                    if not data:
                        raise ConnectionResetError
                    self.read_bytes += len(data)
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_readers += 1
                    readers.remove(s)
                    s.close()
            time.sleep(0.5)
        for s in [*loris, *readers]:
            s.close()
        sel.close()


def slow_clients(lab: Lab, proc: Proc, port: int, args: argparse.Namespace
                 ) -> dict[str, Any]:
    seconds = args.seconds
    slow = SlowClients(port, args.slowloris, args.slow_readers, seconds)
    slow.start()
    time.sleep(1.0)
    run = wrk(port, args.connections, seconds - 2)
    res = finish(run, seconds - 2)
    slow.join(seconds + 10)
    res.update(slowloris=args.slowloris, slowloris_closed=slow.closed_loris,
               slow_readers=args.slow_readers, slow_readers_closed=slow.closed_readers,
               slow_read_kib=slow.read_bytes // 1024)
    return res


class Probe(threading.Thread):
    """A separate client: a new connection and one request every 200 ms; seconds each took
    (None: no answer within 5 s, or not a 200)."""

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.took: list[float | None] = []

    def run(self) -> None:
        stop_at = time.monotonic() + self.seconds
        request = b"GET /?size=10 HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                with socket.create_connection((HOST, self.port), timeout=5) as s:
                    s.sendall(request)
                    data = b""
                    while piece := s.recv(65536):
                        data += piece
                ok = data.startswith(b"HTTP/1.1 200")
                self.took.append(time.monotonic() - started if ok else None)
            except OSError:
                self.took.append(None)
            time.sleep(0.2)


def overload(lab: Lab, proc: Proc, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """`ulimit -n 1024` on the proxy, `--overload-clients` wrk connections, and a probe."""
    seconds = args.seconds
    run = wrk(port, args.overload_clients, seconds, timeout=10)
    time.sleep(2.0)  # wrk's connects are through
    probe = Probe(port, seconds - 4.0)
    probe.start()
    probe.join(seconds + 10)
    res = finish(run, seconds)
    answered = sorted(t for t in probe.took if t is not None)
    res.update(probes=len(probe.took), probes_failed=len(probe.took) - len(answered),
               probe_p50_s=round(answered[len(answered) // 2], 3) if answered else None,
               probe_max_s=round(answered[-1], 3) if answered else None,
               probes_over_1s=sum(1 for t in answered if t >= 1.0))
    text = proc.log_path.read_text(errors="replace")
    res["log_lines_accept"] = sum(1 for line in text.splitlines() if "accept" in line)
    res["log_lines_emfile"] = text.count("Too many open files")
    return res


def run_scenario(name: str, lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for target in args.targets:
        workers = args.workers if name == "rolling-restart" else 1
        started = lab.start(target, workers, 1024 if name == "overload" else None)
        if isinstance(started, str):
            log(f"{name}/{target}: skipped: {started}")
            results[target] = {"skipped": started}
            continue
        proc, port = started
        log(f"{name}/{target} on port {port}")
        try:
            call: Callable[..., dict[str, Any]]
            if name in ("shutdown", "rolling-restart"):
                call = shutdown if name == "shutdown" else rolling_restart
                res = call(lab, proc, port, args, target)
            else:
                call = {"soak": soak, "upstream-restart": upstream_restart,
                        "reload-storm": reload_storm, "slow-clients": slow_clients,
                        "overload": overload}[name]
                res = call(lab, proc, port, args)
        finally:
            proc.stop()
            if lab.origin is None or not lab.origin.alive():
                lab.start_origin()
        summary = {k: v for k, v in res.items() if k != "samples"}
        log(f"{name}/{target}: {json.dumps(summary)}")
        results[target] = res
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--targets", default="veloxy,nginx",
                        type=lambda s: [t for t in s.split(",") if t])
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="length of each chaos run (default 20)")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("--soak-connections", type=int, default=1000)
    parser.add_argument("--sample", type=float, default=5.0,
                        help="soak: seconds between RSS/descriptor samples")
    parser.add_argument("--workers", type=int, default=2, help="rolling-restart's workers")
    parser.add_argument("--slowloris", type=int, default=200)
    parser.add_argument("--slow-readers", type=int, default=50)
    parser.add_argument("--overload-clients", type=int, default=3000)
    parser.add_argument("--json", type=Path, help="write every result here")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    raise_nofile()
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="veloxy-chaos-") as tmp:
        lab = Lab(Path(tmp))
        lab.start_origin()
        try:
            for name in names:
                out[name] = run_scenario(name, lab, args)
        finally:
            if lab.origin is not None:
                lab.origin.stop()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    for name in names:
        for target, res in out[name].items():
            keys = ("requests", "lost", "err_read", "err_timeout", "non2xx", "p99_ms",
                    "rss_kib_first", "rss_kib_last", "fds_first", "fds_last", "reloads",
                    "restarts", "stopped_in_s", "slowloris_closed", "slow_readers_closed",
                    "probes", "probes_failed", "probe_p50_s", "probe_max_s", "probes_over_1s",
                    "log_lines_accept", "log_lines_emfile")
            shown = ", ".join(f"{k}={res[k]}" for k in keys if k in res)
            print(f"{name:17} {target:7} {shown or res.get('skipped')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
