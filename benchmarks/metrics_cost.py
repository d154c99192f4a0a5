"""What counting costs: instructions per proxied request with and without the per-request
metrics bookkeeping (issue 5: it must stay under 10% of the proxy's CPU per request).

"Without" is this tree with the bookkeeping taken out (a copy of src/ with the edits in
OFF_EDITS undone: the exchange's two clock reads, its stores and `_record` call, the
client connection's byte counts); "with" is the tree as it is. Each side runs the hot path
of benchmarks/hotpath.py (in-memory transports, one GET and its response per request)
under valgrind's callgrind, counting only inside `map()` (--toggle-collect=map_next), which
drives the measured requests: start-up is left out, and the count is repeatable to a few
instructions however busy the machine is.

    python benchmarks/metrics_cost.py [--requests 2000] [--variant minimal|browser|both]

Needs valgrind; about 2-4 minutes per variant (the two sides run in parallel). Access log
and tracing are off, as by default: what is measured is what every request pays.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (file, text with the bookkeeping, text without it)
OFF_EDITS = [
    ("src/veloxy/proxy/forward.py", '''        self.started = monotonic()
        app = self._app
        if app.tracer is not None:
            self.trace = app.tracer.start(self.head.fields)
        if app.access_log is not None:
            self._bytes_mark = getattr(self.down, "bytes_out", 0)
        route = app.router.match(self.head)''', '''        app = self._app
        route = app.router.match(self.head)'''),
    ("src/veloxy/proxy/forward.py",
     "self.head, route.rewrite(self.head.target), self.down.client_ip, self.trace\n",
     "self.head, route.rewrite(self.head.target), self.down.client_ip\n"),
    ("src/veloxy/proxy/forward.py", "        self.response_started = True\n"
     "        self.status = head.status\n", "        self.response_started = True\n"),
    ("src/veloxy/proxy/forward.py", "        self._record(self.status)\n"
     "        self.down.finish(keep_alive=not self._response_close)",
     "        self.down.finish(keep_alive=not self._response_close)"),
    ("src/veloxy/proxy/forward.py", "        self._record(status)\n"
     "        down.finish(keep_alive=keep)", "        down.finish(keep_alive=keep)"),
    ("src/veloxy/proxy/app.py", "*(head.fields if trace is None else trace.fields)]",
     "*head.fields]"),
    ("src/veloxy/net/server.py", "        self.bytes_in += len(data)\n", ""),
    ("src/veloxy/net/server.py",
     "        self.bytes_out += len(data)\n        self.transport.write",
     "        self.transport.write"),
    ("src/veloxy/net/server.py", "        self._registry.accepted += 1\n", ""),
]


def make_off_tree(target: Path) -> None:
    shutil.copytree(REPO / "src", target / "src")
    for name, on, off in OFF_EDITS:
        path = target / name
        text = path.read_text()
        if text.count(on) != 1:
            raise SystemExit(f"{name}: the code changed, update OFF_EDITS ({on[:60]!r}...)")
        path.write_text(text.replace(on, off))


async def drive(requests: int, browser: bool) -> None:
    """hotpath.measure's set-up; the measured requests run inside map()."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import hotpath

    from veloxy.config import parse_config
    from veloxy.net.client import ClientConnection
    from veloxy.net.server import ConnectionRegistry, ServerConnection
    from veloxy.net.timers import sweeper_for
    from veloxy.proxy.app import ProxyApp

    sweeper = sweeper_for(asyncio.get_running_loop())
    config = parse_config({"routes": [{"upstream": "app"}],
                           "upstreams": {"app": {"servers": ["http://127.0.0.1:9"]}}})
    app = ProxyApp(config, sweeper)
    server = app.groups["app"].servers[0]
    upstream = ClientConnection(sweeper, config.upstreams["app"].timeouts,
                                server.pool._connection_closed)
    up_transport = hotpath.MemoryTransport(("127.0.0.1", 9))
    upstream.connection_made(up_transport)
    server.pool.open += 1
    server.pool._idle.append(upstream)
    down = ServerConnection(app, config.limits, sweeper, ConnectionRegistry())
    down_transport = hotpath.MemoryTransport(("127.0.0.1", 40000))
    down.connection_made(down_transport)
    request = (b"GET /index.html?id=42 HTTP/1.1\r\nHost: example.com\r\n"
               + (hotpath.BROWSER_HEADERS if browser else b"") + b"\r\n")
    body = b"x" * 100
    response = (b"HTTP/1.1 200 OK\r\nServer: origin\r\nDate: Thu, 26 Nov 2026 22:00:00 GMT\r\n"
                b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    for _ in range(1000):  # warm up (a for loop: not counted)
        down.data_received(request)
        upstream.data_received(response)
    up_transport.written.clear()
    down_transport.written.clear()

    def one(_: int) -> None:
        down.data_received(request)
        upstream.data_received(response)

    list(map(one, range(requests)))
    assert len(down_transport.written) == requests == len(up_transport.written)


def count(tree: Path, requests: int, variant: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONHASHSEED": "0"}
        subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=map_next",
                        f"--callgrind-out-file={out}", os.path.realpath(sys.executable),
                        __file__, "--drive", str(requests), variant],
                       env=env, check=True, capture_output=True)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit("no total in callgrind's output")


def per_request(tree: Path, requests: int, variant: str) -> float:
    return (count(tree, requests + 1, variant) - count(tree, 1, variant)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--variant", choices=["minimal", "browser", "both"], default="both")
    parser.add_argument("--drive", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        from veloxy.net import loop

        loop.run(drive(int(args.drive[0]), args.drive[1] == "browser"))
        return
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory() as tmp:
        off = Path(tmp)
        make_off_tree(off)
        variants = ["minimal", "browser"] if args.variant == "both" else [args.variant]
        for variant in variants:
            with ThreadPoolExecutor(2) as pool:
                with_metrics = pool.submit(per_request, REPO, args.requests, variant)
                without = pool.submit(per_request, off, args.requests, variant)
                on, base = with_metrics.result(), without.result()
            print(f"{variant:8} without metrics {base:9,.0f}  with {on:9,.0f} instructions "
                  f"per request: +{on - base:,.0f} ({(on - base) / base:+.1%})")


if __name__ == "__main__":
    main()
