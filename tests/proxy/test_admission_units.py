"""The token buckets of proxy/admission.py on a clock the test sets: exact rate and burst,
the memory bound under a flood of distinct keys, and the config that builds them. The
behaviour through real sockets is in test_rate_limits.py and test_shedding.py."""

from __future__ import annotations

import re

import pytest

from veloxy.config import RateLimit, parse_config
from veloxy.errors import ConfigError
from veloxy.proxy.admission import RateLimiter


def admitted(limiter: RateLimiter, key: bytes, times: list[float]) -> int:
    return sum(limiter.take(key, t) == 0.0 for t in times)


def test_burst_then_the_rate_exactly() -> None:
    limiter = RateLimiter(RateLimit(rate="50/s", burst=10))
    # a request every millisecond for 2 s: the burst, then one per 20 ms
    times = [i / 1000 for i in range(2000)]
    assert admitted(limiter, b"a", times) == 10 + 100 - 1  # the 100th token is due at 2.0 s


def test_a_refusal_says_when_a_token_comes_back() -> None:
    limiter = RateLimiter(RateLimit(rate="6000/m", burst=2))  # one token per 10 ms
    assert limiter.take(b"a", 5.0) == 0.0
    assert limiter.take(b"a", 5.0) == 0.0
    assert limiter.take(b"a", 5.0) == pytest.approx(0.01)
    assert limiter.take(b"a", 5.004) == pytest.approx(0.006)  # refusals take nothing
    assert limiter.take(b"a", 5.01) == 0.0
    assert limiter.take(b"b", 5.01) == 0.0  # another key, another bucket


def test_burst_defaults_to_the_rate_count_and_policy_names_the_window() -> None:
    limiter = RateLimiter(RateLimit(rate="6000/m"))
    assert admitted(limiter, b"a", [0.0] * 7000) == 6000
    assert limiter.policy == b'"default";q=6000;w=60'


def test_keys_are_bounded_and_the_least_recently_seen_go_first() -> None:
    limiter = RateLimiter(RateLimit(rate="1/h", burst=1, max_keys=100))
    assert limiter.take(b"regular", 0.0) == 0.0
    for i in range(10_000):  # a flood of distinct addresses
        limiter.take(b"10.0.%d.%d" % divmod(i, 256), 1.0 + i * 1e-6)
        if i % 50 == 0:
            assert limiter.take(b"regular", 1.0 + i * 1e-6) > 0.0  # seen often: remembered
        assert len(limiter) <= 100
    assert len(limiter) == 100


def test_config_errors_name_the_key_path() -> None:
    base = {"upstreams": {"a": {"servers": ["http://127.0.0.1:9"]}}}
    for settings, message in [
        ({"rate_limit": {"rate": "100/d"}}, 'routes.0.rate_limit.rate: expected a rate like'),
        ({"rate_limit": {"rate": "1/s", "key": "ip"}}, "routes.0.rate_limit.key: expected"),
        ({"rate_limit": {"rate": "1/s", "burst": 0}}, "routes.0.rate_limit.burst: expected"),
        ({"max_concurrent": 0}, "routes.0.max_concurrent: expected an integer >= 1"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config({**base, "routes": [{"upstream": "a", **settings}]})
    with pytest.raises(ConfigError, match=r"limits\.shed: expected loop_lag or queue"):
        parse_config({**base, "routes": [{"upstream": "a"}], "limits": {"shed": {}}})


def test_a_reload_keeps_the_buckets_of_unchanged_routes() -> None:
    """ProxyApp binds an Admission per route with limits, reuses it across a reload when
    the route's label and settings are the same (its buckets and in-flight count go on),
    makes a new one when they changed, and none for a route without limits."""
    import asyncio

    from veloxy.net.timers import sweeper_for
    from veloxy.proxy.app import ProxyApp

    def config(rate: str) -> dict:
        return {"upstreams": {"a": {"servers": ["http://127.0.0.1:9"]}},
                "routes": [{"match": {"path_prefix": "/kept/"}, "upstream": "a",
                            "rate_limit": {"rate": "10/s"}, "max_concurrent": 5},
                           {"match": {"path_prefix": "/changed/"}, "upstream": "a",
                            "rate_limit": {"rate": rate}},
                           {"upstream": "a"}]}

    async def run() -> None:
        app = ProxyApp(parse_config(config("10/s")), sweeper_for(asyncio.get_running_loop()))
        try:
            kept, changed, plain = app.router.routes
            assert plain.admission is None
            assert kept.admission is not None and changed.admission is not None
            app.reload(parse_config(config("20/s")))
            kept2, changed2, plain2 = app.router.routes
            assert kept2 is not kept and kept2.admission is kept.admission
            assert changed2.admission is not changed.admission
            assert changed2.admission is not None and changed2.admission.limiter is not None
            assert changed2.admission.limiter.interval == pytest.approx(0.05)
            assert plain2.admission is None
        finally:
            app.close()

    asyncio.run(run())
