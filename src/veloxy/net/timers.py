"""A coarse clock and deadline sweeper shared by every connection of a worker.

Per-request timers (`loop.call_later` and cancel for each header, response and idle timeout)
cost more than the rest of a small request's bookkeeping. Instead each connection keeps a
`deadline` number read from a cached clock (nginx caches its time the same way), and one
periodic callback per loop visits the registered connections and calls `on_deadline` on those
whose deadline has passed. Timeouts fire up to `resolution` seconds late, which is fine for
timeouts measured in seconds.

The same tick measures the loop's lag for free: it is due at a known time, and how late it
runs is how long the loop was busy with something else (`lag`, read by load shedding,
proxy/admission.py).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Protocol

NEVER = math.inf


class HasDeadline(Protocol):
    deadline: float

    def on_deadline(self, now: float) -> None: ...


class DeadlineSweeper:
    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = 0.1) -> None:
        self._loop = loop
        self._resolution = resolution
        self._members: set[HasDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None
        #: The loop's time as of the last tick: what connections add their timeouts to.
        self.now = loop.time()
        #: How late the last tick ran, seconds (0 while no tick is scheduled), and when the
        #: next one is due.
        self.lag = 0.0
        self._due = 0.0

    def add(self, member: HasDeadline) -> None:
        self._members.add(member)
        if self._handle is None:
            self.now = self._loop.time()
            self.lag = 0.0
            self._due = self.now + self._resolution
            self._handle = self._loop.call_at(self._due, self._tick)

    def discard(self, member: HasDeadline) -> None:
        self._members.discard(member)

    def refresh(self) -> float:
        """Read the loop's clock now (for the rare paths that start a timeout between ticks)."""
        self.now = self._loop.time()
        return self.now

    def _tick(self) -> None:
        now = self.now = self._loop.time()
        late = now - self._due
        self.lag = late if late > 0.0 else 0.0
        expired = [m for m in self._members if m.deadline <= now]
        for member in expired:
            member.on_deadline(now)
        if self._members:
            self._due = now + self._resolution
            self._handle = self._loop.call_at(self._due, self._tick)
        else:
            self._handle = None
            self.lag = 0.0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._members.clear()


# Weak keys: a closed loop (one per test, or per worker restart) takes its sweeper with it.
_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeadlineSweeper] = (
    weakref.WeakKeyDictionary()
)


def sweeper_for(loop: asyncio.AbstractEventLoop) -> DeadlineSweeper:
    """The sweeper of this loop, made on first use."""
    sweeper = _sweepers.get(loop)
    if sweeper is None:
        sweeper = _sweepers[loop] = DeadlineSweeper(loop)
    return sweeper
