"""TLS handshakes/s and HTTP/2 requests/s: veloxy and nginx side by side, with h2load.

Both proxies terminate TLS with the same certificate (made here with trustme) in front of the
same origin (`veloxy origin`), one worker / one nginx worker process each, on 127.0.0.1:

- handshakes: rounds of `h2load -n 100 -c 100 -m 1` (every connection makes one request:
  a full TLS 1.3 handshake, the HTTP/2 preface and one request each, no resumption); the
  median round's connections per second;
- HTTP/2 requests: `h2load -n N -c 10 -m 10` (10 connections, 10 streams each, 100-byte
  answers).

    python benchmarks/tls_h2_compare.py [--quick]

Needs h2load (Debian: nghttp2-client) and nginx with http_v2_module. Prints a Markdown table
for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.proc import VeloxyProcess  # noqa: E402


def h2load(args: list[str]) -> float:
    out = subprocess.run(["h2load", *args], capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    assert m and " 0 failed, 0 errored" in out, out
    return float(m.group(1))


def _protocol(url: str) -> str:
    out = subprocess.run(["h2load", "-n", "1", url], capture_output=True, text=True,
                         timeout=30).stdout
    m = re.search(r"TLS Protocol: (\S+)", out)
    return m.group(1) if m else "?"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    hs_n, rq_n = (500, 20000) if opts.quick else (2000, 50000)
    tmp = Path(tempfile.mkdtemp(prefix="veloxy-tls-bench-"))
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp / "key.pem"))
    origin = VeloxyProcess(["origin", "--listen", "127.0.0.1:0"], None,
                           ready_prefix="veloxy origin listening on").wait_ready()
    config = tmp / "veloxy.yaml"
    config.write_text(f"""listen: [{{address: "127.0.0.1:0", tls: {{cert: {tmp}/cert.pem,
  key: {tmp}/key.pem}}}}]
routes: [{{upstream: o}}]
upstreams: {{o: {{servers: ["http://127.0.0.1:{origin.port}"]}}}}
""")
    veloxy = VeloxyProcess(["serve", "--config", str(config), "--log-level", "warning"],
                           None).wait_ready()
    with socket.socket() as probe:  # a free port for nginx
        probe.bind(("127.0.0.1", 0))
        nginx_port = probe.getsockname()[1]
    (tmp / "nginx.conf").write_text(f"""worker_processes 1; daemon off; pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream o {{ server 127.0.0.1:{origin.port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nginx_port} ssl http2;
    ssl_certificate {tmp}/cert.pem; ssl_certificate_key {tmp}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; keepalive_requests 1000000;
    location / {{ proxy_pass http://o; proxy_http_version 1.1;
      proxy_set_header Connection ""; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:  # until nginx accepts connections (slow on a loaded machine)
        if nginx.poll() is not None:
            raise SystemExit(f"nginx did not start: {nginx.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", nginx_port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("nginx does not accept connections") from None
            time.sleep(0.1)
    rows = []
    try:
        for name, port in (("veloxy", veloxy.port), ("nginx", nginx_port)):
            url = f"https://127.0.0.1:{port}/?size=100"
            h2load(["-n", "200", "-c", "10", "-m", "10", url])  # warm-up
            # h2load gives each client n/c requests: n == c is one request per connection.
            # Rounds of 100 connections, median of the rounds.
            rounds = sorted(h2load(["-n", "100", "-c", "100", "-m", "1", "-t", "1", url])
                            for _ in range(hs_n // 100))
            handshakes = rounds[len(rounds) // 2]
            requests = h2load(["-n", str(rq_n), "-c", "10", "-m", "10", "-t", "1", url])
            rows.append((name, handshakes, requests, _protocol(url)))
    finally:
        nginx.terminate()
        nginx.wait(10)
        veloxy.stop(strict=False)
        origin.stop(strict=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print("| proxy | TLS | handshakes/s (1 request per connection) | HTTP/2 req/s "
          "(10 connections x 10 streams) |")
    print("|---|---|---|---|")
    for name, handshakes, requests, protocol in rows:
        print(f"| {name} | {protocol} | {handshakes:,.0f} | {requests:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
