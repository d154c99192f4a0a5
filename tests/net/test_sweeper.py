"""The deadline sweeper's watched sets (net/timers.py `watch`): the client connections of a
listener group are visited from their registry's set, not added one by one."""

from __future__ import annotations

import asyncio

from veloxy.net.timers import NEVER, DeadlineSweeper


class Member:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = 0

    def on_deadline(self, now: float) -> None:
        self.fired += 1
        self.deadline = NEVER


def test_a_member_of_a_watched_set_expires_once_even_when_also_added() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        sweeper = DeadlineSweeper(loop, resolution=0.01)
        group: set[Member] = set()
        both, grouped, later = Member(0.0), Member(0.0), Member(loop.time() + 3600)
        group |= {both, grouped, later}
        sweeper.add(both)  # an HTTP/2 connection: in its registry's set and added itself
        sweeper.watch(group)
        sweeper.watch(group)  # again (ticking was false): still one visit per tick
        assert sweeper.ticking
        await asyncio.sleep(0.05)
        assert (both.fired, grouped.fired, later.fired) == (1, 1, 0)
        sweeper.close()

    asyncio.run(run())


def test_the_sweeper_stops_when_its_sets_empty_and_watch_starts_it_again() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        sweeper = DeadlineSweeper(loop, resolution=0.01)
        group: set[Member] = set()
        member = Member(NEVER)
        group.add(member)
        sweeper.watch(group)
        group.discard(member)
        await asyncio.sleep(0.03)
        assert not sweeper.ticking  # nothing left to visit: no tick scheduled
        late = Member(0.0)
        group.add(late)
        sweeper.watch(group)  # what ServerConnection does when it finds ticking false
        assert sweeper.ticking
        await asyncio.sleep(0.03)
        assert late.fired == 1
        sweeper.close()

    asyncio.run(run())
