"""The selectors and the server bookkeeping on their own, without sockets: exact sequences,
the arithmetic of the scores, the ring's remapping, the decay of stale estimates."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from veloxy.h1.head import RequestHead, flatten
from veloxy.net.timers import DeadlineSweeper
from veloxy.upstream.balance import (
    Adaptive,
    ConsistentHash,
    LeastConn,
    PowerOfTwoEwma,
    Single,
    SmoothWeightedRoundRobin,
    Unavailable,
    WeightedRandom,
    cookie_value,
    make_balancer,
    score,
)
from veloxy.upstream.endpoint import DECAY, Endpoint


def servers(*weights: int) -> list[Endpoint]:
    return [Endpoint(f"http://10.0.0.{i}:80", f"10.0.0.{i}", 80, w, None)  # type: ignore[arg-type]
            for i, w in enumerate(weights, 1)]


def names(picks: list[Endpoint | None]) -> str:
    return "".join("abcdefgh"[int(s.host.rsplit(".", 1)[1]) - 1] for s in picks if s)


class Clock:
    """Stands in for the sweeper (its `now`) and for the loop clock of latency samples."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


HEAD = RequestHead()


def test_smooth_weighted_round_robin_spreads_the_heavy_server() -> None:
    rr = SmoothWeightedRoundRobin(servers(5, 1, 1))
    assert names([rr.pick(HEAD, b"") for _ in range(7)]) == "aabacaa"
    rr = SmoothWeightedRoundRobin(servers(3, 1))
    assert Counter(names([rr.pick(HEAD, b"") for _ in range(400)])) == {"a": 300, "b": 100}


def test_round_robin_skips_the_excluded_server() -> None:
    group = servers(1, 1, 1)
    rr = SmoothWeightedRoundRobin(group)
    assert all(rr.pick(HEAD, b"", exclude=group[0]) is not group[0] for _ in range(9))
    weighted = SmoothWeightedRoundRobin(servers(5, 1))
    heavy = weighted._servers[0]
    assert all(weighted.pick(HEAD, b"", exclude=heavy) is not heavy for _ in range(9))


def test_least_conn_prefers_fewest_in_flight_per_weight_and_rotates_ties() -> None:
    a, b, c = group = servers(1, 1, 2)
    lc = LeastConn(group)
    assert names([lc.pick(HEAD, b"") for _ in range(3)]) == "abc"  # all idle: rotate
    a.active, b.active, c.active = 3, 1, 3  # per weight: 3, 1, 1.5
    assert lc.pick(HEAD, b"") is b
    assert lc.pick(HEAD, b"", exclude=b) is c


def test_random_honours_weights_and_exclusion() -> None:
    group = servers(3, 1)
    picks = Counter(names([WeightedRandom(group).pick(HEAD, b"") for _ in range(8000)]))
    assert 0.72 <= picks["a"] / 8000 <= 0.78
    rnd = WeightedRandom(group)
    assert all(rnd.pick(HEAD, b"", exclude=group[0]) is group[1] for _ in range(50))


def test_single_and_unavailable() -> None:
    (only,) = servers(1)
    sweeper: Any = Clock()
    assert isinstance(make_balancer("adaptive", [only], sweeper), Single)
    assert make_balancer("hash", [only], sweeper).pick(HEAD, b"") is only
    assert isinstance(make_balancer("round_robin", [], sweeper), Unavailable)
    assert make_balancer("least_conn", [], sweeper).pick(HEAD, b"") is None


def test_peak_ewma_takes_a_slowdown_at_once_and_forgets_it_with_time() -> None:
    (server,) = servers(1)
    clock = Clock()
    server.clock = clock
    start = clock.now
    clock.now += 0.005
    server.observe(200, start)
    assert server.latency == pytest.approx(0.005)
    start = clock.now
    clock.now += 0.050
    server.observe(200, start)  # 10x slower: taken at once
    assert server.latency == pytest.approx(0.050)
    for _ in range(40):  # fast again, 10 a second: blended in by time, over 4 s
        clock.now += 0.095
        start = clock.now
        clock.now += 0.005
        server.observe(200, start)
    assert server.latency < 0.015
    assert server.cost_latency(clock.now + 3 * DECAY) < server.latency / 10  # stale: decays


def test_p2c_ewma_prefers_lower_latency_times_load() -> None:
    fast, slow = group = servers(1, 1)
    fast.latency, slow.latency = 0.005, 0.050
    sweeper: Any = Clock()
    fast.latency_at = slow.latency_at = sweeper.now
    p2c = PowerOfTwoEwma(group, sweeper)
    assert all(p2c.pick(HEAD, b"") is fast for _ in range(20))
    fast.active = 12  # 0.005 * 13 > 0.050 * 1
    assert p2c.pick(HEAD, b"") is slow
    assert p2c.pick(HEAD, b"", exclude=slow) is fast


def test_adaptive_score_trades_latency_load_and_errors() -> None:
    a, b = servers(1, 1)
    now = 1000.0
    a.latency_at = b.latency_at = a.error_at = b.error_at = now
    a.latency = b.latency = 0.010
    assert score(a, b, now) == pytest.approx(0.5)  # equal in everything
    a.latency = 0.100  # 10x slower...
    b.active = 20  # ...even against 21x the load, a stays worse
    assert score(a, b, now) > 0.5
    a.latency = 0.020  # 2x slower: wins once b holds >= 3.5x its requests
    b.active = 2
    assert score(a, b, now) > 0.5
    b.active = 3
    assert score(a, b, now) < 0.5
    a.latency, b.active = b.latency, 0
    a.error_rate = 0.05  # 5 % errors weigh like answering about 1.8x slower
    with_errors = score(a, b, now)
    a.error_rate, a.latency = 0.0, 0.018
    assert with_errors == pytest.approx(score(a, b, now), abs=0.01)
    assert isinstance(make_balancer("adaptive", [a, b], Clock()), Adaptive)  # type: ignore[arg-type]


def test_consistent_hash_is_stable_and_remaps_one_key_in_n() -> None:
    three = servers(1, 1, 1)
    four = [*three, *servers(1, 1, 1, 1)[3:]]
    keys = [f"user-{i}".encode() for i in range(4000)]
    before = ConsistentHash(three)
    after = ConsistentHash(four)
    moved = [k for k in keys if before.owner(k) is not after.owner(k)]
    assert all(after.owner(k) is four[3] for k in moved)
    assert 0.20 <= len(moved) / len(keys) <= 0.30
    spread = Counter(before.owner(k).host for k in keys)
    assert min(spread.values()) > 0.25 * len(keys)
    without = ConsistentHash(three[:2])  # a server removed: only its keys move
    assert all(without.owner(k) is before.owner(k)
               for k in keys if before.owner(k) is not three[2])
    ring = ConsistentHash(three)
    assert ring.pick(HEAD, b"10.1.1.1") is ring.pick(HEAD, b"10.1.1.1")
    home = ring.pick(HEAD, b"10.1.1.1")
    assert ring.pick(HEAD, b"10.1.1.1", exclude=home) not in (home, None)


def test_hash_keys_from_header_cookie_and_fallback() -> None:
    ring = ConsistentHash(servers(1, 1, 1), ("header", "x-user"))
    head = RequestHead()
    head.fields = flatten([(b"X-User", b"alice")])
    assert ring.key(head, b"10.0.0.9") == b"alice"
    assert ring.key(RequestHead(), b"10.0.0.9") == b"10.0.0.9"
    cookies = ConsistentHash(servers(1, 1), ("cookie", "sid"))
    head = RequestHead()
    head.fields = flatten([(b"Cookie", b"theme=dark; sid=s3cr3t; x=1")])
    assert cookies.key(head, b"ip") == b"s3cr3t"
    assert cookie_value(b"sidx=1; sid=2", b"sid") == b"2"
    assert cookie_value(b"a=1", b"sid") is None


def test_weights_scale_the_ring() -> None:
    group = servers(3, 1)
    ring = ConsistentHash(group)
    spread = Counter(ring.owner(f"k{i}".encode()).host for i in range(8000))
    assert 0.68 <= spread["10.0.0.1"] / 8000 <= 0.82


def test_ejection_bookkeeping_needs_a_group() -> None:
    """Endpoint.failed without a group (unit use) only counts; with one it may eject."""
    (server,) = servers(1)
    server.failed()
    server.failed()
    assert server.failures == 2 and not server.ejected
    server.succeeded()
    assert server.failures == 0


def test_sweeper_readmits_an_ejected_server() -> None:
    async def scenario() -> None:
        from veloxy.config import parse_config
        from veloxy.upstream.group import Group

        config = parse_config({"routes": [{"upstream": "g"}], "upstreams": {"g": {
            "servers": ["http://127.0.0.1:1", "http://127.0.0.1:2"],
            "passive_health": {"failures": 1, "ejection": "100ms"}}}})
        sweeper = DeadlineSweeper(asyncio.get_running_loop(), resolution=0.02)
        group = Group(config.upstreams["g"], sweeper)
        first, second = group.servers
        first.failed()
        assert first.ejected and group.available == [second]
        second.failed()
        assert not second.ejected, "the last server taking traffic is never ejected"
        await asyncio.sleep(0.2)
        assert not first.ejected and group.available == [first, second]
        first.failed()  # on probation: one failure ejects it again, for twice as long
        assert first.ejected and first.deadline - sweeper.now == pytest.approx(0.2, abs=0.01)
        group.close()
        sweeper.close()

    asyncio.run(scenario())
