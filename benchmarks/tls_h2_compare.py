"""HTTP/2 over TLS with h2load: veloxy and nginx interleaved, requests/s and CPU per request.

Both proxies terminate TLS with the same certificate (made here with trustme, the same
cipher suite forced) in front of the same origin (`veloxy origin`), one worker / one nginx
worker process each, pinned to the last core; h2load and the origin run on core 0. Each
round runs every workload against each server, in alternating order, and reads the server's
CPU (its process tree's user+system time from /proc) around each run:

- `h2load -n N -c 10 -m 10`: 10 connections with 10 streams each, 100-byte answers;
- `h2load -n N -c 100 -m 1`: 100 connections with one stream each.

The connections are made once per run (the handshakes are a small part of N requests;
benchmarks/tls_handshakes.py measures handshakes alone).

    python benchmarks/tls_h2_compare.py [--rounds 3] [-n 50000]

Needs h2load (Debian: nghttp2-client), nginx with http_v2_module, openssl and taskset.
Prints a Markdown table for docs/BENCHMARKS.md (medians of the rounds; the ratio column is
the median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_vs_wrk import log, machine
from tls_handshakes import SUITE, Server, negotiated, on_client_core, start_servers

WORKLOADS = {"-c 10 -m 10": (10, 10), "-c 100 -m 1": (100, 1)}


def h2load(port: int, requests: int, connections: int, streams: int) -> float:
    """Requests per second of one h2load run (every request answered, or an error)."""
    out = subprocess.run(on_client_core(
        ["h2load", "-n", str(requests), "-c", str(connections), "-m", str(streams), "-t", "1",
         "--tls13-ciphers", SUITE, f"https://127.0.0.1:{port}/?size=100"]),
        capture_output=True, text=True, timeout=600).stdout
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if not (m and " 0 failed, 0 errored" in out):
        raise SystemExit(f"h2load against port {port} failed:\n{out}")
    return float(m.group(1))


def measure(server: Server, requests: int) -> dict[str, dict[str, float]]:
    rows = {}
    h2load(server.port, 1000, 10, 10)  # warm-up: the pool to the origin, caches
    for name, (connections, streams) in WORKLOADS.items():
        before = server.cpu()
        rate = h2load(server.port, requests, connections, streams)
        rows[name] = {"rate": rate, "cpu_us": (server.cpu() - before) * 1e6 / requests}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", "--requests", type=int, default=50_000)
    opts = parser.parse_args()
    for tool in ("openssl", "h2load", "nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing")
    server_core = str((os.cpu_count() or 2) - 1)
    tmp = Path(tempfile.mkdtemp(prefix="veloxy-tls-h2-"))
    os.chmod(tmp, 0o755)  # nginx workers run as "nobody" when started as root
    servers, origin = start_servers(tmp, ["uvloop"], server_core, False)
    results: dict[str, list[dict[str, dict[str, float]]]] = {s.name: [] for s in servers}
    try:
        protocols = {s.name: negotiated(s.port) for s in servers}
        for round_ in range(opts.rounds):
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                log(f"round {round_ + 1}: {server.name}")
                results[server.name].append(measure(server, opts.requests))
    finally:
        for s in servers:
            s.stop()
        origin.stop(strict=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(results, protocols, server_core, opts.requests))
    return 0


def table(results: dict[str, list[dict[str, dict[str, float]]]], protocols: dict[str, str],
          server_core: str, requests: int) -> str:
    (veloxy, mine), (_, nginx) = results.items()
    lines = [f"Machine: {machine()}; servers on core {server_core}, h2load and the origin on "
             f"core 0; {requests:,} requests per run, medians of {len(mine)} rounds.", ""]
    lines += [f"- {name}: {protocols[name]}" for name in results]
    lines += ["", f"| h2load | {veloxy} req/s | nginx req/s | req/s ratio | {veloxy} CPU µs/req "
              "| nginx CPU µs/req | CPU ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
    for workload in WORKLOADS:
        rates, cpus = ([run[workload][key] for run in mine] for key in ("rate", "cpu_us"))
        nginx_rates, nginx_cpus = ([run[workload][key] for run in nginx]
                                   for key in ("rate", "cpu_us"))
        rate_ratio = statistics.median(a / b for a, b in zip(rates, nginx_rates, strict=True))
        cpu_ratio = statistics.median(a / b for a, b in zip(cpus, nginx_cpus, strict=True))
        lines.append(f"| `{workload}` | {statistics.median(rates):,.0f} | "
                     f"{statistics.median(nginx_rates):,.0f} | {rate_ratio:.2f} | "
                     f"{statistics.median(cpus):.1f} | {statistics.median(nginx_cpus):.1f} | "
                     f"{cpu_ratio:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
