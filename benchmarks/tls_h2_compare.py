"""HTTP/2 with h2load, over TLS and h2c: veloxy and nginx interleaved, req/s and CPU per request.

Both proxies terminate TLS with the same certificate (made here with trustme, the same
cipher suite forced) in front of the same origin (`veloxy origin`), one worker / one nginx
worker process each, pinned to the last core; h2load and the origin run on core 0. Each
round runs every workload against each server, in alternating order, and reads the server's
CPU (its process tree's user+system time from /proc) around each run:

- `h2load -n N -c 10 -m 10`: 10 connections with 10 streams each, 100-byte answers;
- `h2load -n N -c 100 -m 1`: 100 connections with one stream each.

The connections are made once per run (the handshakes are a small part of N requests;
benchmarks/tls_handshakes.py measures handshakes alone). The same workloads run against a
cleartext pair too (veloxy's `h2c: true` listener, nginx's `listen ... http2` without ssl,
h2load with prior knowledge), so the TLS share of the cost shows.

    python benchmarks/tls_h2_compare.py [--rounds 3] [-n 50000]

Needs h2load (Debian: nghttp2-client), nginx with http_v2_module, openssl and taskset.
Prints a Markdown table for docs/BENCHMARKS.md (medians of the rounds; the ratio column is
the median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench_vs_wrk import log, machine, start_nginx, stop_nginx
from tls_handshakes import (
    SUITE,
    Server,
    negotiated,
    on_client_core,
    pin,
    prepare,
    start_servers,
)

from tests.support.proc import VeloxyProcess
from veloxy.lab.procs import free_port

WORKLOADS = {"-c 10 -m 10": (10, 10), "-c 100 -m 1": (100, 1)}


H2C_NGINX_CONF = """worker_processes 1; pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream o {{ server 127.0.0.1:{origin}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port} http2; keepalive_requests 1000000;
    location / {{ proxy_pass http://o; proxy_http_version 1.1;
      proxy_set_header Connection ""; }} }} }}
"""

H2C_VELOXY_CONF = """listen: [{{address: "127.0.0.1:0", h2c: true}}]
routes: [{{upstream: o}}]
upstreams: {{o: {{servers: ["http://127.0.0.1:{origin}"]}}}}
"""


def h2load(port: int, requests: int, connections: int, streams: int, tls: bool = True
           ) -> float:
    """Requests per second of one h2load run (every request answered, or an error)."""
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/?size=100"
    out = subprocess.run(on_client_core(
        ["h2load", "-n", str(requests), "-c", str(connections), "-m", str(streams), "-t", "1",
         "--tls13-ciphers", SUITE, url]), capture_output=True, text=True, timeout=600).stdout
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if not (m and " 0 failed, 0 errored" in out):
        raise SystemExit(f"h2load against port {port} failed:\n{out}")
    return float(m.group(1))


def start_h2c_servers(tmp: Path, origin: int, server_core: str) -> list[Server]:
    """veloxy's h2c listener and nginx's cleartext http2 one, in front of `origin`."""
    (tmp / "veloxy-h2c.yaml").write_text(H2C_VELOXY_CONF.format(origin=origin))
    proc = VeloxyProcess(["serve", "--config", str(tmp / "veloxy-h2c.yaml"), "--log-level",
                          "warning"], "uvloop").wait_ready()
    pin(proc.pid, server_core)
    nginx_dir = tmp / "nginx-h2c"
    nginx_dir.mkdir()
    port = free_port()
    nginx = start_nginx(nginx_dir, H2C_NGINX_CONF.format(tmp=nginx_dir, origin=origin,
                                                          port=port), port)
    pin(nginx.pid, server_core)
    return [Server("veloxy (uvloop)", proc.port, proc.pid, lambda: proc.stop(strict=False)),
            Server("nginx", port, nginx.pid, lambda: stop_nginx(nginx, nginx_dir))]


def measure(server: Server, requests: int, tls: bool) -> dict[str, dict[str, float]]:
    rows = {}
    h2load(server.port, 1000, 10, 10, tls)  # warm-up: the pool to the origin, caches
    for name, (connections, streams) in WORKLOADS.items():
        before = server.cpu()
        rate = h2load(server.port, requests, connections, streams, tls)
        rows[name] = {"rate": rate, "cpu_us": (server.cpu() - before) * 1e6 / requests}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", "--requests", type=int, default=50_000)
    opts = parser.parse_args()
    server_core, tmp = prepare("veloxy-tls-h2-")
    servers, origin = start_servers(tmp, ["uvloop"], server_core, False)
    results: dict[str, list[dict[str, dict[str, float]]]] = {s.name: [] for s in servers}
    cleartext: dict[str, list[dict[str, dict[str, float]]]] = {s.name: [] for s in servers}
    h2c_servers: list[Server] = []
    try:
        h2c_servers = start_h2c_servers(tmp, origin.port, server_core)
        protocols = {s.name: negotiated(s.port) for s in servers}
        for round_ in range(opts.rounds):
            for server, h2c_server in (zip(servers, h2c_servers, strict=True) if round_ % 2 == 0
                                       else zip(servers[::-1], h2c_servers[::-1], strict=True)):
                log(f"round {round_ + 1}: {server.name}")
                results[server.name].append(measure(server, opts.requests, True))
                cleartext[h2c_server.name].append(measure(h2c_server, opts.requests, False))
    finally:
        for s in servers + h2c_servers:
            s.stop()
        origin.stop(strict=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(results, protocols, server_core, opts.requests))
    print()
    print(table(cleartext, {name: "h2c (prior knowledge)" for name in cleartext}, server_core,
                opts.requests))
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
