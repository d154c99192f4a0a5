"""The runtime form of one upstream group: its servers, their pools, and the selector.

Built once from config.UpstreamGroup; a reload (later) builds a new one and swaps it in,
while requests in flight keep the one they started with.
"""

from __future__ import annotations

import logging

from veloxy.config import UpstreamGroup as GroupConfig
from veloxy.net.timers import DeadlineSweeper
from veloxy.upstream.balance import SmoothWeightedRoundRobin
from veloxy.upstream.pool import ConnectionPool

log = logging.getLogger("veloxy.upstream")


class Server:
    """One upstream server of a group, with its connection pool."""

    __slots__ = ("address", "host_header", "pool", "url", "weight")

    def __init__(self, url: str, host: str, port: int, weight: int, pool: ConnectionPool) -> None:
        self.url = url
        self.weight = weight
        self.pool = pool
        self.address = f"{host}:{port}"
        self.host_header = self.address.encode("ascii")

    def __repr__(self) -> str:
        return f"<Server {self.url} weight={self.weight}>"


class Group:
    __slots__ = ("balancer", "name", "retries", "servers", "timeouts")

    def __init__(self, config: GroupConfig, sweeper: DeadlineSweeper) -> None:
        self.name = config.name
        self.timeouts = config.timeouts
        self.retries = config.retries
        pool = config.pool
        self.servers = [
            Server(
                s.url,
                s.host,
                s.port,
                s.weight,
                ConnectionPool(
                    s.host,
                    s.port,
                    timeouts=config.timeouts,
                    sweeper=sweeper,
                    max_connections=pool.max_connections,
                    max_idle=pool.max_idle,
                    idle_timeout=pool.idle_timeout,
                    max_lifetime=pool.max_lifetime,
                    max_waiting=pool.max_waiting,
                    wait_timeout=pool.wait_timeout,
                ),
            )
            for s in config.servers
        ]
        if config.balance != "round_robin":
            log.warning(
                "upstreams.%s.balance: %s is not implemented yet; using round_robin",
                config.name,
                config.balance,
            )
        self.balancer = SmoothWeightedRoundRobin(self.servers)

    def close(self) -> None:
        for server in self.servers:
            server.pool.close()
