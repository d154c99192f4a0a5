"""A coarse clock and deadline sweeper shared by every connection of a worker.

Per-request timers (`loop.call_later` and cancel for each header, response and idle timeout)
cost more than the rest of a small request's bookkeeping. Instead each connection keeps a
`deadline` number read from a cached clock (nginx caches its time the same way), and one
periodic callback per loop visits the registered connections and calls `on_deadline` on those
whose deadline has passed. Timeouts fire up to `resolution` seconds late, which is fine for
timeouts measured in seconds.

Members are added one by one (`add`, `discard`: upstream connections, HTTP/2 streams), or a
whole set at once (`watch`): the client connections of a listener group are visited straight
from their ConnectionRegistry's set, so that a new connection costs one set insertion, not two
and two Python calls (docs/BENCHMARKS.md, "Short connections and 1000 connections (issue 12,
the close path)").

The same tick measures the loop's lag for free: it is due at a known time, and how late it
runs is how long the loop was busy with something else (`lag`, read by load shedding,
proxy/admission.py).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Any, Protocol

NEVER = math.inf


class HasDeadline(Protocol):
    deadline: float

    def on_deadline(self, now: float) -> None: ...


class DeadlineSweeper:
    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = 0.1) -> None:
        self._loop = loop
        self._resolution = resolution
        self._members: set[HasDeadline] = set()
        #: Sets of members kept by their owners (`watch`); a member may also be in _members.
        self._groups: list[set[Any]] = []
        self._handle: asyncio.TimerHandle | None = None
        #: A tick is scheduled (a plain attribute: every new client connection reads it).
        self.ticking = False
        #: The loop's time as of the last tick: what connections add their timeouts to.
        self.now = loop.time()
        #: How late the last tick ran, seconds (0 while no tick is scheduled), and when the
        #: next one is due.
        self.lag = 0.0
        self._due = 0.0

    def add(self, member: HasDeadline) -> None:
        self._members.add(member)
        if self._handle is None:
            self._start()

    def watch(self, group: set[Any]) -> None:
        """Visit every member of `group` (a set its owner keeps, of HasDeadline) from now
        on, and tick if not ticking. Its owner calls this again whenever `ticking` is false
        as it adds a member: the sweeper stops ticking when it has nothing left to visit."""
        if not any(known is group for known in self._groups):
            self._groups.append(group)
        if self._handle is None:
            self._start()

    def _start(self) -> None:
        self.now = self._loop.time()
        self.lag = 0.0
        self._due = self.now + self._resolution
        self._handle = self._loop.call_at(self._due, self._tick)
        self.ticking = True

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
        members = self._members
        expired = [m for m in members if m.deadline <= now]
        for group in self._groups:
            # (an HTTP/2 connection is in its registry's set and in _members: visited once)
            expired += [m for m in group if m.deadline <= now and m not in members]
        for member in expired:
            member.on_deadline(now)
        if members or any(self._groups):
            self._due = now + self._resolution
            self._handle = self._loop.call_at(self._due, self._tick)
        else:
            self._handle = None
            self.ticking = False
            self.lag = 0.0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.ticking = False
        self._members.clear()
        self._groups.clear()


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
