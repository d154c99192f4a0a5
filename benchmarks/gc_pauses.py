#!/usr/bin/env python3
"""Young-collection pauses inside a real veloxy proxy under the fixed-rate load (issue 12).

Starts `veloxy origin` and one veloxy worker (`--config`, e.g. with `tuning.gc.gen0_threshold`
set), drives it with `veloxy bench -p 1 -c C -R RATE` (proxy_compare.py's rate10k-c1000: 1000
connections, 10,000 req/s), and times every collection in the proxy with `gc.callbacks`. The
callbacks are installed only by this script's `--serve` mode, a wrapper around
`veloxy serve`: the proxy itself carries no timing code and no per-request cost.

Reports, over the measured window only (the bench's warm-up excluded): collections per
second by generation, the pause per collection (wall time: median, p99, max, in µs; and the
thread's CPU time in it, which leaves out preemption on a shared machine), and the share of
the wall time the loop spent collecting; with the bench's p50/p99/max latency.

    python benchmarks/gc_pauses.py --config benchmarks/configs/veloxy-pool1024.yaml \
        --gen0 700 --gen0 50000 --reps 3

Each --gen0 value is appended to the config as `tuning.gc.gen0_threshold`; the values are
alternated in every repetition. The proxy is pinned to --proxy-cpu, origin and generator to
--client-cpu, as in proxy_compare.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def serve_with_gc_timing(out: Path, argv: list[str]) -> int:
    """`veloxy serve ARGV` in this process, with every collection's start, duration and
    generation recorded (monotonic ns, comparable with the parent's clock) and written
    to OUT as JSON when the server returns."""
    records: list[tuple[int, int, int, int]] = []
    started = [0, 0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.monotonic_ns()
            started[1] = time.thread_time_ns()
        else:
            records.append((started[0], time.monotonic_ns() - started[0], info["generation"],
                            time.thread_time_ns() - started[1]))

    gc.callbacks.append(on_gc)
    from veloxy.cli import main

    try:
        return main(["serve", *argv])
    finally:
        gc.callbacks.remove(on_gc)
        out.write_text(json.dumps({"threshold": gc.get_threshold(), "records": records}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


def pctl(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_run(args: argparse.Namespace, gen0: int, origin_port: int, work: Path) -> dict:
    conf = work / f"veloxy-{gen0}.yaml"
    text = args.config.read_text().replace("{upstream}", f"http://{HOST}:{origin_port}")
    conf.write_text(text + f"\ntuning:\n  gc:\n    gen0_threshold: {gen0}\n")
    port = free_port()
    out = work / f"gc-{gen0}.json"
    cpu = ["taskset", "-c", args.proxy_cpu]
    with open(work / f"proxy-{gen0}.log", "w") as log:
        proxy = subprocess.Popen(
            [*cpu, sys.executable, __file__, "--serve", str(out), "--", "--config", str(conf),
             "--listen", f"{HOST}:{port}", "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_port(port)
        bench_json = work / f"bench-{gen0}.json"
        t0 = time.monotonic_ns() + int(args.warmup * 1e9)
        subprocess.run(
            ["taskset", "-c", args.client_cpu, sys.executable, "-m", "veloxy", "bench", "-p",
             "1", "-c", str(args.connections), "-R", str(args.rate), "-d",
             f"{args.duration}s", "--warmup", f"{args.warmup}s", "--timeout", "5s",
             "--json", str(bench_json), f"http://{HOST}:{port}/"],
            check=True, stdout=subprocess.DEVNULL)
        t1 = min(time.monotonic_ns(), t0 + int(args.duration * 1e9))
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=30)
    data = json.loads(out.read_text())
    window = [(s, d, g, c) for s, d, g, c in data["records"] if t0 <= s <= t1]
    seconds = (t1 - t0) / 1e9
    young = [d / 1e3 for _, d, g, _ in window if g == 0]
    young_cpu = [c / 1e3 for _, _, g, c in window if g == 0]
    gen1 = [d / 1e3 for _, d, g, _ in window if g == 1]
    gen2 = [d / 1e3 for _, d, g, _ in window if g == 2]
    gen2_cpu = [c / 1e3 for _, _, g, c in window if g == 2]
    bench = json.loads(bench_json.read_text())
    return {
        "gen0": gen0, "threshold": data["threshold"], "seconds": round(seconds, 2),
        "gen0_per_s": round(len(young) / seconds, 1),
        "gen1_per_s": round(len(gen1) / seconds, 2),
        "gen2_count": len(gen2),
        "gen0_pause_us": {"p50": round(pctl(young, 0.5)), "p99": round(pctl(young, 0.99)),
                          "max": round(max(young, default=0))},
        "gen0_cpu_us": {"p50": round(pctl(young_cpu, 0.5)),
                        "max": round(max(young_cpu, default=0))},
        "gen1_pause_us_max": round(max(gen1, default=0)),
        "gen2_pause_us": [round(d) for d in gen2],
        "gen2_cpu_us": [round(c) for c in gen2_cpu],
        "gc_share_pct": round(100 * sum(d for _, d, _, _ in window) / 1e9 / seconds, 3),
        "bench": summarize_bench(bench),
    }


def summarize_bench(bench: dict) -> dict:
    """Counts and p50/p99/max latency (ms, from the intended send time) of `veloxy bench --json`."""
    lat = bench["latency"]
    pct = lat["percentiles"]
    return {"completed": bench["requests"]["completed"], "errors": bench["errors"]["total"],
            "rps": round(bench["requests_per_s"]),
            "p50_ms": round(pct["50"] / 1e3, 2), "p99_ms": round(pct["99"] / 1e3, 2),
            "max_ms": round(lat["max_us"] / 1e3, 2)}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        sep = sys.argv.index("--")
        return serve_with_gc_timing(Path(sys.argv[2]), sys.argv[sep + 1:])
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True,
                   help="veloxy config template ({upstream} becomes the origin's URL)")
    p.add_argument("--gen0", type=int, action="append", required=True,
                   help="tuning.gc.gen0_threshold to try (repeat)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--rate", type=int, default=10_000)
    p.add_argument("--duration", type=int, default=8, help="measured seconds")
    p.add_argument("--warmup", type=int, default=2, help="seconds before measuring")
    p.add_argument("--proxy-cpu", default="1")
    p.add_argument("--client-cpu", default="0")
    p.add_argument("--json", type=Path, help="write every run's figures here")
    args = p.parse_args()
    env_cpu = ["taskset", "-c", args.client_cpu]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gc-pauses-") as tmp:
        work = Path(tmp)
        origin_port = free_port()
        origin = subprocess.Popen(
            [*env_cpu, sys.executable, "-m", "veloxy", "origin", "--listen",
             f"{HOST}:{origin_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(origin_port)
            for rep in range(args.reps):
                order = args.gen0 if rep % 2 == 0 else list(reversed(args.gen0))
                for gen0 in order:
                    run = one_run(args, gen0, origin_port, work)
                    run["rep"] = rep
                    runs.append(run)
                    print(json.dumps(run), flush=True)
        finally:
            origin.send_signal(signal.SIGTERM)
            origin.wait(timeout=30)
    print("\nmedians per threshold:")
    for gen0 in args.gen0:
        mine = [r for r in runs if r["gen0"] == gen0]
        med = statistics.median
        print(f"  gen0 {gen0}: {med(r['gen0_per_s'] for r in mine)} young/s, pause p50 "
              f"{med(r['gen0_pause_us']['p50'] for r in mine)} µs, p99 "
              f"{med(r['gen0_pause_us']['p99'] for r in mine)} µs, max "
              f"{max(r['gen0_pause_us']['max'] for r in mine)} µs; gen1 "
              f"{med(r['gen1_per_s'] for r in mine)}/s, max "
              f"{max(r['gen1_pause_us_max'] for r in mine)} µs; gen2 "
              f"{sum(r['gen2_count'] for r in mine)} in all, pauses "
              f"{[d for r in mine for d in r['gen2_pause_us']]} µs (CPU "
              f"{[c for r in mine for c in r['gen2_cpu_us']]}); young CPU p50 "
              f"{med(r['gen0_cpu_us']['p50'] for r in mine)} max "
              f"{max(r['gen0_cpu_us']['max'] for r in mine)} µs; loop share "
              f"{med(r['gc_share_pct'] for r in mine)} %")
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
