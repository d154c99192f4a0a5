"""Python CPU per proxied request, without the kernel: the hot path driven by bytes.

A client connection and a pooled upstream connection are wired to in-memory transports,
and one GET and its response are fed through them N times. What this measures is exactly
what veloxy's own code adds on top of the kernel's reads and writes (which the side-by-side
benchmark, proxy_compare.py, includes). It is steady to within a few percent even on a busy
machine, so it is the tool for judging a change to the hot path.

    python benchmarks/hotpath.py [--requests 200000] [--variant minimal|browser|both]
                                 [--admission none|rate_limit|max_concurrent|shed|...]

It uses the C fast lane (h1/_fastpath.c) when it is built; `VELOXY_PURE_PYTHON=1` in the
environment measures the llhttp parsers alone, for comparison.

On a machine too noisy for timings, count instructions instead (deterministic; the
difference of two runs cancels start-up):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python benchmarks/hotpath.py --variant minimal --requests N
"""

from __future__ import annotations

import argparse
import asyncio
import time

from veloxy.config import parse_config
from veloxy.net.client import ClientConnection
from veloxy.net.server_connection import ConnectionRegistry, ServerConnection
from veloxy.net.timers import sweeper_for
from veloxy.proxy.app import ProxyApp


class MemoryTransport(asyncio.Transport):
    """Collects writes; reports the peer address the proxy asks for."""

    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self._peer = peer
        self._closing = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written.append(data)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._peer if name == "peername" else default

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


BROWSER_HEADERS = (
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\nReferer: http://example.com/\r\n"
    b"Cache-Control: no-cache\r\nPragma: no-cache\r\nUpgrade-Insecure-Requests: 1\r\n"
)


#: What the route admits requests with (proxy/admission.py): (route settings, limits). The
#: limits are far above what one client sends here, so every request is admitted: the
#: cost of checking, not of refusing.
ADMISSION: dict[str, tuple[dict, dict]] = {
    "none": ({}, {}),
    "rate_limit": ({"rate_limit": {"rate": "100000000/s"}}, {}),
    "rate_limit_route": ({"rate_limit": {"rate": "100000000/s", "key": "route"}}, {}),
    "max_concurrent": ({"max_concurrent": 1000}, {}),
    "shed": ({}, {"shed": {"loop_lag": "200ms", "queue": 1000}}),
}


class Wiring:
    """A client connection and a pooled upstream connection of one ProxyApp, on memory
    transports; `proxy_one()` feeds one request and its response through them. Also used
    by tests/proxy/test_hot_path_budget.py, which holds the hot path to its budget."""

    def __init__(self, browser: bool, balance: str = "round_robin",
                 admission: str = "none") -> None:
        sweeper = sweeper_for(asyncio.get_running_loop())
        route, limits = ADMISSION[admission]
        config = parse_config({"routes": [{"upstream": "app", **route}], "limits": limits,
                               "upstreams": {"app": {"servers": ["http://127.0.0.1:9"],
                                                     "balance": balance}}})
        self.app = app = ProxyApp(config, sweeper)
        self.server = server = app.groups["app"].servers[0]
        # A connection the pool knows as open and idle, as after an earlier request.
        self.upstream = ClientConnection(sweeper, config.upstreams["app"].timeouts,
                                         server.pool._connection_closed)
        self.up_transport = MemoryTransport(("127.0.0.1", 9))
        self.upstream.connection_made(self.up_transport)
        server.pool.open += 1
        server.pool._idle.append(self.upstream)
        self.down = ServerConnection(app, config.limits, sweeper, ConnectionRegistry())
        self.down_transport = MemoryTransport(("127.0.0.1", 40000))
        self.down.connection_made(self.down_transport)
        self.request = (b"GET /index.html?id=42 HTTP/1.1\r\nHost: example.com\r\n"
                        + (BROWSER_HEADERS if browser else b"") + b"\r\n")
        body = b"x" * 100
        self.response = (b"HTTP/1.1 200 OK\r\nServer: origin\r\n"
                         b"Date: Thu, 26 Nov 2026 22:00:00 GMT\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body)) + body

    def proxy_one(self) -> None:
        self.down.data_received(self.request)
        self.upstream.data_received(self.response)


async def measure(requests: int, browser: bool, admission: str = "none") -> float:
    wiring = Wiring(browser, admission=admission)
    for _ in range(1000):  # warm up
        wiring.proxy_one()
    up_written, down_written = wiring.up_transport.written, wiring.down_transport.written
    up_written.clear()
    down_written.clear()
    # (the two feeds inline, not proxy_one(): a call of the harness's own per request
    # would be counted by callgrind with the proxy's)
    down, upstream = wiring.down, wiring.upstream
    request, response = wiring.request, wiring.response
    start = time.process_time()
    for _ in range(requests):
        down.data_received(request)
        upstream.data_received(response)
    elapsed = time.process_time() - start
    assert len(down_written) == requests, "responses went missing"
    assert len(up_written) == requests, "requests went missing"
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--variant", choices=["minimal", "browser", "both"], default="both")
    parser.add_argument("--admission", choices=sorted(ADMISSION), default="none",
                        help="the route's rate limit, in-flight cap or load shedding "
                             "(proxy/admission.py); default none")
    args = parser.parse_args()
    from veloxy.h1.parser import FAST_LANE
    from veloxy.net import loop

    print("parsers:", "C fast lane (h1/_fastpath.c) + llhttp" if FAST_LANE
          else "llhttp alone (VELOXY_PURE_PYTHON=1, or the extension is not built)")

    variants = {"minimal": (False,), "browser": (True,), "both": (False, True)}[args.variant]
    for browser in variants:
        us = loop.run(measure(args.requests, browser, args.admission))
        kind = "browser-like (11 headers)" if browser else "minimal (Host only)"
        print(f"{kind:28} {us:6.2f} µs of Python CPU per proxied request")


if __name__ == "__main__":
    main()
