"""Fork against spawn workers (config `workers_mode`, workers.py) on Linux: requests/s and
the proxy's CPU per request, 2 workers each, interleaved rounds.

Each round starts `veloxy serve --workers 2 --workers-mode fork` and then `... spawn` (the
order alternating) in front of one `veloxy origin`, waits for it, and runs `veloxy bench`
(closed loop, keep-alive) against it; the proxy's CPU is its process tree's utime+stime
over the bench run (/proc). Prints each round and the median of spawn/fork ratios.

    python benchmarks/workers_modes.py [--rounds 5] [--duration 5s] [--connections 64]

About rounds x 2 x (duration + 2 s). The machine's load moves absolute numbers; the ratio of
interleaved runs is what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from veloxy.lab.procs import tree_cpu_seconds  # noqa: E402  (after the path set-up)

LISTEN = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


def start(args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "veloxy", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=env)
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        if match := LISTEN.search(line):
            os.set_blocking(proc.stderr.fileno(), False)  # nobody reads it any more
            return proc, int(match.group(1))
    raise SystemExit(f"{args} exited before listening")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(15)


def one_run(mode: str, origin: int, duration: str, connections: int, processes: int
            ) -> tuple[float, float]:
    """(requests/s, proxy CPU µs per request) of one bench run through `mode` workers."""
    proxy, port = start(["serve", "--listen", "127.0.0.1:0", "--workers", "2",
                         "--workers-mode", mode, "--log-level", "warning",
                         "--upstream", f"http://127.0.0.1:{origin}"])
    try:
        time.sleep(0.5)  # let every worker reach its loop
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            before = tree_cpu_seconds(proxy.pid)
            subprocess.run([sys.executable, "-m", "veloxy", "bench", "-c", str(connections),
                            "-d", duration, "-p", str(processes), "--json", str(out),
                            f"http://127.0.0.1:{port}/?size=64"],
                           check=True, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(REPO / "src")})
            cpu = tree_cpu_seconds(proxy.pid) - before
            result = json.loads(out.read_text())
    finally:
        stop(proxy)
    if result["requests"]["failed"] or result["errors"]["total"]:
        raise SystemExit(f"{mode}: errors in the run: {result['errors']}")
    return result["requests_per_s"], cpu / result["requests"]["completed"] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--processes", type=int, default=1, help="generator processes")
    args = parser.parse_args()
    origin, origin_port = start(["origin", "--listen", "127.0.0.1:0"])
    ratios, cpu_ratios = [], []
    try:
        for round_ in range(args.rounds):
            modes = ["fork", "spawn"] if round_ % 2 == 0 else ["spawn", "fork"]
            got = {mode: one_run(mode, origin_port, args.duration, args.connections,
                                 args.processes) for mode in modes}
            ratios.append(got["spawn"][0] / got["fork"][0])
            cpu_ratios.append(got["spawn"][1] / got["fork"][1])
            print(f"round {round_ + 1}: " + "  ".join(
                f"{mode} {rate:8,.0f} req/s {cpu:5.1f} µs CPU/req"
                for mode, (rate, cpu) in sorted(got.items())), flush=True)
    finally:
        stop(origin)
    print(f"spawn/fork requests/s: median {statistics.median(ratios):.3f} "
          f"(rounds {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"spawn/fork CPU per request: median {statistics.median(cpu_ratios):.3f}")


if __name__ == "__main__":
    main()
