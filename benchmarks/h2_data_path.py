"""HTTP/2 over TLS, this tree against another git revision: h2load requests/s, interleaved.

What it is for: a change to the HTTP/2 response path (http2/stream.py's push, the
connection's flush) must not cost throughput. Each round starts both proxies (one worker
each, the same trustme certificate, the same `veloxy origin` behind them) and runs h2load
on each in turn, so that the noise of a shared machine falls on both alike; the report is
the ratio per round and its median, for requests/s and for the proxy's CPU time per
request (user + system, from /proc: steadier than requests/s when other programs share
the cores).

    python benchmarks/h2_data_path.py --base REV [--rounds 5] [-n 20000]

Two workloads: `-c 10 -m 10` with 100-byte answers (HEADERS and one small DATA frame per
stream) and `-c 4 -m 4` with 256 KiB answers (many DATA frames, windows and flushes).
Needs h2load (Debian: nghttp2-client).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import trustme

REPO = Path(__file__).resolve().parents[1]


def export(rev: str, into: Path) -> Path:
    """`rev`'s tree under `into`, with this tree's built C extension (same source only)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    for built in (REPO / "src/veloxy/h1").glob("_fastpath*.so"):
        same = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", rev, "--",
                               "src/veloxy/h1/_fastpath.c"]).returncode == 0
        if same:
            shutil.copy(built, into / "src/veloxy/h1" / built.name)
    return into


def start(src: Path, args: list[str], ready: str) -> tuple[subprocess.Popen[str], list[int]]:
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "veloxy", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    ports: list[int] = []
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(ready + r" (\S+):(\d+)", line)
        if m:
            ports.append(int(m.group(2)))
            return proc, ports
    proc.kill()
    raise RuntimeError(f"{args} did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def h2load(port: int, size: str, n: int, c: int, m: int) -> float:
    out = subprocess.run(["h2load", "-n", str(n), "-c", str(c), "-m", str(m), "-t", "1",
                          f"https://127.0.0.1:{port}/?size={size}"],
                         capture_output=True, text=True, timeout=300).stdout
    found = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    assert found and " 0 failed, 0 errored" in out, out
    return float(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", type=int, default=20000)
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="veloxy-h2-data-"))
    base = export(opts.base, tmp / "base")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp / "key.pem"))
    origin, (origin_port,) = start(REPO / "src", ["origin", "--listen", "127.0.0.1:0"],
                                   "veloxy origin listening on")
    config = tmp / "proxy.yaml"
    config.write_text(
        "listen:\n  - address: 127.0.0.1:0\n"
        f"    tls: {{cert: {tmp / 'cert.pem'}, key: {tmp / 'key.pem'}}}\n"
        "workers: 1\nroutes: [{upstream: default}]\n"
        f"upstreams: {{default: {{servers: ['http://127.0.0.1:{origin_port}']}}}}\n")
    workloads = [("100 B, -c 10 -m 10", "100", opts.n, 10, 10),
                 ("256 KiB, -c 4 -m 4", "256k", max(200, opts.n // 20), 4, 4)]
    ratios: dict[str, list[float]] = {w[0]: [] for w in workloads}
    cpu_ratios: dict[str, list[float]] = {w[0]: [] for w in workloads}
    try:
        for round_ in range(opts.rounds):
            order = [("this", REPO / "src"), ("base", base / "src")]
            if round_ % 2:
                order.reverse()  # alternate who goes first
            rates: dict[str, dict[str, float]] = {}
            cpu: dict[str, dict[str, float]] = {}
            for name, src in order:
                proxy, (port,) = start(src, ["serve", "--config", str(config)],
                                       "veloxy listening on")
                try:
                    h2load(port, "100", 1000, 2, 2)  # warm-up
                    rates[name], cpu[name] = {}, {}
                    for label, *args in workloads:
                        before = cpu_seconds(proxy.pid)
                        rates[name][label] = h2load(port, *args)  # type: ignore[arg-type]
                        cpu[name][label] = (cpu_seconds(proxy.pid) - before) / args[1] * 1e6
                finally:
                    proxy.terminate()
                    proxy.wait(10)
            for label in ratios:
                ratios[label].append(rates["this"][label] / rates["base"][label])
                cpu_ratios[label].append(cpu["this"][label] / cpu["base"][label])
                print(f"round {round_ + 1} {label}: this {rates['this'][label]:,.0f} req/s "
                      f"{cpu['this'][label]:.0f} us CPU/req, base "
                      f"{rates['base'][label]:,.0f} req/s {cpu['base'][label]:.0f} us CPU/req",
                      flush=True)
    finally:
        origin.terminate()
        origin.wait(10)
    print("\n| workload | measure | this / base, per round | median |\n|---|---|---|---:|")
    for label in ratios:
        for what, values in (("req/s", ratios[label]), ("CPU/req", cpu_ratios[label])):
            print(f"| {label} | {what} | {', '.join(f'{v:.2f}' for v in values)} | "
                  f"{statistics.median(values):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
