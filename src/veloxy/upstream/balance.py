"""Load-balancing selectors: given the servers of a group that may take traffic, pick one.

A selector is built over the group's available servers (healthy and not ejected) and is
rebuilt, never patched, when that set changes (a health change or a DNS answer: rare events),
so `pick` never has to skip a dead server and its state stays simple. A group with no
available server gets `Unavailable` (its `pick` says None: the exchange answers 503 at once);
a group with one gets `Single`, whatever the policy, so the common one-server set-up pays a
method call and nothing else.

`pick(head, client_ip, exclude)`: `exclude` is the server a retry is moving away from; it
is avoided whenever another server exists. The request is passed for `hash`, which reads
its key from it.

The policies, and what each costs per request (benchmarks/balance_cost.py measures them):

- round_robin: nginx's smooth weighted round robin; a rotating index when all weights are
  equal. The default: no state beyond a counter, no feedback loop to go wrong.
- least_conn: fewest attempts in flight per unit of weight (`Endpoint.active / weight`),
  ties broken by a rotating start so equal servers share evenly. O(servers) per pick.
- random: weighted, by bisection of the cumulative weights.
- p2c_ewma: power of two choices (Mitzenmacher): two servers drawn at random, the one with
  the lower latency average x (in flight + 1) / weight wins (Finagle's and Envoy's cost).
  Two random draws instead of a scan: O(1), and it avoids the herd that "everyone picks the
  best server" causes when estimates lag.
- hash: a consistent-hash ring (ketama: 160 points per unit of weight, placed by a stable
  hash of the server's address) over client_ip, a header or a cookie; a key missing from the
  request falls back to client_ip. Adding or removing a server moves only the keys of the
  arcs it gains or loses, about 1/N of them. Recent keys are cached, so a returning key costs
  a dict lookup.
- adaptive: P2C over a score built from three ratios of the two candidates, each normalized
  to a share of the pair so that it lies in 0..1 and the two scores sum to 1:

      score(a) = 0.5 * lat(a) / (lat(a) + lat(b))
               + 0.3 * load(a) / (load(a) + load(b))      load = (in flight + 1) / weight
               + 0.2 * err(a) / (err(a) + err(b))          err = error rate + 1 %

  and `a` wins when its score is at most 0.5. Why these weights (the issue's starting
  point, kept after checking what they imply): latency leads because it is what a client
  feels, and it already carries load (a busy server answers slower); with latency alone the
  pair would stampede to whichever server answered fastest last, so load has the next
  weight: a server 2x slower still wins once the other holds 3.5x its requests in flight,
  and one 10x slower only on a stale estimate (probing). Errors weigh least because passive
  health ejects a server that fails consistently anyway; the term steers away from one
  that fails sometimes: 5 % errors against none weigh like answering 1.8x slower. Shares
  of the pair rather than absolute values keep the score free of units (seconds, counts)
  and of the group's size, and make the comparison one multiply-add per term.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from hashlib import blake2b
from itertools import accumulate
from random import random
from typing import TYPE_CHECKING, Protocol

from veloxy.upstream.endpoint import STALE, Endpoint

if TYPE_CHECKING:
    from veloxy.h1.head import RequestHead
    from veloxy.net.timers import DeadlineSweeper

#: Latency below which differences are noise (and the floor of an unsampled server, so that
#: unknown servers compare by load); uvloop's clock has millisecond resolution anyway.
LATENCY_FLOOR = 0.001
#: Error-rate floor: below 1 % two servers count as equally stable.
ERROR_FLOOR = 0.01
#: Adaptive's weights (see the module docstring).
W_LATENCY, W_LOAD, W_ERRORS = 0.5, 0.3, 0.2
#: Ring points per unit of weight (ketama's 160: about 5 % spread between servers).
VNODES = 160
#: Keys remembered by `ConsistentHash` before the cache starts over.
HASH_CACHE = 4096


class Balancer(Protocol):
    def pick(self, head: RequestHead, client_ip: bytes,
             exclude: Endpoint | None = None) -> Endpoint | None: ...


class Unavailable:
    """No server may take traffic: every pick is None (the exchange answers 503)."""

    __slots__ = ()

    def pick(self, head: RequestHead, client_ip: bytes,
             exclude: Endpoint | None = None) -> Endpoint | None:
        return None


class Single:
    """One available server: no choice to make, whatever the policy."""

    __slots__ = ("_server",)

    def __init__(self, server: Endpoint) -> None:
        self._server = server

    def pick(self, head: RequestHead, client_ip: bytes,
             exclude: Endpoint | None = None) -> Endpoint | None:
        return self._server


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin (ngx_http_upstream_get_peer).

    Each pick adds every server's weight to its current score, takes the highest, and
    subtracts the total from it. Weights 5,1,1 give a,a,b,a,c,a,a: spread out, never bursts.
    With equal weights that is plain rotation, done with an index.
    """

    __slots__ = ("_current", "_next", "_servers", "_total", "_uniform", "_weights")

    def __init__(self, servers: Sequence[Endpoint]) -> None:
        if not servers:
            raise ValueError("a balancer needs at least one server")
        self._servers = list(servers)
        self._weights = [s.weight for s in self._servers]
        self._current = [0] * len(self._servers)
        self._total = sum(self._weights)
        self._uniform = len(set(self._weights)) == 1
        self._next = 0

    def pick(self, head: RequestHead | None = None, client_ip: bytes = b"",
             exclude: Endpoint | None = None) -> Endpoint:
        servers = self._servers
        if self._uniform:
            index = self._next
            server = servers[index]
            index += 1
            if index == len(servers):
                index = 0
            self._next = index
            if server is exclude and len(servers) > 1:
                return self.pick(head, client_ip, exclude)
            return server
        current = self._current
        best = -1
        best_score = 0
        for i, weight in enumerate(self._weights):
            current[i] += weight
            if (best < 0 or current[i] > best_score) and servers[i] is not exclude:
                best, best_score = i, current[i]
        current[best] -= self._total
        return servers[best]


class LeastConn:
    """Fewest attempts in flight per unit of weight; ties go round the group."""

    __slots__ = ("_next", "_servers", "_twice")

    def __init__(self, servers: Sequence[Endpoint]) -> None:
        self._servers = list(servers)
        self._twice = self._servers * 2  # a rotated view without modulo arithmetic
        self._next = 0

    def pick(self, head: RequestHead, client_ip: bytes,
             exclude: Endpoint | None = None) -> Endpoint | None:
        n = len(self._servers)
        start = self._next
        self._next = start + 1 if start + 1 < n else 0
        best: Endpoint | None = None
        best_load = 0.0
        for server in self._twice[start:start + n]:
            if server is exclude:
                continue
            load = server.active / server.weight
            if best is None or load < best_load:
                best, best_load = server, load
        return best if best is not None else exclude


class WeightedRandom:
    """A server drawn at random in proportion to its weight."""

    __slots__ = ("_bounds", "_servers", "_total", "_uniform")

    def __init__(self, servers: Sequence[Endpoint]) -> None:
        self._servers = list(servers)
        self._bounds = list(accumulate(s.weight for s in self._servers))
        self._total = self._bounds[-1]
        self._uniform = len({s.weight for s in self._servers}) == 1

    def pick(self, head: RequestHead, client_ip: bytes,
             exclude: Endpoint | None = None) -> Endpoint | None:
        servers = self._servers
        if self._uniform:
            server = servers[int(random() * len(servers))]
        else:
            server = servers[bisect_right(self._bounds, random() * self._total)]
        if server is exclude and len(servers) > 1:
            return self.pick(head, client_ip, exclude)
        return server


def _two(servers: list[Endpoint]) -> tuple[Endpoint, Endpoint]:
    """Two distinct servers drawn uniformly (the list has at least two)."""
    n = len(servers)
    i = int(random() * n)
    j = int(random() * (n - 1))
    if j >= i:
        j += 1
    return servers[i], servers[j]


class PowerOfTwoEwma:
    """P2C over latency average x (in flight + 1) / weight (Finagle's peak EWMA cost)."""

    __slots__ = ("_servers", "_sweeper")

    def __init__(self, servers: Sequence[Endpoint], sweeper: DeadlineSweeper) -> None:
        self._servers = list(servers)
        self._sweeper = sweeper

    def pick(self, head: RequestHead, client_ip: bytes,
             exclude: Endpoint | None = None) -> Endpoint | None:
        servers = self._servers  # _two() inlined: this runs per request
        n = len(servers)
        i = int(random() * n)
        j = int(random() * (n - 1))
        a, b = servers[i], servers[j + 1 if j >= i else j]
        if a is exclude:
            return b
        if b is exclude:
            return a
        now = self._sweeper.now
        # Endpoint.cost_latency inlined (two calls per request): the estimate, decayed if stale.
        lat_a = a.latency if now - a.latency_at <= STALE else a.cost_latency(now)
        lat_b = b.latency if now - b.latency_at <= STALE else b.cost_latency(now)
        if lat_a < LATENCY_FLOOR:
            lat_a = LATENCY_FLOOR
        if lat_b < LATENCY_FLOOR:
            lat_b = LATENCY_FLOOR
        return a if lat_a * (a.active + 1) * b.weight <= lat_b * (b.active + 1) * a.weight else b


class Adaptive:
    """P2C over a weighted score of latency, load and errors (see the module docstring)."""

    __slots__ = ("_servers", "_sweeper")

    def __init__(self, servers: Sequence[Endpoint], sweeper: DeadlineSweeper) -> None:
        self._servers = list(servers)
        self._sweeper = sweeper

    def pick(self, head: RequestHead, client_ip: bytes,
             exclude: Endpoint | None = None) -> Endpoint | None:
        a, b = _two(self._servers)
        if a is exclude:
            return b
        if b is exclude:
            return a
        return a if score(a, b, self._sweeper.now) <= 0.5 else b


def score(a: Endpoint, b: Endpoint, now: float) -> float:
    """Adaptive's score of `a` against `b`, in 0..1; b's is 1 minus it."""
    lat_a = a.latency if now - a.latency_at <= STALE else a.cost_latency(now)
    lat_b = b.latency if now - b.latency_at <= STALE else b.cost_latency(now)
    if lat_a < LATENCY_FLOOR:
        lat_a = LATENCY_FLOOR
    if lat_b < LATENCY_FLOOR:
        lat_b = LATENCY_FLOOR
    load_a = (a.active + 1) / a.weight
    load_b = (b.active + 1) / b.weight
    err_a = (a.error_rate if now - a.error_at <= STALE else a.cost_errors(now)) + ERROR_FLOOR
    err_b = (b.error_rate if now - b.error_at <= STALE else b.cost_errors(now)) + ERROR_FLOOR
    return (W_LATENCY * lat_a / (lat_a + lat_b) + W_LOAD * load_a / (load_a + load_b)
            + W_ERRORS * err_a / (err_a + err_b))


def stable_hash(data: bytes) -> int:
    """A 64-bit hash that is the same in every process and every run (unlike hash(), which
    is salted per process): keys keep their server across restarts and workers."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def cookie_value(header: bytes, name: bytes) -> bytes | None:
    """The value of cookie `name` in a Cookie header ("a=1; sid=xyz"), or None."""
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value
    return None


class ConsistentHash:
    """A ketama ring over the servers; the key comes from the request (see module doc)."""

    __slots__ = ("_cache", "_hashes", "_kind", "_name", "_owners", "_servers")

    def __init__(self, servers: Sequence[Endpoint],
                 source: tuple[str, str | None] = ("client_ip", None)) -> None:
        self._servers = list(servers)
        points = sorted(
            (stable_hash(f"{server.address}-{i}".encode()), index)
            for index, server in enumerate(self._servers)
            for i in range(VNODES * server.weight)
        )
        self._hashes = [point for point, _ in points]
        self._owners = [self._servers[index] for _, index in points]
        self._cache: dict[bytes, Endpoint] = {}
        kind, name = source
        self._kind = kind
        self._name = (name or "").encode("latin-1")

    def key(self, head: RequestHead, client_ip: bytes) -> bytes:
        """What is hashed: the configured header or cookie, else the client's address."""
        kind = self._kind
        if kind == "header":
            value = head.header(self._name)
            if value:
                return value
        elif kind == "cookie":
            cookies = head.header(b"cookie")
            if cookies:
                value = cookie_value(cookies, self._name)
                if value:
                    return value
        return client_ip

    def owner(self, key: bytes, exclude: Endpoint | None = None) -> Endpoint:
        """The server owning `key`'s point on the ring; clockwise past `exclude`."""
        hashes = self._hashes
        index = bisect_left(hashes, stable_hash(key))
        owners = self._owners
        for step in range(len(owners)):
            server = owners[(index + step) % len(owners)]
            if server is not exclude:
                return server
        return owners[0]

    def pick(self, head: RequestHead, client_ip: bytes,
             exclude: Endpoint | None = None) -> Endpoint | None:
        key = self.key(head, client_ip) if self._kind != "client_ip" else client_ip
        cache = self._cache
        server = cache.get(key)
        if server is None:
            server = self.owner(key)
            if len(cache) >= HASH_CACHE:
                cache.clear()
            cache[key] = server
        if server is exclude:
            return self.owner(key, exclude)
        return server


#: Policies that read latency: their exchanges time each attempt (two clock reads).
TIMED_POLICIES = frozenset({"p2c_ewma", "adaptive"})
#: Policies that read each server's requests in flight: their exchanges count them.
COUNTED_POLICIES = frozenset({"least_conn", "p2c_ewma", "adaptive"})


def make_balancer(policy: str, servers: Sequence[Endpoint], sweeper: DeadlineSweeper,
                  hash_source: tuple[str, str | None] = ("client_ip", None)) -> Balancer:
    """The selector for `policy` over `servers` (the available ones)."""
    if not servers:
        return Unavailable()
    if len(servers) == 1:
        return Single(servers[0])
    if policy == "round_robin":
        return SmoothWeightedRoundRobin(servers)
    if policy == "least_conn":
        return LeastConn(servers)
    if policy == "random":
        return WeightedRandom(servers)
    if policy == "p2c_ewma":
        return PowerOfTwoEwma(servers, sweeper)
    if policy == "hash":
        return ConsistentHash(servers, hash_source)
    if policy == "adaptive":
        return Adaptive(servers, sweeper)
    raise ValueError(f"unknown balance policy {policy!r}")
