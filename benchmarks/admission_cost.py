"""What admission costs when it is on (proxy/admission.py, issue 14): a route with a rate
limit, one with an in-flight cap and a proxy with load shedding, against a route with none,
through the whole server under wrk; and the memory a rate limit's remembered key takes.

    python benchmarks/admission_cost.py [--rounds 5] [--duration 3] [--connections 64]
    python benchmarks/admission_cost.py --memory [--keys 100000]

One `veloxy origin`, and two `veloxy serve` (one worker each) in front of it: proxy A with
the routes /free/ (nothing), /limited/ (rate_limit keyed by client_ip, at a rate no client
here reaches, so every request is admitted and the figure is the cost of checking) and
/capped/ (max_concurrent far above the connections); proxy B with `limits.shed` (loop_lag
and queue) and the same routes without their limits. Each round drives every target once
with `wrk -t1 -c64` (keep-alive GETs of 100-byte answers), in an order rotated each round
so that drift of a shared machine hits all alike; it reports requests/s and the proxy's
CPU time per request (utime+stime from /proc/PID/stat around the run), median over the
rounds, and each as a ratio to /free/ of the same round. The absolute numbers move with
the machine's load; the ratios of interleaved runs are what to read (callgrind counts for
the hot path itself: benchmarks/hotpath.py --admission).

--memory fills a rate limit's buckets with distinct IPv4-like keys and reports the bytes
per key that tracemalloc sees (the key's bytes object included, as a client's address is
when nothing else holds it): the memory bound of `max_keys`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
HUGE_RATE = "100000000/s"


def memory_per_key(keys: int) -> float:
    from veloxy.config import RateLimit
    from veloxy.proxy.admission import RateLimiter

    limiter = RateLimiter(RateLimit(rate="10/s", max_keys=keys))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(keys):
        limiter.take(b"10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255), 1.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(limiter) == keys
    return (after - before) / keys


def start(argv: list[str], pattern: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "veloxy", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 15
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(pattern + r" \S+:(\d+)", line)
        if match:  # what it prints later is read and dropped, so that it never blocks
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(match.group(1))
    proc.kill()
    raise SystemExit(f"{argv[0]} did not start")


def proxy_config(origin: int, routes: list[dict], limits: dict | None = None) -> str:
    import yaml

    return yaml.safe_dump({
        "listen": ["127.0.0.1:0"], "limits": limits or {},
        "routes": [{"upstream": "origin", **route} for route in routes],
        "upstreams": {"origin": {"servers": [f"http://127.0.0.1:{origin}"]}}})


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wrk(port: int, path: str, seconds: int, connections: int) -> int:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+) requests in", out)
    assert match, out
    if "Non-2xx" in out:
        raise SystemExit(f"answers other than 2xx on {path}:\n{out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    if args.memory:
        print(f"rate limit: {memory_per_key(args.keys):.0f} bytes per remembered key "
              f"({args.keys} IPv4-like keys)")
        return

    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            origin, origin_port = start(["origin", "--listen", "127.0.0.1:0"],
                                        "listening on")
            procs.append(origin)
            configs = {
                "A": proxy_config(origin_port, [
                    {"match": {"path_prefix": "/limited/"},
                     "rate_limit": {"rate": HUGE_RATE, "key": "client_ip"}},
                    {"match": {"path_prefix": "/capped/"}, "max_concurrent": 100000},
                    {"match": {"path_prefix": "/"}}]),
                # the same routes without their limits (the same routing work), shedding on
                "B": proxy_config(origin_port, [
                    {"match": {"path_prefix": "/limited/"}},
                    {"match": {"path_prefix": "/capped/"}},
                    {"match": {"path_prefix": "/"}}],
                    {"shed": {"loop_lag": "200ms", "queue": 1000}}),
            }
            proxies = {}
            for name, text in configs.items():
                path = Path(tmp) / f"{name}.yaml"
                path.write_text(text)
                proc, port = start(["serve", "--config", str(path)], "veloxy listening on")
                procs.append(proc)
                proxies[name] = (proc, port)
            targets = {  # name: (proxy, path)
                "no admission (/free/)": ("A", "/free/?size=100"),
                "rate_limit (client_ip)": ("A", "/limited/?size=100"),
                "max_concurrent": ("A", "/capped/?size=100"),
                "limits.shed (other proxy)": ("B", "/free/?size=100"),
            }
            for proxy, path in targets.values():  # warm up
                wrk(proxies[proxy][1], path, 1, args.connections)
            rates: dict[str, list[float]] = {name: [] for name in targets}
            cpu: dict[str, list[float]] = {name: [] for name in targets}
            order = list(targets)
            for round_ in range(args.rounds):
                for name in order[round_ % len(order):] + order[:round_ % len(order)]:
                    proxy, path = targets[name]
                    proc, port = proxies[proxy]
                    before = cpu_seconds(proc.pid)
                    done = wrk(port, path, args.duration, args.connections)
                    used = cpu_seconds(proc.pid) - before
                    rates[name].append(done / args.duration)
                    cpu[name].append(used / done * 1e6)
            base = "no admission (/free/)"
            print(f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds "
                  f"interleaved, medians (ratio to {base} of the same round)")
            print(f"{'target':28} {'req/s':>9} {'ratio (range)':>21} {'CPU µs/req':>11} "
                  f"{'ratio (range)':>21}")

            def ratios(values: dict[str, list[float]], name: str) -> str:
                each = [a / b for a, b in zip(values[name], values[base], strict=True)]
                return f"{statistics.median(each):6.3f} ({min(each):.3f}-{max(each):.3f})"

            for name in targets:
                print(f"{name:28} {statistics.median(rates[name]):9.0f} "
                      f"{ratios(rates, name):>21} {statistics.median(cpu[name]):11.1f} "
                      f"{ratios(cpu, name):>21}")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
