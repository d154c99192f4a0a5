#!/usr/bin/env python3
"""`veloxy bench` against wrk, on the same nginx static target, in the same run.

Why: the issue's bar for the load generator is relative, not absolute: on this machine,
`veloxy bench -p 2` must reach at least 60% of `wrk -t2` requests/s at 64 connections, and its
reported p50 must agree with wrk's within 20% at a rate both can hold. Both numbers only mean
something when measured side by side, against the same server, in the same minutes; so this
script starts one nginx (static 100-byte file, access_log off, `--nginx-workers` workers) and
drives it alternately with both tools.

Two measurements, each repeated `--reps` times with the two tools interleaved (and the order
flipped every repetition, so slow drift of a shared machine hits both alike); medians reported:

saturation   `wrk -t2 -c64 -d D --latency` vs `veloxy bench -p 2 -c 64 -d D --latency`.
             requests/s, p50, p99, and the CPU the generator used (getrusage of the children).
fixed rate   at `--rate-share` (default 50%) of veloxy's median saturated rate, so that both
             can hold it: `veloxy bench -R RATE` (open loop) vs wrk paced by a Lua `delay()`
             (Debian's wrk has no -R): a think time of 64/RATE s before each request on each
             connection, fixed ("wrk paced") or uniform in [0, 2 x 64/RATE] ("wrk random").
             This is closed loop with think time, so wrk's achieved rate is a little lower, and
             how the think time is drawn moves wrk's own p50 a lot (see docs/BENCHMARKS.md):
             both are shown. p50 of all; veloxy's corrected and uncorrected p50.

Usage (from the repository root, wrk and nginx installed)::

    python benchmarks/bench_vs_wrk.py                       # 10 s runs, 3 repetitions
    python benchmarks/bench_vs_wrk.py --duration 3s --reps 1 # a quick look

It prints a Markdown section for docs/BENCHMARKS.md and writes the raw figures to
benchmarks/results/bench_vs_wrk-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # veloxy's helpers, without installing the package

from veloxy.config.values import parse_duration  # noqa: E402  (5s, 1m, 500ms, 1m30s)
from veloxy.lab.procs import cpu_model, free_port  # noqa: E402

BODY = b"x" * 100

NGINX_CONF = """\
worker_processes {workers};
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {prefix}/html;
    }}
}}
"""

_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Nginx:
    def __init__(self, workers: int) -> None:
        self.prefix = Path(tempfile.mkdtemp(prefix="veloxy-bench-nginx-"))
        os.chmod(self.prefix, 0o755)  # nginx workers run as "nobody" when started as root
        html = self.prefix / "html"
        html.mkdir(mode=0o755)
        (html / "index.html").write_bytes(BODY)
        os.chmod(html / "index.html", 0o644)
        self.port = free_port()
        self.proc = start_nginx(self.prefix, NGINX_CONF.format(
            workers=workers, prefix=self.prefix, port=self.port), self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        stop_nginx(self.proc, self.prefix)


def start_nginx(prefix: Path, conf_text: str, port: int) -> subprocess.Popen[bytes]:
    """nginx with `conf_text` in `prefix`, in the foreground, once it accepts on `port`
    (also used by bench_vs_h2load.py)."""
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                detail = proc.stderr.read().decode()  # type: ignore[union-attr]  # PIPE
                raise SystemExit(f"nginx failed: {detail}") from None
            time.sleep(0.05)
    raise SystemExit("nginx did not start")


def stop_nginx(proc: subprocess.Popen[bytes], prefix: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    shutil.rmtree(prefix, ignore_errors=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: list[str], timeout: float) -> tuple[str, float, float]:
    """Run a tool; returns (stdout, wall seconds, CPU seconds of it and its children)."""
    cpu0, t0 = _children_cpu(), time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    if result.returncode not in (0,):
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout, wall, cpu


def _us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"bad wrk time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pcts = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {"requests_per_s": rps, "p50_us": _us(pcts["50"]), "p99_us": _us(pcts["99"]),
            "errors": sum(int(x) for x in errors.groups()) if errors else 0}


def run_wrk(url: str, connections: int, threads: int, duration: float,
            delay_ms: int | None = None, random_delay: bool = False) -> dict[str, float]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    script = None
    if delay_ms is not None:
        think = f"math.random(0, {2 * delay_ms})" if random_delay else str(delay_ms)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(f"function delay()\n  return {think}\nend\n")
        script = f.name
        argv += ["-s", script]
    try:
        out, _, cpu = _run([*argv, url], duration + 30)
    finally:
        if script is not None:
            os.unlink(script)
    figures = parse_wrk(out)
    figures["cpu_percent"] = 100 * cpu / duration
    figures["cpu_us_per_request"] = 1e6 * cpu / (figures["requests_per_s"] * duration)
    return figures


def run_veloxy(url: str, connections: int, processes: int, duration: float,
               rate: float | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    argv = [sys.executable, "-m", "veloxy", "bench", url, "-c", str(connections), "-p",
            str(processes), "-d", f"{duration:g}s", "--json", out_path]
    if rate is not None:
        argv += ["-R", f"{rate:.0f}"]
    try:
        _, _, cpu = _run(argv, duration + 30)
        doc = json.loads(Path(out_path).read_text())
    finally:
        os.unlink(out_path)
    raw = doc["latency_uncorrected"]
    return {
        "requests_per_s": doc["requests_per_s"],
        "p50_us": doc["latency"]["percentiles"]["50"],
        "p99_us": doc["latency"]["percentiles"]["99"],
        "p50_uncorrected_us": raw["percentiles"]["50"] if raw else None,
        "p99_uncorrected_us": raw["percentiles"]["99"] if raw else None,
        "errors": doc["errors"]["total"],
        "cpu_percent": sum(p["cpu_percent"] for p in doc["generator"]["processes"]),
        # The whole process tree from start to exit (interpreter start-up, the coordinating
        # parent, every worker), measured as wrk's is: the honest cost of a run.
        "cpu_us_per_request": 1e6 * cpu / (doc["requests_per_s"] * duration),
        "warnings": doc["generator"]["warnings"],
    }


def median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows if r.get(key) is not None)


def spread(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows]
    return f"[{min(values):,.0f}-{max(values):,.0f}]" if len(values) > 1 else ""


def fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def machine() -> str:
    cpu = cpu_model() or platform.processor() or "?"
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python " \
           f"{platform.python_version()}"


def tool_versions() -> str:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return f"{wrk[0].split(' Copyright')[0] if wrk else 'wrk ?'}; {nginx}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=parse_duration, default=10.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk -t and veloxy -p")
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--rate-share", type=float, default=0.5)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    c, t, d = args.connections, args.threads, args.duration
    nginx = Nginx(args.nginx_workers)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "machine": machine(), "tools": tool_versions(),
                               "settings": vars(args), "saturation": {"wrk": [], "veloxy": []},
                               "fixed_rate": {"wrk": [], "wrk_random": [], "veloxy": []}}
    try:
        run_wrk(nginx.url, c, t, 1.0)  # warm nginx and the page cache
        sat = results["saturation"]
        for rep in range(args.reps):
            order = ("wrk", "veloxy") if rep % 2 == 0 else ("veloxy", "wrk")
            for tool in order:
                log(f"saturation rep {rep + 1}/{args.reps}: {tool}")
                sat[tool].append(run_wrk(nginx.url, c, t, d) if tool == "wrk"
                                 else run_veloxy(nginx.url, c, t, d))
        rate = round(args.rate_share * median(sat["veloxy"], "requests_per_s"), -2)
        delay_ms = max(1, round(1000 * c / rate))
        results["rate"] = rate
        results["wrk_delay_ms"] = delay_ms
        fixed = results["fixed_rate"]
        for rep in range(args.reps):
            order = ["wrk", "wrk_random", "veloxy"]
            for tool in order if rep % 2 == 0 else order[::-1]:
                log(f"fixed rate {rate:.0f}/s rep {rep + 1}/{args.reps}: {tool}")
                if tool == "veloxy":
                    fixed[tool].append(run_veloxy(nginx.url, c, t, d, rate))
                else:
                    fixed[tool].append(run_wrk(nginx.url, c, t, d, delay_ms,
                                               random_delay=tool == "wrk_random"))
    finally:
        nginx.stop()

    print(markdown(results, args))
    log(f"raw figures: {save_raw('bench_vs_wrk', results)}")
    return 0


def save_raw(name: str, results: dict[str, Any]) -> Path:
    """Write a run's raw figures to benchmarks/results/NAME-TIME.json (git-ignored)."""
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_path = out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    raw_path.write_text(json.dumps(results, indent=2) + "\n")
    return raw_path


def markdown(r: dict[str, Any], args: argparse.Namespace) -> str:
    sat, fixed = r["saturation"], r["fixed_rate"]
    w_rps, v_rps = median(sat["wrk"], "requests_per_s"), median(sat["veloxy"], "requests_per_s")
    w50, v50 = median(fixed["wrk"], "p50_us"), median(fixed["veloxy"], "p50_us")
    v50u = median(fixed["veloxy"], "p50_uncorrected_us")
    cpu_ratio = (median(sat["veloxy"], "cpu_us_per_request")
                 / median(sat["wrk"], "cpu_us_per_request"))
    c, t = args.connections, args.threads
    lines = [
        f"Medians of {args.reps} interleaved runs of {args.duration:g} s; nginx "
        f"{args.nginx_workers} worker(s), static 100-byte file; {r['tools']}.",
        "",
        f"**Saturation, {c} connections** (`wrk -t{t} -c{c} --latency` vs "
        f"`veloxy bench -p {t} -c {c}`)",
        "",
        "| tool | requests/s | p50 | p99 | generator CPU | CPU µs/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| wrk -t{t} | {w_rps:,.0f} {spread(sat['wrk'], 'requests_per_s')} | "
        f"{fmt_us(median(sat['wrk'], 'p50_us'))} | {fmt_us(median(sat['wrk'], 'p99_us'))} | "
        f"{median(sat['wrk'], 'cpu_percent'):.0f}% | "
        f"{median(sat['wrk'], 'cpu_us_per_request'):.1f} | {median(sat['wrk'], 'errors'):.0f} |",
        f"| veloxy bench -p {t} | {v_rps:,.0f} {spread(sat['veloxy'], 'requests_per_s')} | "
        f"{fmt_us(median(sat['veloxy'], 'p50_us'))} | "
        f"{fmt_us(median(sat['veloxy'], 'p99_us'))} | "
        f"{median(sat['veloxy'], 'cpu_percent'):.0f}% | "
        f"{median(sat['veloxy'], 'cpu_us_per_request'):.1f} | "
        f"{median(sat['veloxy'], 'errors'):.0f} |",
        "",
        f"veloxy bench / wrk requests/s: **{100 * v_rps / w_rps:.0f}%** (target >= 60%); "
        f"CPU per request: **{cpu_ratio:.2f}x** wrk's (target <= 1.5x; whole process trees, "
        "start-up included, from getrusage of the children).",
        "",
        f"**Fixed rate {r['rate']:,.0f} req/s** ({args.rate_share:.0%} of veloxy's saturated "
        f"rate): `veloxy bench -R {r['rate']:.0f}` vs wrk paced by a Lua `delay()` of "
        f"{r['wrk_delay_ms']} ms per request and connection (fixed, or uniform in "
        f"[0, {2 * r['wrk_delay_ms']}] ms)",
        "",
        "| tool | achieved req/s | p50 | p99 |",
        "|---|---:|---:|---:|",
        f"| wrk paced (fixed think time) | {median(fixed['wrk'], 'requests_per_s'):,.0f} | "
        f"{fmt_us(w50)} | {fmt_us(median(fixed['wrk'], 'p99_us'))} |",
        f"| wrk random (uniform think time) | "
        f"{median(fixed['wrk_random'], 'requests_per_s'):,.0f} | "
        f"{fmt_us(median(fixed['wrk_random'], 'p50_us'))} | "
        f"{fmt_us(median(fixed['wrk_random'], 'p99_us'))} |",
        f"| veloxy bench -R (corrected) | {median(fixed['veloxy'], 'requests_per_s'):,.0f} | "
        f"{fmt_us(v50)} | {fmt_us(median(fixed['veloxy'], 'p99_us'))} |",
        f"| veloxy bench -R (uncorrected) | | {fmt_us(v50u)} | "
        f"{fmt_us(median(fixed['veloxy'], 'p99_uncorrected_us'))} |",
        "",
        f"p50 veloxy / wrk paced: **{100 * v50 / w50:.0f}%**; veloxy / wrk random: "
        f"**{100 * v50 / median(fixed['wrk_random'], 'p50_us'):.0f}%**; at saturation: "
        f"**{100 * median(sat['veloxy'], 'p50_us') / median(sat['wrk'], 'p50_us'):.0f}%** "
        "(the same rate only when the server is the bottleneck; target within 80-120%).",
    ]
    warnings = sorted({w for row in sat["veloxy"] + fixed["veloxy"] for w in row["warnings"]})
    if warnings:
        lines += ["", "veloxy bench's own warnings during these runs: " + "; ".join(warnings)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
