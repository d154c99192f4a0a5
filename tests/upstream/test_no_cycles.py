"""A closed client connection is freed by reference counting, not left to the cyclic
collector: on short-connection loads the collector's young collections otherwise grow with
the garbage and pause the loop (docs/BENCHMARKS.md, "Issues 12 and 13 at the end of the
day": close-c64's p99 rose 3-4x with tuning.gc.gen0_threshold 50000 before this)."""

from __future__ import annotations

import asyncio
import collections
import gc

from tests.upstream.harness import Client, backends, proxy


def test_short_connections_leave_no_reference_cycles(run) -> None:
    async def scenario() -> collections.Counter[str]:
        async with backends("a") as (a,), proxy([a.url]) as p:
            async def short(count: int) -> None:
                for _ in range(count):
                    client = Client(p.port)
                    response = await client.request("/", headers={"Connection": "close"})
                    assert response.status == 200
                    await client.close()

            await short(10)  # first-use objects (caches, the pool's connection) stay out
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage
            try:
                await short(50)
                await asyncio.sleep(0.1)  # the last connection_lost
                gc.collect()
                return collections.Counter(type(o).__qualname__ for o in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()

    garbage = run(scenario())
    # the test's own client is in the same process: only the proxy's side is counted
    assert garbage["ServerConnection"] == 0 and garbage["RequestParser"] == 0, garbage
