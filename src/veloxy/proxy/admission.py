"""Admission: whether a routed request may go upstream now (issue 14), checked once per
request in the shared request phase (BaseExchange.start, right after routing), so HTTP/1.1
and HTTP/2 clients and every exchange kind get the same answer.

A route's `Admission` holds, per worker:

- load shedding (`limits.shed`, Envoy's overload manager): 503 while the event loop lags
  (the lateness of the deadline sweeper's 100 ms tick, net/timers.py) or while the route's
  upstream group has too many requests waiting for a connection (upstream/pool.py);
- the route's cap on requests in flight (`max_concurrent`): 503 beyond it;
- the route's rate limit (`rate_limit`): 429 Too Many Requests once its key's token bucket
  is empty.

Every refusal carries Retry-After; a 429 also carries the RateLimit-Policy and RateLimit
fields of the IETF draft (draft-ietf-httpapi-ratelimit-headers-12, November 2026: a quota
`q` per window `w` seconds, and the remaining quota `r` with the seconds `t` until it
comes back). The refusal is recorded through the one logging phase (proxy/logging_phase.py)
as any answer is, so the access log and http_requests_total see the 429 or 503, and is
counted by reason on the route (veloxy_requests_refused_total).

A route without these settings has no Admission (`CompiledRoute.admission` is None): the
request pays one attribute test, no call. With them, one call per request
(docs/BENCHMARKS.md, "Rate limits and load shedding").

Token buckets are GCRA (the generic cell rate algorithm): one float per key, the time at
which the bucket would be full again ("theoretical arrival time"); a request is admitted
when that time is at most `burst - 1` intervals ahead, and moves it one interval on. Exact
for any rate, with no timer and nothing to refill. Keys are remembered in an OrderedDict in
the order they were last seen, at most `max_keys` per route: a bucket whose time has passed
is full, the same as a key never seen, so forgetting the least recently seen keys changes
nothing until more than `max_keys` keys are active within one refill time.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from veloxy.config import RateLimit, Shed
    from veloxy.net.timers import DeadlineSweeper
    from veloxy.proxy.exchange import BaseExchange
    from veloxy.upstream.group import Group

#: The reasons a request is refused (the exchange's `_error`, the metric's `reason` label).
RATE_LIMITED = "rate_limited"
MAX_CONCURRENT = "max_concurrent"
LOOP_LAG = "loop_lag"
QUEUE = "queue"

#: A 503 of ours asks the client to come back in a second (RFC 9110 §10.2.3).
RETRY_SOON = ((b"Retry-After", b"1"),)


class RateLimiter:
    """Token buckets by key for one route (GCRA; see the module docstring)."""

    __slots__ = ("_tats", "by_client", "header", "interval", "max_keys", "policy", "tolerance")

    def __init__(self, config: RateLimit) -> None:
        #: Seconds per token, and how far ahead of now a key's time may run and still be
        #: admitted (burst - 1 tokens).
        self.interval = 1.0 / config.per_second
        self.tolerance = (config.bucket - 1) * self.interval
        #: What the key is: the client's address, a header's value (its name lowercased,
        #: for key "header:NAME"), or neither: the route (one bucket).
        self.by_client = config.key == "client_ip"
        self.header = config.key.partition(":")[2].encode("latin-1") \
            if config.key.startswith("header:") else None
        self.max_keys = config.max_keys
        count, window = config.quota
        self.policy = b'"default";q=%d;w=%d' % (count, window)
        #: key -> the time its bucket is full again, least recently seen first.
        self._tats: OrderedDict[bytes, float] = OrderedDict()

    def take(self, key: bytes, now: float) -> float:
        """Take a token from `key`'s bucket at time `now`: 0.0 when there was one, else the
        seconds until there is (nothing taken)."""
        tats = self._tats
        tat = tats.get(key)
        if tat is None:
            if len(tats) >= self.max_keys:
                tats.popitem(last=False)  # the least recently seen
            tat = now
        else:
            tats.move_to_end(key)
            if tat < now:
                tat = now
        ahead = tat - now - self.tolerance
        if ahead > 0.0:
            return ahead
        tats[key] = tat + self.interval
        return 0.0

    def __len__(self) -> int:
        return len(self._tats)


class Admission:
    """What one route checks before a request goes upstream (see the module docstring)."""

    __slots__ = ("in_flight", "limiter", "loop_lag", "max_concurrent", "queue", "sweeper")

    def __init__(self, rate_limit: RateLimit | None, max_concurrent: int | None,
                 shed: Shed | None, sweeper: DeadlineSweeper) -> None:
        self.limiter = RateLimiter(rate_limit) if rate_limit is not None else None
        self.max_concurrent = max_concurrent
        #: Requests of the route in flight in this worker (kept only with max_concurrent;
        #: given back by the logging phase, proxy/logging_phase.py).
        self.in_flight = 0
        self.loop_lag = shed.loop_lag if shed is not None else None
        self.queue = shed.queue if shed is not None else None
        self.sweeper = sweeper

    def admit(self, x: BaseExchange, group: Group) -> bool:
        """True when `x` may go on; else it has been answered (and recorded)."""
        max_concurrent = self.max_concurrent
        if max_concurrent is not None:
            # Every exchange that asks holds a place, refused or not, and the logging phase,
            # which records each exactly once, gives it back: no flag to keep, no call there.
            self.in_flight += 1
        if self.loop_lag is not None and self.sweeper.lag >= self.loop_lag:
            x.refuse(503, "overloaded: the proxy is falling behind, try again shortly",
                     LOOP_LAG, RETRY_SOON)
            return False
        if self.queue is not None:
            waiting = 0
            for server in group.servers:
                waiting += len(server.pool.waiters)
            if waiting >= self.queue:
                x.refuse(503, f"overloaded: too many requests waiting for upstream group "
                              f"{group.name!r}, try again shortly", QUEUE, RETRY_SOON)
                return False
        if max_concurrent is not None and self.in_flight > max_concurrent:
            x.refuse(503, f"this route has {max_concurrent} requests in flight, try again "
                          f"shortly", MAX_CONCURRENT, RETRY_SOON)
            return False
        limiter = self.limiter
        if limiter is not None:
            if limiter.by_client:
                key = x.down.client_ip
            elif limiter.header is not None:  # without the header: one shared bucket
                key = x.head.header(limiter.header) or b""
            else:
                key = b""  # the route's one bucket
            wait = limiter.take(key, x.started)
            if wait:
                seconds = b"%d" % max(1, math.ceil(wait))
                x.refuse(429, "too many requests: over this route's rate limit", RATE_LIMITED,
                         ((b"Retry-After", seconds),
                          (b"RateLimit-Policy", limiter.policy),
                          (b"RateLimit", b'"default";r=0;t=' + seconds)))
                return False
        return True
