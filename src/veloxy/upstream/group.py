"""The runtime form of one upstream group: its servers, their pools, health, and the selector.

Built once from config.UpstreamGroup (a reload, later, builds a new one and swaps it in while
requests in flight keep the one they started with). What changes at run time, and how:

- Health. A server leaves the rotation when the active checks fail it (health.py) or when
  passive health ejects it; either way the group rebuilds its selector over the servers
  still available (`refresh`). These are rare events, so the request path never tests
  health: it asks the selector, which only knows available servers.
- Passive health (outlier detection). The exchange reports failures (connect error, reset,
  timeout, 5xx) and, when a server has some on record, successes. After `failures` in a
  row the server is ejected for `ejection`, doubled on each ejection that follows without a
  success in between, up to `max_ejection`. When the time is up (a sweeper deadline, no
  timer of its own) the server is back on probation: its next answer decides, a success
  clears its record and a failure ejects it again, for twice as long. The last server
  taking traffic is never ejected: with nothing else to send requests to, trying it is the
  only way to notice that it came back.
- DNS. Servers written with a host name are resolved at start-up and every `dns_ttl`; an
  address that appears becomes a server (with its own pool and health check), one that
  disappears is dropped (its pool is closed; requests in flight on it finish).

When no server is available the selector answers None and the exchange answers 503 at once
with `unavailable_reason()` as the body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from veloxy.config import UpstreamGroup as GroupConfig
from veloxy.config import UpstreamServer
from veloxy.h1.head import RequestHead
from veloxy.net.sockopt import SocketOptions, is_default
from veloxy.net.timers import NEVER, DeadlineSweeper
from veloxy.observe.metrics import MetricsRegistry
from veloxy.tls.client import client_context, server_hostname
from veloxy.upstream import discovery
from veloxy.upstream.balance import (
    COUNTED_POLICIES,
    TIMED_POLICIES,
    Balancer,
    make_balancer,
)
from veloxy.upstream.endpoint import Endpoint
from veloxy.upstream.health import HealthChecker
from veloxy.upstream.pool import ConnectionPool

log = logging.getLogger("veloxy.upstream")

__all__ = ["Endpoint", "Group"]


class Group:
    __slots__ = (
        "_checkers",
        "_clock",
        "_dns_task",
        "_entries",
        "available",
        "balancer",
        "closed",
        "config",
        "metrics",
        "metrics_registry",
        "name",
        "retries",
        "servers",
        "socket_options",
        "sweeper",
        "timeouts",
        "tls_context",
    )

    def __init__(self, config: GroupConfig, sweeper: DeadlineSweeper,
                 socket_options: SocketOptions | None = None, *,
                 metrics: MetricsRegistry | None = None) -> None:
        self.name = config.name
        #: Where the servers' handles are bound (observe/metrics.py); `metrics` counts the
        #: group's retries.
        self.metrics_registry = metrics if metrics is not None else MetricsRegistry()
        self.metrics = self.metrics_registry.group(config.name)
        #: `tuning.upstream` for the pools' new connections; None when nothing is set.
        self.socket_options = None if is_default(socket_options) else socket_options
        self.config = config
        #: One client context for the group's https:// servers (tls/client.py), or None.
        self.tls_context = (client_context(config.tls, f"upstreams.{config.name}.tls",
                                           http2=config.protocol == "h2")
                            if any(entry.secure for entry in config.servers) else None)
        self.timeouts = config.timeouts
        self.retries = config.retries
        self.sweeper = sweeper
        self.closed = False
        # The loop's own clock for latency samples (a C method: two reads per request under
        # p2c_ewma and adaptive); the sweeper's reader when built outside a running loop.
        try:
            self._clock: Callable[[], float] = asyncio.get_running_loop().time
        except RuntimeError:
            self._clock = sweeper.refresh
        self._checkers: dict[Endpoint, asyncio.Task[None]] = {}
        self._dns_task: asyncio.Task[None] | None = None
        #: Each configured server with the servers (addresses) it stands for now.
        self._entries: list[tuple[UpstreamServer, list[Endpoint]]] = []
        for entry in config.servers:
            try:
                addresses = discovery.resolve_now(entry.host, entry.port)
            except OSError as exc:
                # Not fatal: the name may appear later (a service not deployed yet).
                log.warning("upstreams.%s: cannot resolve %s (%s); retrying every %gs",
                            self.name, entry.host, exc, config.dns_ttl)
                addresses = []
            self._entries.append((entry, [self._new_server(entry, a) for a in addresses]))
        self.servers: list[Endpoint] = []
        self.available: list[Endpoint] = []
        self.balancer: Balancer = make_balancer(config.balance, [], sweeper)
        self._rebuild()

    def _new_server(self, entry: UpstreamServer, address: str) -> Endpoint:
        pool = self.config.pool
        pool_class: type[ConnectionPool] = ConnectionPool
        extra: dict[str, Any] = {}
        if self.config.protocol != "http1":  # HTTP/2 (h2c, h2): upstream/h2c_pool.py
            from veloxy.upstream.h2c_pool import H2cPool

            pool_class, extra = H2cPool, {"group": self.name}
        server = Endpoint(
            entry.url, address, entry.port, entry.weight,
            pool_class(
                address, entry.port, **extra,
                timeouts=self.config.timeouts,
                sweeper=self.sweeper,
                max_connections=pool.max_connections,
                max_idle=pool.max_idle,
                idle_timeout=pool.idle_timeout,
                max_lifetime=pool.max_lifetime,
                max_waiting=pool.max_waiting,
                wait_timeout=pool.wait_timeout,
                socket_options=self.socket_options,
                ssl=self.tls_context if entry.secure else None,
                server_hostname=server_hostname(self.config.tls, entry.host)
                if entry.secure else None,
            ),
            name=entry.host, group=self, clock=self._clock,
            metrics=self.metrics_registry.server(self.name, f"{address}:{entry.port}"
                                                 if ":" not in address
                                                 else f"[{address}]:{entry.port}"),
        )
        server.set_tracks_latency(self.config.balance in TIMED_POLICIES)
        server.tracks_in_flight = self.config.balance in COUNTED_POLICIES
        return server

    # -- the selector ------------------------------------------------------------------------

    def _rebuild(self) -> None:
        self.servers = [server for _, servers in self._entries for server in servers]
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the selector over the servers that may take traffic now."""
        available = [s for s in self.servers if s.healthy and not s.ejected]
        if not available:
            # Passive ejection never empties a group on its own; if the active checks took
            # the rest, the ejected-but-healthy servers are better than a 503.
            available = [s for s in self.servers if s.healthy]
        self.available = available
        self.balancer = make_balancer(self.config.balance, available, self.sweeper,
                                      self.config.hash_source)

    def pick_retry(self, head: RequestHead, client_ip: bytes, failed: Endpoint | None,
                   avoid: tuple[Endpoint, ...]) -> Endpoint | None:
        """A server for a retry: the selector's choice away from `failed` (the server of the
        attempt that just failed), and never one of `avoid` (those that failed this request
        for real, not by the keep-alive race) while another is available."""
        server = self.balancer.pick(head, client_ip, exclude=failed)
        if server is None or server not in avoid:
            return server
        for other in self.available:  # the policy insists on a failed one: any other will do
            if other not in avoid:
                return other
        return server

    def unavailable_reason(self) -> str:
        """The body of the 503 sent when no server is available: what is wrong, in words."""
        if not self.servers:
            return (f"upstream group {self.name!r} has no servers: "
                    f"{', '.join(e.host for e, _ in self._entries)} did not resolve")
        down = sum(not s.healthy for s in self.servers)
        return (f"no server of upstream group {self.name!r} is available "
                f"({down} of {len(self.servers)} failing health checks)")

    def all_failing(self) -> bool:
        """Every server is down by the checks or has failed `failures` times in a row (the
        last one is kept in rotation, but it is failing too)."""
        passive = self.config.passive_health
        threshold = passive.failures if passive is not None else None
        return all(not s.healthy or (threshold is not None and s.failures >= threshold)
                   for s in self.servers)

    # -- passive health ------------------------------------------------------------------------

    def server_failed(self, server: Endpoint) -> None:
        """Called by Endpoint.failed: eject it if its run of failures is long enough."""
        passive = self.config.passive_health
        if passive is None or server.ejected or server.failures < passive.failures:
            return
        if server not in self.available or not any(
                s is not server for s in self.available):
            return  # never eject the last server taking traffic
        # Doubling, capped (the exponent too: a server dead for days is ejected again and
        # again, and 2 ** 1100 does not fit a float).
        duration = min(passive.ejection * 2 ** min(server.ejections, 40), passive.max_ejection)
        server.ejections += 1
        server.ejected = True
        # The clock read afresh: `now` is stale while the sweeper has nothing to watch.
        server.deadline = self.sweeper.refresh() + duration
        self.sweeper.add(server)
        log.warning("upstreams.%s: ejecting %s for %gs after %d failures in a row",
                    self.name, server.address, duration, server.failures)
        self.refresh()

    def readmit(self, server: Endpoint) -> None:
        """An ejection is over: the server is back, on probation (see the module doc)."""
        self.sweeper.discard(server)
        server.deadline = NEVER
        if not server.ejected:
            return
        server.ejected = False
        log.info("upstreams.%s: %s back in rotation after ejection", self.name, server.address)
        if not self.closed:
            self.refresh()

    # -- active health -------------------------------------------------------------------------

    def set_healthy(self, server: Endpoint, healthy: bool, why: str) -> None:
        """The active checks changed their verdict on `server`."""
        server.healthy = healthy
        if healthy:
            server.succeeded()  # proven healthy: its passive record starts over
            log.info("upstreams.%s: %s is healthy again (%s)", self.name, server.address, why)
        else:
            log.warning("upstreams.%s: %s is unhealthy (%s)", self.name, server.address, why)
        if server in self.servers:
            self.refresh()

    # -- background tasks ----------------------------------------------------------------------

    def start(self) -> None:
        """Start health checks and DNS refresh, if configured. Needs the running loop."""
        if self.config.health_check is not None:
            for server in self.servers:
                self._start_checker(server)
        if self.config.dns_ttl > 0 and not all(discovery.is_ip(e.host) for e, _ in self._entries):
            self._dns_task = asyncio.get_running_loop().create_task(self._follow_dns())

    def _start_checker(self, server: Endpoint) -> None:
        check = self.config.health_check
        if check is None or self.closed:
            return
        checker = HealthChecker(server, check, self.sweeper, self.set_healthy)
        self._checkers[server] = asyncio.get_running_loop().create_task(checker.run())

    async def _follow_dns(self) -> None:
        while True:
            await asyncio.sleep(self.config.dns_ttl)
            await self.resolve_again()

    async def resolve_again(self) -> None:
        """Resolve every named server once more and apply the differences."""
        changed = False
        for index, (entry, servers) in enumerate(self._entries):
            if discovery.is_ip(entry.host):
                continue
            try:
                addresses = await discovery.resolve(entry.host, entry.port)
            except OSError as exc:
                log.warning("upstreams.%s: cannot resolve %s (%s); keeping %d known addresses",
                            self.name, entry.host, exc, len(servers))
                continue
            if self.closed:
                return
            known = {server.host: server for server in servers}
            if set(known) == set(addresses):
                continue
            kept = [known[a] if a in known else self._new_server(entry, a) for a in addresses]
            for server in servers:
                if server.host not in addresses:
                    self._drop(server)
            for server in kept:
                if server.host not in known:
                    self._start_checker(server)
            log.info("upstreams.%s: %s now resolves to %s", self.name, entry.host,
                     ", ".join(addresses) or "nothing")
            self._entries[index] = (entry, kept)
            changed = True
        if changed:
            self._rebuild()

    def _drop(self, server: Endpoint) -> None:
        task = self._checkers.pop(server, None)
        if task is not None:
            task.cancel()
        self.sweeper.discard(server)
        server.pool.close()

    # -- the end -------------------------------------------------------------------------------

    def retire(self) -> None:
        """A reload replaced this group: stop its health checks and DNS refresh, close its
        idle connections; requests in flight finish on it, then its connections close."""
        self.closed = True
        if self._dns_task is not None:
            self._dns_task.cancel()
            self._dns_task = None
        for server in self.servers:
            task = self._checkers.pop(server, None)
            if task is not None:
                task.cancel()
            self.sweeper.discard(server)
            server.pool.retire()

    def close(self) -> None:
        self.closed = True
        if self._dns_task is not None:
            self._dns_task.cancel()
            self._dns_task = None
        for server in self.servers:
            self._drop(server)

    def stats(self) -> dict[str, object]:
        """The group's state for /status and metrics: policy and each server's numbers."""
        return {"name": self.name, "balance": self.config.balance,
                "available": len(self.available),
                "servers": [server.stats() for server in self.servers]}
