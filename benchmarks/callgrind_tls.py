#!/usr/bin/env python3
"""Instructions per TLS handshake of the real server, veloxy against nginx, under callgrind.

Wall-clock CPU on a shared 2-core machine is noisy; instruction counts are not. This runs
`python -m veloxy serve` (one process, a TLS listener with a trustme ECDSA P-256 certificate)
and nginx (`master_process off`, same certificate) under `valgrind --tool=callgrind`, zeroes
the counters (`callgrind_control -z`), makes `--count` TLS 1.3 handshakes one after the other
from this process (handshake, close: no request), waits for the server to go quiet, and dumps
them (`callgrind_control -d`). Instructions ÷ handshakes = instructions per handshake, and
`callgrind_annotate --inclusive=yes` on the dump shows where they go (OpenSSL's
SSL_do_handshake, the Python around it, the event loop, the kernel's share is not counted).

    python benchmarks/callgrind_tls.py [--count 200] [--loop uvloop] [--annotate 25]
    python benchmarks/callgrind_tls.py --request     # each connection also GETs 100 bytes

With `--request` every connection also sends one `GET /?size=100` with `Connection: close`
and reads the answer to the end (the server's close and TLS shutdown included), both servers
proxying to one `veloxy origin` (not under valgrind): the per-connection cost of a short TLS
connection, not the handshake alone.

Set VELOXY_TLS_AUTO_CHAIN=... etc. in the environment to compare variants of the server; the
dumps stay in --out (default a temporary directory, printed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
from veloxy.lab.procs import cpu_seconds, free_port  # noqa: E402

HOST = "127.0.0.1"

NGINX_CONF = """master_process off; daemon off; worker_processes 1; pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{ access_log off;
  server {{ listen {host}:{port} ssl http2;
    ssl_certificate {tmp}/cert.pem; ssl_certificate_key {tmp}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
    location / {{ proxy_pass http://{host}:{origin}; }} }} }}
"""

VELOXY_CONF = """listen: [{{address: "{host}:{port}", tls: {{cert: {tmp}/cert.pem,
  key: {tmp}/key.pem}}}}]
routes: [{{upstream: o}}]
upstreams: {{o: {{servers: ["http://{host}:{origin}"]}}}}
"""


def wait_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on {port}")


REQUEST = b"GET /?size=100 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def handshakes(port: int, count: int, request: bool = False) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    for _ in range(count):
        with socket.create_connection((HOST, port), timeout=30) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.do_handshake()
            if request:
                tls.sendall(REQUEST)
                answer = b""
                try:
                    while chunk := tls.recv(65536):
                        answer += chunk
                except (ssl.SSLEOFError, ConnectionResetError):
                    pass  # a close without close_notify ends the answer as well
                if not answer.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"unexpected answer: {answer[:200]!r}")


def quiet(pid: int, seconds: float = 1.0) -> None:
    """Until the server used under 10% of a core over `seconds` (veloxy's periodic timers
    keep it from zero; they are counted per second, not per handshake)."""
    last = cpu_seconds(pid) or 0.0
    while True:
        time.sleep(seconds)
        now = cpu_seconds(pid) or 0.0
        if now - last < 0.1 * seconds:
            return
        last = now


def total_ir(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


def measure(name: str, argv: list[str], port: int, count: int, out: Path, env: dict[str, str],
            annotate: int, request: bool) -> int:
    prefix = out / f"callgrind.{name}"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}.%p",
                             *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(out / f"{name}.log", "w"))  # noqa: SIM115
    try:
        wait_port(port)
        handshakes(port, 5, request)  # first-use costs (imports, lazy OpenSSL set-up) stay outside
        quiet(proc.pid)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       capture_output=True)
        handshakes(port, count, request)
        quiet(proc.pid)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                       capture_output=True)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    dumps = sorted(out.glob(f"callgrind.{name}.{proc.pid}.*"),
                   key=lambda p: int(re.sub(r".*\.", "", str(p))))
    dump = dumps[0]
    ir = total_ir(dump) // count
    print(f"{name}: {ir:,} instructions per {'connection' if request else 'handshake'} "
          f"({dump})")
    if annotate:
        text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(dump)],
                              capture_output=True, text=True).stdout
        rows = [line for line in text.splitlines() if re.match(r"\s*[\d,]+ \(", line)]
        for line in rows[:annotate]:
            print("   ", line.strip()[:150])
    return ir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--annotate", type=int, default=0, metavar="N",
                        help="print the N functions with the most inclusive instructions")
    parser.add_argument("--only", choices=["veloxy", "nginx"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--request", action="store_true",
                        help="each connection also makes one request (Connection: close)")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing")
    out = args.out or Path(tempfile.mkdtemp(prefix="veloxy-callgrind-tls-"))
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o755)
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", HOST)
    leaf.cert_chain_pems[0].write_to_path(str(out / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(out / "key.pem"))
    results = {}
    origin_port = free_port()
    origin = subprocess.Popen([sys.executable, "-m", "veloxy", "origin", "--listen",
                               f"{HOST}:{origin_port}"], stdout=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    try:
        wait_port(origin_port)
        _compare(args, out, origin_port, results)
    finally:
        origin.terminate()
        origin.wait(10)
    if len(results) == 2:
        print(f"veloxy / nginx: {results['veloxy'] / results['nginx']:.2f}x instructions per "
              f"{'connection' if args.request else 'handshake'}")
    return 0


def _compare(args: argparse.Namespace, out: Path, origin: int, results: dict[str, int]) -> None:
    if args.only != "nginx":
        port = free_port()
        (out / "veloxy.yaml").write_text(VELOXY_CONF.format(host=HOST, port=port, tmp=out,
                                                            origin=origin))
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VELOXY_LOOP": args.loop}
        results["veloxy"] = measure(
            f"veloxy-{args.loop}", [sys.executable, "-m", "veloxy", "serve", "--config",
                                    str(out / "veloxy.yaml"), "--log-level", "warning"],
            port, args.count, out, env, args.annotate, args.request)
    if args.only != "veloxy":
        port = free_port()
        (out / "nginx.conf").write_text(NGINX_CONF.format(host=HOST, port=port, tmp=out,
                                                          origin=origin))
        results["nginx"] = measure("nginx", ["nginx", "-p", str(out), "-c",
                                             str(out / "nginx.conf")],
                                   port, args.count, out, dict(os.environ), args.annotate,
                                   args.request)


if __name__ == "__main__":
    sys.exit(main())
