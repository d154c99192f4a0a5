"""Python CPU per proxied HTTP/2 request, without the kernel or TLS: the server side driven
by bytes (hotpath.py's counterpart for http2/connection.py).

One H2ServerConnection and M pooled upstream connections of one ProxyApp are wired to
in-memory transports. A client's bytes, made in advance by hpack and hyperframe as
h2load would send them (the same five fields per request, HPACK-indexed after the first),
are fed M requests per read (h2load's `-m M`: M HEADERS frames in one read); the M
upstreams each answer 100 bytes; the loop runs once, and the connection writes the M
responses (HEADERS + DATA each) in one flush.

    python benchmarks/h2_hotpath.py [--requests 100000] [--streams 10] [--profile]

`--profile` prints cProfile's time per package (h2, hpack, hyperframe, veloxy, asyncio).
Count instructions instead of timing on a noisy machine (deterministic; the difference of
two runs cancels start-up and warm-up):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python benchmarks/h2_hotpath.py --requests N

With the C HPACK lane built (http2/_hpack.c) it is used; VELOXY_PURE_PYTHON=1
measures h2's pure-Python hpack and hyperframe alone.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time

from hotpath import MemoryTransport  # the HTTP/1.1 harness's (this folder is on sys.path)
from hpack import Encoder
from hyperframe.frame import HeadersFrame, SettingsFrame, WindowUpdateFrame

from veloxy.config import parse_config
from veloxy.config.model import Http2Settings
from veloxy.http2.connection import H2ServerConnection
from veloxy.net.client import ClientConnection
from veloxy.net.server_connection import ConnectionRegistry
from veloxy.net.timers import sweeper_for
from veloxy.proxy.app import ProxyApp

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: What h2load sends for each request (nghttp2 1.52's h2load, `h2load https://host:port/`).
REQUEST_FIELDS = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"),
                  (b":authority", b"127.0.0.1:8443"), (b"user-agent", b"h2load nghttp2/1.52.0")]


class H2Client:
    """The client's bytes: the preface with SETTINGS and a window as large as allowed (the
    100-byte answers never wait for one), then HEADERS frames on streams 1, 3, 5..."""

    def __init__(self) -> None:
        self.encoder = Encoder()
        self.next_stream = 1

    def preface(self) -> bytes:
        settings = SettingsFrame(0)
        settings.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: (1 << 31) - 1,
                             SettingsFrame.ENABLE_PUSH: 0}
        window = WindowUpdateFrame(0)
        window.window_increment = (1 << 31) - 1 - 65535
        return PREFACE + settings.serialize() + window.serialize()

    def requests(self, count: int) -> bytes:
        out = []
        for _ in range(count):
            frame = HeadersFrame(self.next_stream)
            frame.flags.add("END_HEADERS")
            frame.flags.add("END_STREAM")
            frame.data = self.encoder.encode(REQUEST_FIELDS)
            out.append(frame.serialize())
            self.next_stream += 2
        return b"".join(out)


class Wiring:
    """An H2ServerConnection and `streams` idle pooled upstream connections of one
    ProxyApp, on memory transports."""

    def __init__(self, streams: int) -> None:
        sweeper = sweeper_for(asyncio.get_running_loop())
        config = parse_config({"routes": [{"upstream": "app"}],
                               "upstreams": {"app": {"servers": ["http://127.0.0.1:9"]}}})
        self.app = app = ProxyApp(config, sweeper)
        server = app.groups["app"].servers[0]
        self.upstreams: list[tuple[ClientConnection, MemoryTransport]] = []
        for _ in range(streams):
            upstream = ClientConnection(sweeper, config.upstreams["app"].timeouts,
                                        server.pool._connection_closed)
            transport = MemoryTransport(("127.0.0.1", 9))
            upstream.connection_made(transport)
            server.pool.open += 1
            server.pool._idle.append(upstream)
            self.upstreams.append((upstream, transport))
        self.down = H2ServerConnection(app, config.limits, Http2Settings(), sweeper,
                                       ConnectionRegistry(), scheme=b"https")
        self.down_transport = MemoryTransport(("127.0.0.1", 40000))
        self.down.connection_made(self.down_transport)
        self.client = H2Client()
        self.down.data_received(self.client.preface())
        body = b"x" * 100
        self.response = (b"HTTP/1.1 200 OK\r\nServer: origin\r\n"
                         b"Date: Thu, 26 Nov 2026 22:00:00 GMT\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def run(wiring: Wiring, reads: list[bytes]) -> None:
    """Each read: M requests in, the M upstreams answer, one loop iteration (the flush)."""
    down = wiring.down
    upstreams = wiring.upstreams
    response = wiring.response
    for data in reads:
        down.data_received(data)
        for upstream, transport in upstreams:
            if transport.written:  # (every one: the pool hands out each idle connection)
                transport.written.clear()
                upstream.data_received(response)
        await asyncio.sleep(0)


async def measure(requests: int, streams: int, profile: bool) -> float:
    wiring = Wiring(streams)
    client = wiring.client
    await run(wiring, [client.requests(streams) for _ in range(max(1, 2000 // streams))])
    reads = [client.requests(streams) for _ in range(requests // streams)]
    written = wiring.down_transport.written
    written.clear()
    profiler = cProfile.Profile() if profile else None
    start = time.process_time()
    if profiler is not None:
        profiler.enable()
    await run(wiring, reads)
    if profiler is not None:
        profiler.disable()
    elapsed = time.process_time() - start
    sent = b"".join(written)
    # every response: HEADERS then DATA with END_STREAM (flags 0x1) carrying the 100 bytes
    assert sent.count(b"x" * 100) == len(reads) * streams, "responses went missing"
    assert not wiring.down.streams, "streams left open"
    if profiler is not None:
        by_package(profiler)
    return elapsed / (len(reads) * streams) * 1e6


#: (package, what a path of a function's file contains), the first that matches.
PACKAGES = [("h2 (state machine)", "/h2/"), ("hpack", "/hpack/"), ("hyperframe", "/hyperframe/"),
            ("veloxy.http2", "/veloxy/http2/"), ("veloxy (rest)", "/veloxy/"),
            ("asyncio", "/asyncio/"), ("enum", "/enum.py"),
            ("logging (hpack's log.debug)", "/logging/")]


def by_package(profiler: cProfile.Profile) -> None:
    """Own time (tottime) per package: where the CPU goes, not who called it."""
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    for (path, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]  # pstats' table is undocumented
        package = next((label for label, part in PACKAGES if part in path),
                       "builtins/C" if path == "~" else "other")
        totals[package] = totals.get(package, 0.0) + tottime
    total = sum(totals.values())
    for package, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {package:20} {seconds / total:6.1%}")
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=10,
                        help="requests per read, as h2load's -m (default 10)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile's own time per package instead of a plain timing")
    args = parser.parse_args()
    from veloxy.net import loop

    us = loop.run(measure(args.requests, args.streams, args.profile))
    print(f"{us:6.2f} µs of Python CPU per proxied HTTP/2 request (-m {args.streams})")


if __name__ == "__main__":
    main()
