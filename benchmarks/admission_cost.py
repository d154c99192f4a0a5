"""What admission costs when it is on (proxy/admission.py, issue 14): a route with a rate
limit, one with an in-flight cap and a proxy with load shedding, against a route with none,
through the whole server under wrk; and the memory a rate limit's remembered key takes.

    python benchmarks/admission_cost.py [--rounds 5] [--duration 3] [--connections 64]
    python benchmarks/admission_cost.py --memory [--keys 100000]
    python benchmarks/admission_cost.py --callgrind [--rounds 2] [--duration 5]

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

--callgrind runs proxy A under valgrind's callgrind instead and counts the instructions of
the whole process per request for each of its routes (counters zeroed before each wrk run,
dumped after; requests still in flight when wrk stops, at most --connections, make the
figure a little high, alike for every route; timer work per second counts for more under
valgrind's slowness).

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

from veloxy.lab.procs import stop_all

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


def start(argv: list[str], pattern: str, prefix: tuple[str, ...] = (),
          ready: float = 15.0) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "veloxy", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + ready
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


def callgrind(rounds: int, seconds: int, connections: int) -> None:
    """Proxy A under callgrind: per target, counters zeroed, a wrk run, a dump; the
    instructions of the whole process (uvloop, libuv and the kernel-facing code included)
    divided by the requests wrk completed."""
    with tempfile.TemporaryDirectory() as tmp:
        procs: list[subprocess.Popen[str]] = []
        try:
            origin, origin_port = start(["origin", "--listen", "127.0.0.1:0"],
                                        "listening on")
            procs.append(origin)
            path = Path(tmp) / "A.yaml"
            path.write_text(proxy_config(origin_port, ROUTES_A))
            out = Path(tmp) / "cg.out"
            proxy, port = start(
                ["serve", "--config", str(path)], "veloxy listening on",
                ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"), ready=180)
            procs.append(proxy)
            for target in TARGETS_A.values():  # warm up
                wrk(port, target, 2, connections)
            counts: dict[str, list[float]] = {name: [] for name in TARGETS_A}
            dumps = 0
            for _ in range(rounds):
                for name, target in TARGETS_A.items():
                    subprocess.run(["callgrind_control", "-z", str(proxy.pid)],
                                   check=True, capture_output=True)
                    done = wrk(port, target, seconds, connections)
                    subprocess.run(["callgrind_control", "-d", str(proxy.pid)],
                                   check=True, capture_output=True)
                    dumps += 1
                    text = Path(f"{out}.{dumps}").read_text()
                    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
                    assert match, f"no total in dump {dumps}"
                    counts[name].append(int(match.group(1)) / done)
            base = next(iter(TARGETS_A))
            print(f"callgrind on `veloxy serve`, wrk -t1 -c{connections} -d{seconds}s per "
                  f"target, {rounds} rounds: instructions per request (median)")
            for name, values in counts.items():
                median = statistics.median(values)
                extra = median - statistics.median(counts[base])
                print(f"{name:28} {median:10.0f} {extra:+9.0f}   "
                      f"(runs: {', '.join(f'{v:.0f}' for v in values)})")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


#: Proxy A's routes, and the targets driven on it.
ROUTES_A = [
    {"match": {"path_prefix": "/limited/"},
     "rate_limit": {"rate": HUGE_RATE, "key": "client_ip"}},
    {"match": {"path_prefix": "/capped/"}, "max_concurrent": 100000},
    {"match": {"path_prefix": "/"}}]
TARGETS_A = {"no admission (/free/)": "/free/?size=100",
             "rate_limit (client_ip)": "/limited/?size=100",
             "max_concurrent": "/capped/?size=100"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--callgrind", action="store_true",
                        help="count proxy A's instructions per request under callgrind "
                             "instead of timing (deterministic up to timer work)")
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    if args.callgrind:
        callgrind(args.rounds, args.duration, args.connections)
        return
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
                "A": proxy_config(origin_port, ROUTES_A),
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
            stop_all(procs)


if __name__ == "__main__":
    main()
