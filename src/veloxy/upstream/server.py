"""One upstream server as the balancers and the health machinery see it.

A `Server` is one address (host:port) of a group, with its connection pool and the few
numbers that selection and passive health need. Why they live here, on plain slots, rather
than in a statistics object: the exchange updates them on every request (`active` at the
start and end of an attempt, `failures` when an answer is a failure or ends a run of them),
and an attribute increment is the cheapest bookkeeping Python has.

The numbers, and who reads them:

- `active`: attempts in flight (picked, not yet finished, including the wait for a pooled
  connection). least_conn, p2c_ewma and adaptive read it, so the exchange maintains it
  only under those (`counted`); the others leave the hot path without it (the pool's
  `in_use` tells nearly the same for stats).
- `failures`: failures in a row (connect error, reset, timeout, 5xx). Passive health ejects
  the server when it reaches the group's threshold; any success resets it.
- `latency`: a peak-sensitive moving average of the time from the start of an attempt to
  the response head (Finagle's "peak EWMA"): a slower sample is taken at once, a faster one
  is blended in with a weight that grows with the time since the previous sample (decay time
  `DECAY`). Only kept for the policies that read it (`timed`), because it costs two clock
  reads per request.
- `error_rate`: a moving average of failures (1) and successes (0) over about the last 20
  answers, for adaptive.

Estimates of a server that stops getting traffic go stale. Rather than a timer per server,
`cost_latency` and `cost_errors` decay them toward zero when read after `STALE` seconds
without a sample, so a server that was slow once is tried again after a few decay times
(and then either proves itself fast or refreshes its bad estimate).
"""

from __future__ import annotations

from collections.abc import Callable
from math import exp
from typing import TYPE_CHECKING

from veloxy.net.timers import NEVER
from veloxy.observe.metrics import ServerMetrics
from veloxy.upstream.pool import ConnectionPool

if TYPE_CHECKING:
    from veloxy.upstream.group import Group

#: Decay time of the latency average, seconds: a 10x slower server is noticed at its first
#: slow answer (the peak is taken at once); after it recovers, its estimate falls back within
#: about 2.3 decay times (ln 10). Finagle and Linkerd use 10 s; a proxy in front of a handful
#: of servers gains from a shorter memory.
DECAY = 2.0
#: An estimate older than this is decayed when read (see the module docstring).
STALE = 0.5
#: Weight of one answer in `error_rate` (about the last 1/ERROR_ALPHA answers count).
ERROR_ALPHA = 0.05


class Server:
    """One address of an upstream group, with its pool, health and load numbers."""

    __slots__ = (
        "active",
        "address",
        "clock",
        "counted",
        "deadline",
        "ejected",
        "ejections",
        "error_at",
        "error_rate",
        "failures",
        "group",
        "healthy",
        "host",
        "latency",
        "latency_at",
        "metrics",
        "name",
        "pool",
        "port",
        "timed",
        "url",
        "watch",
        "weight",
    )

    def __init__(self, url: str, host: str, port: int, weight: int, pool: ConnectionPool,
                 *, name: str | None = None, group: Group | None = None,
                 clock: Callable[[], float] | None = None,
                 metrics: ServerMetrics | None = None) -> None:
        self.url = url
        #: The configured host name when the address came from DNS, else the address itself.
        self.name = name or host
        self.host = host
        self.port = port
        self.weight = weight
        self.pool = pool
        self.group = group
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        #: Answers and their latency, for /metrics (bound once: observe/metrics.py).
        self.metrics = metrics if metrics is not None else ServerMetrics(
            group.name if group is not None else "", self.address)
        self.metrics.bind(self)
        self.active = 0
        #: Active health: False after unhealthy_threshold failed probes in a row.
        self.healthy = True
        #: Passive health: out of the rotation until `deadline` (a sweeper deadline).
        self.ejected = False
        self.ejections = 0
        self.failures = 0
        self.deadline = NEVER
        #: Clock for latency samples (the loop's); set with `timed` by the group.
        self.clock = clock
        self.timed = False
        #: The policy reads `active`, so the exchange keeps it (see the module docstring).
        self.counted = False
        #: The exchange must report this server's answers: it is timed, or has failures on
        #: record. Otherwise a good answer costs the exchange one test (see `answered`).
        self.watch = False
        self.latency = 0.0
        self.latency_at = 0.0
        self.error_rate = 0.0
        self.error_at = 0.0

    def __repr__(self) -> str:
        state = "up" if self.available else "down"
        return f"<Server {self.address} weight={self.weight} {state}>"

    @property
    def available(self) -> bool:
        """Healthy by the active checks and not ejected by the passive ones."""
        return self.healthy and not self.ejected

    # -- passive health: called by the exchange ----------------------------------------------

    def set_timed(self, timed: bool) -> None:
        """Whether the policy reads latency (the exchange then times each attempt)."""
        self.timed = timed
        self.watch = timed or self.failures > 0

    def answered(self, status: int, started: float) -> None:
        """A response head arrived. The exchange calls this only when `watch` is set or the
        status is a 5xx, so a good answer from a server with a clean record costs nothing
        here; `started` is when the attempt began (meaningful only when timed)."""
        if self.timed:
            self.observe(status, started)
        elif status >= 500:
            self.failed()
        else:
            self.succeeded()

    def succeeded(self) -> None:
        """An answer below 500 arrived: the run of failures, and the ejection record, end."""
        self.failures = 0
        self.ejections = 0
        self.watch = self.timed

    def failed(self) -> None:
        """An attempt failed: connect error, reset, timeout, garbage, or a 5xx status."""
        self.failures += 1
        self.watch = True
        if self.group is not None:
            self.error_rate += (1.0 - self.error_rate) * ERROR_ALPHA
            self.error_at = self.group.sweeper.now
            self.group.server_failed(self)

    def observe(self, status: int, started: float) -> None:
        """A response head arrived for an attempt started at `started` (by `clock`; only
        latency-aware policies call this): update the latency average, the error rate and
        passive health. One clock read: the one that ends the sample."""
        now = self.clock()  # type: ignore[misc]  # clock is set whenever timed is (group.py)
        elapsed = now - started
        previous = self.latency
        if elapsed >= previous or self.latency_at == 0.0:
            self.latency = elapsed  # peak: a slowdown counts at once
        else:
            gap = now - self.latency_at  # >= 0 with one monotonic clock; exp() must not
            keep = exp(-gap / DECAY) if gap > 0.0 else 1.0  # overflow if it ever is not
            self.latency = previous * keep + elapsed * (1.0 - keep)
        self.latency_at = now
        if status >= 500:
            self.failed()
        else:
            self.error_rate -= self.error_rate * ERROR_ALPHA
            self.error_at = now
            if self.failures:
                self.succeeded()

    # -- estimates as the balancers read them ------------------------------------------------

    def cost_latency(self, now: float) -> float:
        """`latency`, decayed toward 0 if no sample arrived for STALE seconds."""
        age = now - self.latency_at
        if age > STALE and self.latency:
            return self.latency * exp(-age / DECAY)
        return self.latency

    def cost_errors(self, now: float) -> float:
        """`error_rate`, decayed toward 0 if no answer arrived for STALE seconds."""
        age = now - self.error_at
        if age > STALE and self.error_rate:
            return self.error_rate * exp(-age / DECAY)
        return self.error_rate

    # -- sweeper: the end of an ejection -----------------------------------------------------

    def on_deadline(self, now: float) -> None:
        self.deadline = NEVER
        if self.group is not None:
            self.group.readmit(self)

    def stats(self) -> dict[str, object]:
        """Numbers for /status and metrics: health, load, and the pool's counters."""
        return {
            "address": self.address,
            "name": self.name,
            "weight": self.weight,
            "healthy": self.healthy,
            "ejected": self.ejected,
            "active": self.active,
            "failures": self.failures,
            "latency_ms": round(self.latency * 1000, 3),
            "error_rate": round(self.error_rate, 4),
            "pool": self.pool.snapshot(),
        }
