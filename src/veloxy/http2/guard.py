"""Budgets against the well-known HTTP/2 denial-of-service patterns.

Each kind of frame that costs the server work but gives the client nothing it could not get
otherwise has a token bucket: `burst` tokens, refilled at `rate` per second (by the coarse
clock of the sweeper, so no timer and no clock read per frame). A client that empties one
is sent GOAWAY(ENHANCE_YOUR_CALM) and disconnected; other connections are untouched.

- Rapid reset (CVE-2023-44487): streams the client opens then cancels with RST_STREAM. The
  concurrency limit does not bound them (a reset stream no longer counts), and each one may
  have started an upstream request.
- PING and SETTINGS floods (CVE-2019-9512, -9515): each must be acknowledged, and a client
  that does not read makes the acknowledgements pile up.
- PRIORITY floods (CVE-2019-9513): cheap to send, ignored by us, still parsed.

CONTINUATION floods (CVE-2024-27316 and kin) are bounded in the h2 package itself (at most
64 CONTINUATION frames per header block, each at most SETTINGS_MAX_FRAME_SIZE, and the
decoded list by SETTINGS_MAX_HEADER_LIST_SIZE); a violation is a protocol error, answered
with GOAWAY and a close.
"""

from __future__ import annotations

#: (burst, refill per second) by kind. A browser cancels a few streams on a navigation and
#: pings rarely; these leave room for that many times over.
BUDGETS: dict[str, tuple[float, float]] = {
    "reset": (200.0, 100.0),
    "ping": (50.0, 10.0),
    "settings": (50.0, 10.0),
    "priority": (500.0, 100.0),
}


class FloodGuard:
    __slots__ = ("_at", "_tokens")

    def __init__(self, now: float) -> None:
        self._tokens = {kind: burst for kind, (burst, _) in BUDGETS.items()}
        self._at = dict.fromkeys(BUDGETS, now)

    def spend(self, kind: str, now: float) -> bool:
        """One frame of `kind` arrived at `now`; False when the budget is exhausted."""
        burst, rate = BUDGETS[kind]
        tokens = self._tokens[kind] + (now - self._at[kind]) * rate
        self._at[kind] = now
        tokens = burst if tokens > burst else tokens
        tokens -= 1.0
        self._tokens[kind] = tokens
        return tokens >= 0.0
