"""TLS handshakes per second and server CPU per handshake: veloxy against nginx, interleaved.

Both terminate TLS with the same trustme ECDSA P-256 certificate, one serving process each
(veloxy `workers: 1`, nginx `worker_processes 1`), pinned with taskset to one core (the last
one) while every client and the origin run on the other (core 0), so that the server's CPU
is its own. What each negotiates (protocol, cipher suite, key-exchange group) is read with
`openssl s_client` and printed: the clients force TLS 1.3 with TLS_AES_128_GCM_SHA256, and
both servers keep OpenSSL's default groups (X25519 first, as the clients offer it).

Per round, each server in turn (the order alternates between rounds), these measurements:

- `s_time -new`: `openssl s_time -new` (one connection after the other, a full handshake
  each, no request), connections per second;
- `s_time -new -www`: the same, plus one HTTP/1.0 request per connection (the origin's
  100-byte answer through the proxy);
- `s_time -reuse -www`: the same, every connection resuming the first one's session (TLS 1.3
  tickets are read with the response, hence -www); the share that resumed is checked;
- `h2load burst`: `h2load -n 100 -c 100 -m 1` (100 new connections at once, one request
  each), connections per second, median over bursts;
- `bench --close` and `bench --close --tls-resume`: `veloxy bench --close -c 4 -p 1`, one
  connection per request, full or resumed handshakes (the JSON's tls counts).

For each, the server's CPU (utime + stime of its process tree, /proc/PID/stat) divided by
the handshakes gives µs of server CPU per handshake. Ratios are veloxy / nginx of the same
round, and the table gives their medians over rounds.

    python benchmarks/tls_handshakes.py [--rounds 3] [--seconds 3] [--loops uvloop,asyncio]
        [--jemalloc]

Needs openssl, h2load (nghttp2-client), nginx and taskset. Prints a Markdown table for
docs/BENCHMARKS.md; raw figures go to stderr as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trustme

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_vs_wrk import log, machine, start_nginx, stop_nginx  # noqa: E402

from tests.support.proc import VeloxyProcess  # noqa: E402
from veloxy.lab.procs import free_port, tree_cpu_seconds, tree_pids  # noqa: E402

CLIENT_CORE = "0"
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
SUITE = "TLS_AES_128_GCM_SHA256"

NGINX_CONF = """worker_processes 1; pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream o {{ server 127.0.0.1:{origin}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {tmp}/cert.pem; ssl_certificate_key {tmp}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
    ssl_session_tickets on; keepalive_requests 1000000;
    location / {{ proxy_pass http://o; proxy_http_version 1.1;
      proxy_set_header Connection ""; }} }} }}
"""

VELOXY_CONF = """listen: [{{address: "127.0.0.1:0", tls: {{cert: {tmp}/cert.pem,
  key: {tmp}/key.pem}}}}]
routes: [{{upstream: o}}]
upstreams: {{o: {{servers: ["http://127.0.0.1:{origin}"]}}}}
"""


class Server:
    def __init__(self, name: str, port: int, pid: int, stop: Any) -> None:
        self.name, self.port, self.pid, self.stop = name, port, pid, stop

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid)


def pin(pid: int, core: str) -> None:
    for p in tree_pids(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", core, str(p)], check=True,
                       capture_output=True)


def on_client_core(argv: list[str]) -> list[str]:
    return ["taskset", "-c", CLIENT_CORE, *argv]


def negotiated(port: int) -> str:
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief",
                          "-ciphersuites", SUITE], input="", capture_output=True, text=True,
                         timeout=20).stderr
    fields = dict(re.findall(r"^(Protocol version|Ciphersuite|Peer Temp Key|Server Temp "
                             r"Key): (.+)$", out, re.M))
    key = fields.get("Peer Temp Key") or fields.get("Server Temp Key") or "?"
    return f"{fields.get('Protocol version', '?')} {fields.get('Ciphersuite', '?')} {key}"


def s_time(port: int, seconds: int, *, reuse: bool, www: bool) -> tuple[int, float, int]:
    """(connections, real seconds, resumed) of one `openssl s_time` run."""
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-time", str(seconds),
            "-ciphersuites", SUITE, "-reuse" if reuse else "-new"]
    if www:
        argv += ["-www", "/?size=100"]
    t0 = time.perf_counter()
    out = subprocess.run(on_client_core(argv), capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    elapsed = time.perf_counter() - t0  # s_time's own "real seconds" are whole seconds
    m = re.search(r"(\d+) connections in [\d.]+ real seconds", out)
    assert m, out
    # -reuse prints one character per connection: "r" resumed, "*" a full handshake.
    marks = "".join(re.findall(r"^[r*]+$", out, re.M))
    return int(m.group(1)), elapsed, marks.count("r")


def h2load_burst(port: int, bursts: int) -> float:
    rates = []
    for _ in range(bursts):
        out = subprocess.run(on_client_core(
            ["h2load", "-n", "100", "-c", "100", "-m", "1", "-t", "1", "--tls13-ciphers", SUITE,
             f"https://127.0.0.1:{port}/?size=100"]), capture_output=True, text=True,
            timeout=120).stdout
        m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
        assert m and " 0 failed, 0 errored" in out, out
        rates.append(float(m.group(1)))
    return statistics.median(rates)


def bench(port: int, seconds: int, resume: bool, tmp: Path) -> tuple[int, float, int]:
    """(handshakes, seconds, resumed) of one `veloxy bench --close` run."""
    out_file = tmp / "bench.json"
    argv = [sys.executable, "-m", "veloxy", "bench", f"https://127.0.0.1:{port}/?size=100",
            "-k", "--close", "-c", "4", "-p", "1", "-d", f"{seconds}s", "--json", str(out_file),
            "--tls-resume" if resume else "--no-tls-resume"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run(on_client_core(argv), check=True, capture_output=True, timeout=seconds + 60,
                   env=env)
    doc = json.loads(out_file.read_text())
    return doc["tls"]["handshakes"], doc["duration_s"], doc["tls"]["resumed"]


def measure(server: Server, seconds: int, tmp: Path) -> dict[str, dict[str, float]]:
    """Every measurement once against `server`: rate (handshakes/s), CPU µs per handshake
    and the share of resumed handshakes."""
    rows: dict[str, dict[str, float]] = {}

    def timed(name: str, run: Any) -> None:
        before = server.cpu()
        count, elapsed, resumed = run()
        cpu = server.cpu() - before
        rows[name] = {"rate": count / elapsed, "cpu_us": cpu * 1e6 / count,
                      "resumed": resumed / count}

    timed("s_time -new", lambda: s_time(server.port, seconds, reuse=False, www=False))
    timed("s_time -new -www", lambda: s_time(server.port, seconds, reuse=False, www=True))
    timed("s_time -reuse -www", lambda: s_time(server.port, seconds, reuse=True, www=True))
    bursts = 5
    before = server.cpu()
    rate = h2load_burst(server.port, bursts)
    rows["h2load burst (100 at once)"] = {
        "rate": rate, "cpu_us": (server.cpu() - before) * 1e6 / (100 * bursts), "resumed": 0.0}
    timed("bench --close", lambda: bench(server.port, seconds, False, tmp))
    timed("bench --close --tls-resume", lambda: bench(server.port, seconds, True, tmp))
    return rows


def start_servers(tmp: Path, loops: list[str], server_core: str, jemalloc: bool
                  ) -> tuple[list[Server], Any]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp / "key.pem"))
    origin = VeloxyProcess(["origin", "--listen", "127.0.0.1:0"], None,
                           ready_prefix="veloxy origin listening on").wait_ready()
    pin(origin.pid, CLIENT_CORE)
    (tmp / "veloxy.yaml").write_text(VELOXY_CONF.format(tmp=tmp, origin=origin.port))
    servers = []
    variants = [(loop, f"veloxy ({loop})", {}) for loop in loops]
    if jemalloc:
        variants.append((loops[0], f"veloxy ({loops[0]}, jemalloc)",
                         {"LD_PRELOAD": JEMALLOC}))
    for loop, name, env in variants:
        proc = VeloxyProcess(["serve", "--config", str(tmp / "veloxy.yaml"), "--log-level",
                              "warning"], loop, env=env).wait_ready()
        pin(proc.pid, server_core)
        servers.append(Server(name, proc.port, proc.pid, lambda p=proc: p.stop(strict=False)))
    nginx_dir = tmp / "nginx"
    nginx_dir.mkdir()
    port = free_port()
    nginx = start_nginx(nginx_dir, NGINX_CONF.format(tmp=tmp, origin=origin.port, port=port),
                        port)
    pin(nginx.pid, server_core)
    servers.append(Server("nginx", port, nginx.pid, lambda: stop_nginx(nginx, nginx_dir)))
    return servers, origin


def prepare(prefix: str) -> tuple[str, Path]:
    """The tools are there (or SystemExit); the servers' core (the last) and a work folder."""
    for tool in ("openssl", "h2load", "nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(tmp, 0o755)  # nginx workers run as "nobody" when started as root
    return str((os.cpu_count() or 2) - 1), tmp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, help="length of each timed run")
    parser.add_argument("--loops", default="uvloop,asyncio",
                        help="event loops to run veloxy on (comma-separated)")
    parser.add_argument("--jemalloc", action="store_true",
                        help="also veloxy on the first loop with jemalloc preloaded (how much "
                             "of the gap is the allocator)")
    opts = parser.parse_args()
    server_core, tmp = prepare("veloxy-tls-hs-")
    if opts.jemalloc and not Path(JEMALLOC).exists():
        raise SystemExit(f"--jemalloc: {JEMALLOC} is missing (Debian: libjemalloc2)")
    servers, origin = start_servers(tmp, opts.loops.split(","), server_core, opts.jemalloc)
    results: dict[str, list[dict[str, dict[str, float]]]] = {s.name: [] for s in servers}
    try:
        protocols = {s.name: negotiated(s.port) for s in servers}
        for round_ in range(opts.rounds):
            order = servers if round_ % 2 == 0 else servers[::-1]
            for server in order:
                log(f"round {round_ + 1}: {server.name}")
                rows = measure(server, opts.seconds, tmp)
                results[server.name].append(rows)
                log(json.dumps({"round": round_ + 1, "server": server.name, "rows": rows}))
    finally:
        for s in servers:
            s.stop()
        origin.stop(strict=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(results, protocols, server_core))
    return 0


def table(results: dict[str, list[dict[str, dict[str, float]]]], protocols: dict[str, str],
          server_core: str) -> str:
    names = list(results)
    nginx = results["nginx"]
    lines = [f"Machine: {machine()}; servers on core {server_core}, clients and origin on "
             f"core {CLIENT_CORE}.", ""]
    lines += [f"- {name}: {protocols[name]}" for name in names]
    lines.append("")
    head = "| measurement | " + " | ".join(
        f"{n} hs/s | {n} CPU µs/hs" for n in names) + " | " + " | ".join(
        f"{n} ÷ nginx hs/s (CPU)" for n in names if n != "nginx") + " |"
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for measurement in nginx[0]:
        cells = []
        for name in names:
            runs = [r[measurement] for r in results[name]]
            rate = statistics.median(r["rate"] for r in runs)
            cpu = statistics.median(r["cpu_us"] for r in runs)
            resumed = statistics.median(r["resumed"] for r in runs)
            note = f" ({resumed:.0%} resumed)" if "reuse" in measurement or \
                "resume" in measurement else ""
            cells.append(f"{rate:,.0f}{note} | {cpu:,.0f}")
        for name in names:
            if name == "nginx":
                continue
            rates = [r[measurement]["rate"] / n[measurement]["rate"]
                     for r, n in zip(results[name], nginx, strict=True)]
            cpus = [r[measurement]["cpu_us"] / n[measurement]["cpu_us"]
                    for r, n in zip(results[name], nginx, strict=True)]
            cells.append(f"{statistics.median(rates):.2f} ({statistics.median(cpus):.2f}x)")
        lines.append(f"| {measurement} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
