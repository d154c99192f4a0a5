"""The hot path's performance tricks, guarded by tests instead of comments.

Deterministic and sub-second: the in-memory wiring of benchmarks/hotpath.py (a client
connection and a pooled upstream connection on memory transports) proxies GETs while the
interpreter counts the Python calls made in veloxy's own code. The budgets are today's
counts (docs/BENCHMARKS.md, "The exchange redesign"): a change that adds a call to the
common path fails here and must either save one elsewhere or raise the budget on purpose,
with its cost measured (callgrind, benchmarks/hotpath.py).

Also guarded:
- the exchange's instance attributes on the common path stay within the number that
  CPython keeps in a compact array shared by the class's instances (measured here on the
  running interpreter, not assumed: one more turns every instance's attributes into a
  dict of its own, about 1 µs per request);
- the copies inlined on the common path (ProxyExchange.on_response's passive health,
  ProxyExchange._begin_attempt, log_exchange's in-flight release and counting) do what
  the shared code they copy does: a test drives both paths and compares.
"""

from __future__ import annotations

import asyncio
import sys
from bisect import bisect_left
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from veloxy.observe.metrics import BOUNDS_LIST
from veloxy.proxy import logging_phase
from veloxy.proxy.exchange import BaseExchange
from veloxy.proxy.forward import ProxyExchange

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from hotpath import Wiring

SRC = str(Path(__file__).resolve().parents[2] / "src" / "veloxy")

#: Python calls in veloxy's code per proxied GET, by (C fast lane built, browser-like
#: headers). Measured 2026-12-07 after the exchange redesign: 23 before it with the fast
#: lane; response framing as one pure function (h1/framing.py) is the one call added.
#: llhttp alone makes a call per header.
CALL_BUDGET = {(True, False): 24, (True, True): 24, (False, False): 51, (False, True): 60}


def _fast_lane() -> bool:
    from veloxy.h1.parser import FAST_LANE

    return bool(FAST_LANE)


def _calls_per_request(browser: bool, balance: str = "round_robin",
                       requests: int = 50) -> dict[str, float]:
    """{function: calls per proxied GET} in veloxy's code, in steady state."""
    counts: dict[str, int] = {}

    async def run() -> None:
        wiring = Wiring(browser, balance)
        for _ in range(20):
            wiring.proxy_one()

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code.co_filename.startswith(SRC):
                name = frame.f_code.co_qualname
                counts[name] = counts.get(name, 0) + 1

        down, upstream = wiring.down, wiring.upstream
        sys.setprofile(profile)
        try:
            for _ in range(requests):
                down.data_received(wiring.request)
                upstream.data_received(wiring.response)
        finally:
            sys.setprofile(None)
        assert len(wiring.down_transport.written) == 20 + requests

    asyncio.run(run())
    return {name: n / requests for name, n in counts.items()}


@pytest.mark.parametrize("browser", [False, True], ids=["minimal", "browser"])
def test_python_calls_per_proxied_get_within_budget(browser: bool) -> None:
    calls = _calls_per_request(browser)
    total = sum(calls.values())
    budget = CALL_BUDGET[_fast_lane(), browser]
    listing = "\n".join(f"  {n:5.2f} {name}" for name, n in sorted(calls.items()))
    assert total <= budget, (
        f"{total:g} Python calls per proxied GET, budget {budget}: a call was added to the "
        f"common path (measure its cost; see docs/BENCHMARKS.md)\n{listing}")
    # and no per-request work that the design rules out (docs/design.md)
    assert not any("Task" in name or "create_task" in name for name in calls)


def compact_attribute_limit() -> int:
    """The most instance attributes a class's instances keep in CPython's compact shared
    layout, measured: the size of an instance's materialised __dict__ jumps when the
    shared keys overflow and the instance gets a dict of its own."""
    sizes = []
    for n in range(1, 64):
        namespace: dict[str, Any] = {}
        body = "".join(f"        self.a{i} = {i}\n" for i in range(n))
        exec(f"class C:\n    def __init__(self):\n{body or '        pass'}\n", namespace)
        cls = namespace["C"]
        cls()
        sizes.append(sys.getsizeof(cls().__dict__))
    for n in range(1, len(sizes)):
        if sizes[n] > 2 * sizes[n - 1]:
            return n  # sizes[n] is for n + 1 attributes: the first that overflows
    raise AssertionError(f"no jump in dict sizes: {sizes}")


def test_the_exchange_keeps_a_compact_layout() -> None:
    limit = compact_attribute_limit()
    assert 20 <= limit <= 60  # 29 on CPython 3.11 to 3.13; the interpreter's, measured
    seen: list[ProxyExchange] = []

    async def run() -> None:
        wiring = Wiring(False)
        app = wiring.app

        def keep(conn: Any, head: Any) -> ProxyExchange:
            exchange = ProxyExchange(app, conn, head)
            seen.append(exchange)
            return exchange

        app.start_exchange = keep  # type: ignore[method-assign]
        for _ in range(3):
            wiring.proxy_one()

    asyncio.run(run())
    names = set(vars(seen[-1]))
    assert len(names) <= limit - 4, (  # headroom for the rare paths' attributes
        f"{len(names)} instance attributes on the common path; CPython keeps at most "
        f"{limit} in the compact layout: {sorted(names)}")


def _drive(balance: str, requests: int = 5) -> Wiring:
    wiring: Wiring | None = None

    async def run() -> None:
        nonlocal wiring
        wiring = Wiring(False, balance)
        for _ in range(requests):
            wiring.proxy_one()

    asyncio.run(run())
    assert wiring is not None
    return wiring


@pytest.mark.parametrize("balance", ["least_conn", "p2c_ewma", "adaptive"])
def test_the_inlined_attempt_and_answer_keep_the_books(balance: str) -> None:
    """ProxyExchange._begin_attempt and on_response inline BaseExchange's bookkeeping:
    in-flight counts taken and given back, latency timed for the latency-aware policies."""
    wiring = _drive(balance)
    server = wiring.server
    assert server.active == 0
    assert server.tracks_in_flight
    if balance != "least_conn":
        assert server.latency_at > 0.0  # answered() saw an attempt timed from its start
        assert 0.0 <= server.latency < 1.0
    codes = server.metrics.codes
    assert codes[200] == 5


def test_the_inlined_in_flight_release_matches_the_shared_one() -> None:
    """log_exchange releases the in-flight count as BaseExchange._leave does."""
    wiring = _drive("least_conn", 1)
    server = wiring.server

    class Bare(BaseExchange):
        pass

    for release in (lambda x: x._leave(), lambda x: logging_phase.log_exchange(x, 200)):
        exchange = Bare(wiring.app, wiring.down, _head())
        exchange.server = exchange._in_flight = server
        server.active += 1
        exchange.started = 1.0
        release(exchange)
        assert server.active == 0 and exchange._in_flight is None


def _head() -> Any:
    from veloxy.h1.head import RequestHead

    head = RequestHead()
    head.method, head.target = b"GET", b"/"
    return head


def test_the_inlined_counting_matches_its_specification(monkeypatch) -> None:
    """log_exchange counts inline (no RouteMetrics/ServerMetrics method call): the route's
    and the server's handles must end up as the metrics' definition says (a count by method
    and status, a bucket by `le` bound, the sum), retries timed from their own attempt."""
    wiring = _drive("round_robin", 0)
    route = wiring.app.router.routes[0]
    server = wiring.server
    cases = [(200, 0.0004, 1), (404, 0.0005, 1), (200, 0.2, 2), (503, 30.0, 1), (200, 7.0, 3)]
    expected_route = [0] * len(route.metrics.buckets)
    expected_server = [0] * len(server.metrics.buckets)
    now = 1000.0
    monkeypatch.setattr(logging_phase, "monotonic", lambda: now)
    for status, seconds, attempts in cases:
        exchange = ProxyExchange(wiring.app, wiring.down, _head())
        exchange.route, exchange.server, exchange.status = route, server, status
        exchange.started = now - seconds
        exchange._attempts = attempts
        exchange._attempt_started = now - seconds / 2
        logging_phase.log_exchange(exchange, status)
        # (the elapsed times as the clock arithmetic gives them: 1000 - 999.9 is not 0.1)
        expected_route[bisect_left(BOUNDS_LIST, now - exchange.started)] += 1
        timed = now - (exchange._attempt_started if attempts > 1 else exchange.started)
        expected_server[bisect_left(BOUNDS_LIST, timed)] += 1
    assert route.metrics.counts[b"GET"][200] == 3
    assert route.metrics.counts[b"GET"][404] == 1 and route.metrics.counts[b"GET"][503] == 1
    assert route.metrics.buckets == expected_route
    assert route.metrics.sum == pytest.approx(sum(s for _, s, _ in cases))
    assert server.metrics.codes[200] == 3 and server.metrics.buckets == expected_server
    assert server.metrics.sum == pytest.approx(0.0004 + 0.0005 + 0.1 + 30.0 + 3.5)


@pytest.mark.parametrize("admission", ["none", "shed"])
def test_routes_without_a_rate_limit_or_cap_make_no_admission_call(admission: str) -> None:
    """A route without rate_limit and max_concurrent, in a proxy without limits.shed, has
    no Admission: the common path is the same as before admission existed (one attribute
    test). With shedding on, every route asks: one call (docs/BENCHMARKS.md, "Rate limits
    and load shedding")."""
    calls: dict[str, int] = {}

    async def run() -> None:
        w = Wiring(False, admission=admission)
        assert (w.app.router.routes[0].admission is None) == (admission == "none")
        for _ in range(5):
            w.proxy_one()

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code.co_filename.startswith(SRC):
                calls[frame.f_code.co_qualname] = calls.get(frame.f_code.co_qualname, 0) + 1

        sys.setprofile(profile)
        try:
            w.proxy_one()
        finally:
            sys.setprofile(None)

    asyncio.run(run())
    assert calls.get("Admission.admit", 0) == (0 if admission == "none" else 1), calls


def test_the_in_flight_count_given_back_inline_balances_every_admission() -> None:
    """Admission.admit takes a place for every exchange it sees, refused or not, and
    log_exchange gives it back inline: after requests answered and refused, none is held."""
    from veloxy.proxy.admission import MAX_CONCURRENT

    async def run() -> None:
        wiring = Wiring(False, admission="max_concurrent")
        admission = wiring.app.router.routes[0].admission
        assert admission is not None and admission.max_concurrent == 1000
        for _ in range(5):
            wiring.proxy_one()
        assert admission.in_flight == 0
        admission.max_concurrent = 0  # every request is refused now
        wiring.down.data_received(wiring.request)
        assert wiring.down_transport.written[-1].startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1\r\n" in wiring.down_transport.written[-1]
        assert admission.in_flight == 0
        assert wiring.app.router.routes[0].metrics.refused == {MAX_CONCURRENT: 1}

    asyncio.run(run())
