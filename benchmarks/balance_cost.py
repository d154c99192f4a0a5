"""What choosing costs: each balancing policy, and routing with many routes, in CPU µs.

Three measurements, all Python CPU time (time.process_time) without the kernel, like
hotpath.py, whose in-memory transports this reuses:

1. Proxied request per policy. A group of N servers (default 4), each with one pooled
   upstream connection on an in-memory transport; a GET goes in on the client side, the
   answer is fed to whichever upstream connection the policy chose. The difference to
   round_robin over the same N servers is what the policy costs per request, selection
   and its bookkeeping (in-flight counts, latency samples) included. "hash header" hashes
   an X-User header with 1000 distinct values (a header scan per request, keys mostly from
   the cache); "hash" hashes the client's address.
2. pick() alone per policy, the selection without the rest of the request.
3. Routing: Router.match against 1, 10, 100 and 300 routes (a third exact hosts, a third
   "*.example.com"-style wildcards, a third any host, then a catch-all), for a request
   that reaches the last route; the same by a scan of every route for comparison.

The machine these run on is shared and noisy, so (1) interleaves the policies: each round
measures every one in turn, and a policy's cost against round_robin is the median of its
per-round differences (a noisy moment hits both sides of a difference alike). (2) and (3)
report the best of several rounds: the minimum is what the code costs when nothing else
interferes.

    python benchmarks/balance_cost.py [--servers 4] [--requests 5000] [--rounds 21]
    python benchmarks/balance_cost.py --instructions [--servers 4]

`--instructions` counts instead of timing: each policy (and the router at 10, 100 and 300
routes) runs in a child process under valgrind's callgrind, once without and once with 4000
requests, and the difference in instructions executed is divided by 4000. Instruction
counts do not care what else the machine is doing, so they settle differences of a few
percent that the timings above cannot (it takes a few minutes; PYTHONHASHSEED is fixed so
that dict layouts repeat).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hotpath import MemoryTransport

from veloxy.config import parse_config
from veloxy.h1.head import RequestHead, flatten
from veloxy.net.client import ClientConnection
from veloxy.net.server_connection import ConnectionRegistry, ServerConnection
from veloxy.net.timers import sweeper_for
from veloxy.proxy.app import ProxyApp
from veloxy.proxy.router import Router

POLICIES: list[tuple[str, str, dict[str, Any]]] = [
    ("round_robin", "round_robin", {}),
    ("least_conn", "least_conn", {}),
    ("random", "random", {}),
    ("p2c_ewma", "p2c_ewma", {}),
    ("hash", "hash", {}),
    ("hash header", "hash", {"hash_key": "header:x-user"}),
    ("adaptive", "adaptive", {}),
]

#: The one-server group, where the hot path is (hotpath.py measures the same set-up).
SINGLE: tuple[str, str, dict[str, Any]] = ("round_robin, 1 server", "round_robin", {})

BODY = b"x" * 100
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: origin\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY


class Tap(MemoryTransport):
    """An upstream transport that tells the benchmark which connection was written to."""

    last: ClientConnection | None = None

    def __init__(self, conn: ClientConnection) -> None:
        super().__init__(("127.0.0.1", 9))
        self.conn = conn

    def write(self, data: bytes) -> None:  # type: ignore[override]
        Tap.last = self.conn


class Rig:
    """One proxy whose group of `servers` uses `policy`, wired to in-memory transports."""

    def __init__(self, policy: str, settings: dict[str, Any], servers: int) -> None:
        loop = asyncio.get_running_loop()
        sweeper = sweeper_for(loop)
        urls = [f"http://127.0.0.1:{9001 + i}" for i in range(servers)]
        config = parse_config({"routes": [{"upstream": "app"}], "upstreams": {"app": {
            "servers": urls, "balance": policy, "passive_health": None, **settings}}})
        self.app = ProxyApp(config, sweeper)
        for server in self.app.groups["app"].servers:
            upstream = ClientConnection(sweeper, config.upstreams["app"].timeouts,
                                        server.pool._connection_closed)
            upstream.connection_made(Tap(upstream))
            server.pool.open += 1
            server.pool._idle.append(upstream)
        self.down = ServerConnection(self.app, config.limits, sweeper, ConnectionRegistry())
        self.down_transport = MemoryTransport(("127.0.0.1", 40000))
        self.down.connection_made(self.down_transport)
        self.requests = [b"GET /index.html?id=42 HTTP/1.1\r\nHost: example.com\r\n"
                         b"X-User: user-%d\r\n\r\n" % i for i in range(1000)]
        self.measure(2000)  # warm up: caches, pools

    def measure(self, count: int) -> float:
        """µs of Python CPU per proxied GET, over `count` of them."""
        down, requests = self.down, self.requests
        self.down_transport.written.clear()
        start = time.process_time()
        for i in range(count):
            down.data_received(requests[i % 1000])
            upstream = Tap.last  # the connection the policy chose
            assert upstream is not None
            upstream.data_received(RESPONSE)
        elapsed = time.process_time() - start
        assert len(self.down_transport.written) == count, "responses went missing"
        return elapsed / count * 1e6


async def proxied_costs(servers: int, requests: int, rounds: int
                        ) -> dict[str, list[float]]:
    """Per policy, µs per request in each round. Every round measures every policy in
    turn, so a noisy moment of the machine hits all of them alike."""
    rigs = {SINGLE[0]: Rig("round_robin", {}, 1)}
    rigs.update({label: Rig(policy, settings, servers)
                 for label, policy, settings in POLICIES})
    results: dict[str, list[float]] = {label: [] for label in rigs}
    for _ in range(rounds):
        for label, rig in rigs.items():
            results[label].append(rig.measure(requests))
    for rig in rigs.values():
        rig.app.close()
    return results


async def pick_cost(policy: str, settings: dict[str, Any], servers: int, picks: int) -> float:
    """µs per balancer.pick() alone."""
    sweeper = sweeper_for(asyncio.get_running_loop())
    urls = [f"http://127.0.0.1:{9001 + i}" for i in range(servers)]
    config = parse_config({"routes": [{"upstream": "app"}], "upstreams": {"app": {
        "servers": urls, "balance": policy, **settings}}})
    app = ProxyApp(config, sweeper)
    for server in app.groups["app"].servers:  # fresh samples, as under traffic
        server.latency = 0.002
        server.latency_at = server.error_at = sweeper.now
    balancer = app.groups["app"].balancer
    heads = []
    for i in range(1000):
        head = RequestHead()
        head.fields = flatten([(b"Host", b"example.com"), (b"X-User", b"user-%d" % i)])
        heads.append(head)
    pick = balancer.pick
    start = time.process_time()
    for i in range(picks):
        pick(heads[i % 1000], b"10.0.0.1")
    elapsed = time.process_time() - start
    app.close()
    return elapsed / picks * 1e6


def routes_config(count: int) -> dict[str, Any]:
    routes: list[dict[str, Any]] = []
    for i in range(count - 1):
        match: dict[str, Any] = {"path_prefix": f"/service-{i}/"}
        if i % 3 == 0:
            match["host"] = f"host{i}.example.com"
        elif i % 3 == 1:
            match["host"] = f"*.zone{i}.example.com"
        routes.append({"match": match, "upstream": "app"})
    routes.append({"upstream": "app"})
    return {"routes": routes, "upstreams": {"app": {"servers": ["http://127.0.0.1:9"]}}}


def route_cost(count: int, iterations: int, scan: bool) -> float:
    config = parse_config(routes_config(count))
    router = Router(config.routes, {"app": object()})  # type: ignore[dict-item]
    head = RequestHead()
    head.method = b"GET"
    head.target = b"/nowhere/in/particular"
    head.host = b"www.zone4.example.com"
    match: Callable[[RequestHead], object] = router.match_by_scan if scan else router.match
    match(head)
    start = time.process_time()
    for _ in range(iterations):
        match(head)
    return (time.process_time() - start) / iterations * 1e6


def probe(kind: str, name: str, servers: int, count: int) -> None:
    """The child side of --instructions: set up, then run `count` of one thing."""
    from veloxy.net import loop

    if kind == "policy":
        _, policy, settings = next(p for p in [SINGLE, *POLICIES] if p[0] == name)
        size = 1 if name == SINGLE[0] else servers

        async def requests() -> None:
            rig = Rig(policy, settings, size)
            if count:
                rig.measure(count)

        loop.run(requests())
    else:
        config = parse_config(routes_config(int(name)))
        router = Router(config.routes, {"app": object()})  # type: ignore[dict-item]
        head = RequestHead()
        head.method, head.target, head.host = b"GET", b"/nowhere", b"www.zone4.example.com"
        match = router.match_by_scan if kind == "scan" else router.match
        match(head)
        for _ in range(count):
            match(head)


def instructions(kind: str, name: str, servers: int, count: int = 4000) -> float:
    """Instructions per item: callgrind's count with `count` items minus without."""
    import os
    import re
    import subprocess

    totals = []
    for n in (0, count):
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, __file__, "--probe", kind, name, str(servers), str(n)],
            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
            check=True).stderr
        found = re.search(r"Collected : (\d+)", out)
        assert found, out[-2000:]
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / count


def count_instructions(servers: int) -> None:
    print(f"## Instructions per proxied GET ({servers} servers; callgrind)\n")
    print("| policy | instructions/request | vs round_robin |\n|---|---:|---:|")
    baseline = None
    for label, _, _ in [SINGLE, *POLICIES]:
        figure = instructions("policy", label, servers)
        if label == "round_robin":
            baseline = figure
        delta = "" if baseline is None else f"{(figure - baseline) / baseline:+.1%}"
        print(f"| {label} | {figure:,.0f} | {delta} |", flush=True)
    print("\n## Instructions per Router.match (request reaching the last route)\n")
    print("| routes | indexed | scan of every route |\n|---:|---:|---:|")
    for routes in ("10", "100", "300"):
        print(f"| {routes} | {instructions('route', routes, servers):,.0f} | "
              f"{instructions('scan', routes, servers, 400):,.0f} |", flush=True)


def best(rounds: int, measure: Callable[[], Any]) -> float:
    return min(float(measure()) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions under valgrind instead of timing")
    parser.add_argument("--probe", nargs=4, metavar=("KIND", "NAME", "SERVERS", "COUNT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        kind, name, servers, count = args.probe
        probe(kind, name, int(servers), int(count))
        return
    if args.instructions:
        count_instructions(args.servers)
        return
    from veloxy.net import loop

    print(f"## Proxied GET, Python CPU µs per request ({args.servers} servers; "
          f"{args.rounds} rounds of {args.requests}, policies interleaved)\n")
    costs = loop.run(proxied_costs(args.servers, args.requests, args.rounds))
    baseline = costs["round_robin"]
    print("| policy | best µs/request | median | vs round_robin (median of per-round "
          "differences) |\n|---|---:|---:|---:|")
    for label, values in costs.items():
        paired = statistics.median(v - b for v, b in zip(values, baseline, strict=True))
        delta = "" if "1 server" in label else f"{paired:+.2f}"
        print(f"| {label} | {min(values):.2f} | {statistics.median(values):.2f} | {delta} |")

    print(f"\n## pick() alone, µs ({args.servers} servers)\n")
    print("| policy | µs/pick |\n|---|---:|")
    for label, policy, settings in POLICIES:
        cost = min(loop.run(pick_cost(policy, settings, args.servers, args.requests * 5))
                   for _ in range(args.rounds))
        print(f"| {label} | {cost:.3f} |")

    print("\n## Router.match, µs, request reaching the last route\n")
    print("| routes | indexed | scan of every route |\n|---:|---:|---:|")
    for count in (1, 10, 100, 300):
        indexed = best(args.rounds, partial(route_cost, count, args.requests, False))
        scan = best(args.rounds, partial(route_cost, count, args.requests // 10, True))
        print(f"| {count} | {indexed:.2f} | {scan:.2f} |")


if __name__ == "__main__":
    main()
