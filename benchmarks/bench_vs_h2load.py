#!/usr/bin/env python3
"""`veloxy bench --h2` against h2load, on the same nginx HTTP/2 listeners, in the same run.

Why: issue 13's bar for the generator's HTTP/2 is relative: driving nginx's h2 listener,
`veloxy bench --h2 -p 2 -c 10 -m 10` must reach at least 0.6x the requests/s of
`h2load -c 10 -m 10 -t 2`. Both numbers only mean something side by side, against the same
server in the same minutes, so this script starts one nginx (1 worker, a static 100-byte file,
access_log off) with two HTTP/2 listeners, h2c (prior knowledge, `listen ... http2`) and TLS
(ALPN h2, a trustme certificate), and drives each alternately with both tools: `--reps`
repetitions, the order flipped every repetition so that drift on a shared machine hits both
alike; medians reported, with the CPU each tool used per request (getrusage of the children:
the whole process tree, interpreter start-up and veloxy's coordinating parent included).

    python benchmarks/bench_vs_h2load.py                        # 5 s runs, 3 repetitions
    python benchmarks/bench_vs_h2load.py --duration 3s --reps 1  # a quick look
    python benchmarks/bench_vs_h2load.py --profile [--listeners tls] # where the CPU goes

--profile runs one veloxy bench worker (5 connections x 10 streams, 3 s) under cProfile
against the first listener instead, and prints the shares of its time by part.

Needs h2load (Debian: nghttp2-client) and nginx with http_v2_module. Prints a Markdown section
for docs/BENCHMARKS.md; raw figures go to benchmarks/results/bench_vs_h2load-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trustme

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from veloxy.config.values import parse_duration  # noqa: E402
from veloxy.lab.procs import free_port  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The load generator comparison's helpers: nginx in the foreground, the children's CPU,
# medians, the machine line.
from bench_vs_wrk import (  # noqa: E402
    _children_cpu,
    log,
    machine,
    median,
    save_raw,
    start_nginx,
    stop_nginx,
)

NGINX_CONF = """\
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{ listen 127.0.0.1:{h2c} http2; root {prefix}/html; }}
    server {{
        listen 127.0.0.1:{tls} ssl http2; root {prefix}/html;
        ssl_certificate {prefix}/cert.pem; ssl_certificate_key {prefix}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
    }}
}}
"""


class Nginx:
    def __init__(self) -> None:
        self.prefix = Path(tempfile.mkdtemp(prefix="veloxy-h2load-nginx-"))
        os.chmod(self.prefix, 0o755)  # nginx workers run as "nobody" when started as root
        html = self.prefix / "html"
        html.mkdir(mode=0o755)
        (html / "index.html").write_bytes(b"x" * 100)
        os.chmod(html / "index.html", 0o644)
        self.ca = trustme.CA()
        leaf = self.ca.issue_cert("localhost", "127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(self.prefix / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(self.prefix / "key.pem"))
        self.ca_file = self.prefix / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.h2c, self.tls = free_port(), free_port()
        self.proc = start_nginx(self.prefix, NGINX_CONF.format(
            prefix=self.prefix, h2c=self.h2c, tls=self.tls), self.tls)

    def url(self, listener: str) -> str:
        return (f"https://127.0.0.1:{self.tls}/" if listener == "tls"
                else f"http://127.0.0.1:{self.h2c}/")

    def stop(self) -> None:
        stop_nginx(self.proc, self.prefix)


def _run(argv: list[str], timeout: float) -> tuple[str, float]:
    """Run a tool; returns (stdout, CPU seconds of it and its children)."""
    cpu0 = _children_cpu()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout, _children_cpu() - cpu0


def run_h2load(url: str, c: int, m: int, t: int, duration: float) -> dict[str, Any]:
    out, cpu = _run(["h2load", "-c", str(c), "-m", str(m), "-t", str(t), "-D",
                     f"{duration:g}", url], duration + 30)
    match = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)
    if not match or not done:
        raise SystemExit(f"unexpected h2load output:\n{out}")
    rps = float(match.group(1))
    return {"requests_per_s": rps, "errors": int(done.group(3)) + int(done.group(4)),
            "cpu_percent": 100 * cpu / duration,
            "cpu_us_per_request": 1e6 * cpu / (rps * duration)}


def run_veloxy(url: str, c: int, m: int, p: int, duration: float,
               ca: Path) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    argv = [sys.executable, "-m", "veloxy", "bench", "--h2", url, "-c", str(c), "-m", str(m),
            "-p", str(p), "-d", f"{duration:g}s", "--json", out_path]
    if url.startswith("https:"):
        argv += ["--ca", str(ca)]
    try:
        _, cpu = _run(argv, duration + 30)
        doc = json.loads(Path(out_path).read_text())
    finally:
        os.unlink(out_path)
    rps = doc["requests_per_s"]
    workers_cpu = sum(p["cpu_percent"] for p in doc["generator"]["processes"])
    return {"requests_per_s": rps, "errors": doc["errors"]["total"],
            "cpu_percent": workers_cpu,
            "cpu_us_per_request": 1e6 * cpu / (rps * duration),
            # The load-generating processes alone, over their measured window.
            "worker_cpu_us_per_request": 1e4 * workers_cpu / rps if rps else 0.0,
            "warnings": doc["generator"]["warnings"]}


def profile(url: str, ca: Path) -> str:
    """One worker under cProfile (forked by run_bench: the wrapper is inherited)."""
    import cProfile
    import pstats

    from veloxy.loadgen import runner, worker
    from veloxy.loadgen.settings import BenchSettings

    out = Path(tempfile.mkdtemp(prefix="veloxy-h2-profile-")) / "worker.prof"
    plain = worker.worker_main

    def profiled(plan: Any, channel: Any, debug: bool = False) -> None:
        prof = cProfile.Profile()
        prof.enable()
        try:
            plain(plan, channel, debug)
        finally:
            prof.disable()
            prof.dump_stats(str(out))

    runner.worker_main = profiled  # type: ignore[assignment]  # same signature
    outcome = runner.run_bench(BenchSettings(
        url=url, connections=5, streams=10, duration=3.0, processes=1, http2=True,
        ca=str(ca) if url.startswith("https:") else None))
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]  # pstats' table
    total = sum(v[2] for v in stats.values())

    def cum(file: str, func: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == func)

    receive, send = cum("h2/connection.py", "receive_data"), cum("h2/connection.py",
                                                                  "send_headers")
    on_read = cum("loadgen/h2driver.py", "data_received")
    events = cum("loadgen/h2driver.py", "on_events")
    rows = [("h2 receive_data", receive),
            ("of which repr(frame) for h2's trace log", cum("hyperframe/frame.py", "__repr__")),
            ("h2 send_headers", send),
            ("data_received's own time (the socket write: C, not profiled)",
             on_read - receive - events),
            ("veloxy's driver (events, records, scheduling)", events - send)]
    lines = [f"{outcome.completed} requests, {outcome.requests_per_s:,.0f} req/s under the "
             "profiler", "", "| part | share |", "|---|---:|"]
    lines += [f"| {name} | {100 * t / total:.0f}% |" for name, t in rows]
    return "\n".join(lines)


def spread(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows]
    return f" [{min(values):,.0f}-{max(values):,.0f}]" if len(values) > 1 else ""


def tool_versions() -> str:
    h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return f"{h2load.strip().splitlines()[0] if h2load.strip() else 'h2load ?'}; {nginx}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=parse_duration, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="h2load -t and veloxy -p")
    parser.add_argument("--listeners", default="h2c,tls")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for tool in ("h2load", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    c, m, t, d = args.connections, args.streams, args.threads, args.duration
    listeners = args.listeners.split(",")
    nginx = Nginx()
    if args.profile:
        try:
            print(profile(nginx.url(listeners[0]), nginx.ca_file))
        finally:
            nginx.stop()
        return 0
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "machine": machine(), "tools": tool_versions(),
                               "settings": vars(args),
                               "runs": {name: {"h2load": [], "veloxy": []}
                                        for name in listeners}}
    try:
        for name in listeners:
            run_h2load(nginx.url(name), c, m, t, 1.0)  # warm nginx up
        for rep in range(args.reps):
            for name in listeners:
                order = ("h2load", "veloxy") if rep % 2 == 0 else ("veloxy", "h2load")
                for tool in order:
                    log(f"rep {rep + 1}/{args.reps} {name}: {tool}")
                    rows = results["runs"][name][tool]
                    if tool == "h2load":
                        rows.append(run_h2load(nginx.url(name), c, m, t, d))
                    else:
                        rows.append(run_veloxy(nginx.url(name), c, m, t, d, nginx.ca_file))
                    log(f"  {rows[-1]['requests_per_s']:,.0f} req/s, "
                        f"{rows[-1]['cpu_us_per_request']:.1f} CPU µs/req")
    finally:
        nginx.stop()
    print(markdown(results, args))
    log(f"raw figures: {save_raw('bench_vs_h2load', results)}")
    return 0


def markdown(r: dict[str, Any], args: argparse.Namespace) -> str:
    c, m, t = args.connections, args.streams, args.threads
    lines = [f"Medians of {args.reps} interleaved runs of {args.duration:g} s; nginx 1 worker, "
             f"static 100-byte file; {r['tools']}; {r['machine']}.", "",
             "| listener | tool | requests/s | generator CPU | CPU µs/req | errors |",
             "|---|---|---:|---:|---:|---:|"]
    verdicts = []
    worker_cpu = []
    for name, runs in r["runs"].items():
        for tool, label in (("h2load", f"h2load -c {c} -m {m} -t {t}"),
                            ("veloxy", f"veloxy bench --h2 -p {t} -c {c} -m {m}")):
            rows = runs[tool]
            lines.append(f"| {name} | {label} | {median(rows, 'requests_per_s'):,.0f}"
                         f"{spread(rows, 'requests_per_s')} | "
                         f"{median(rows, 'cpu_percent'):.0f}% | "
                         f"{median(rows, 'cpu_us_per_request'):.1f} | "
                         f"{median(rows, 'errors'):.0f} |")
        ratio = (median(runs["veloxy"], "requests_per_s")
                 / median(runs["h2load"], "requests_per_s"))
        cpu = (median(runs["veloxy"], "cpu_us_per_request")
               / median(runs["h2load"], "cpu_us_per_request"))
        worker_cpu.append(f"{name} {median(runs['veloxy'], 'worker_cpu_us_per_request'):.1f}")
        verdicts.append(f"{name}: veloxy bench / h2load requests/s **{ratio:.2f}x** (target "
                        f">= 0.6x: {'met' if ratio >= 0.6 else 'not met'}); CPU per request "
                        f"**{cpu:.1f}x** h2load's")
    lines += ["", *[f"- {v}" for v in verdicts],
              "- veloxy bench's load-generating processes alone (start-up and the coordinator "
              "left out), CPU µs/req: " + ", ".join(worker_cpu)]
    warnings = sorted({w for runs in r["runs"].values() for row in runs["veloxy"]
                       for w in row["warnings"]})
    if warnings:
        lines += ["", "veloxy bench's own warnings during these runs: " + "; ".join(warnings)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
