"""Load-balancing selectors: given the servers of a group, pick the next one.

Only smooth weighted round robin is served so far; the config already validates the other
policy names (least_conn, random, p2c_ewma, hash, adaptive) and they fall back to it with a
warning at start-up until they are implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar


class Weighted(Protocol):
    weight: int


S = TypeVar("S", bound=Weighted)


class SmoothWeightedRoundRobin(Generic[S]):
    """nginx's smooth weighted round robin (ngx_http_upstream_get_peer).

    Each pick adds every server's weight to its current score, takes the highest, and
    subtracts the total from it. Weights 5,1,1 give a,a,b,a,c,a,a: spread out, never bursts.
    """

    def __init__(self, servers: Sequence[S]) -> None:
        if not servers:
            raise ValueError("a balancer needs at least one server")
        self._servers = list(servers)
        self._weights = [s.weight for s in self._servers]
        self._current = [0] * len(self._servers)
        self._total = sum(self._weights)
        self._single = self._servers[0] if len(self._servers) == 1 else None

    def pick(self, exclude: object = None) -> S:
        """The next server; `exclude` (a server) is skipped when another one exists."""
        if self._single is not None:
            return self._single
        current = self._current
        weights = self._weights
        best = -1
        best_score = 0
        for i, weight in enumerate(weights):
            current[i] += weight
            if (best < 0 or current[i] > best_score) and self._servers[i] is not exclude:
                best, best_score = i, current[i]
        current[best] -= self._total
        return self._servers[best]
