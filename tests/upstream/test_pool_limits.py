"""Per-server pool limits: max_connections with a bounded FIFO queue that turns into 503 when
full or too slow, idle and lifetime limits, and the stats kept for the metrics."""

from __future__ import annotations

import asyncio

import pytest

from tests.upstream.harness import backends, eventually, get, proxy

pytestmark = pytest.mark.timeout(60)


def test_requests_beyond_max_connections_wait_their_turn(run) -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), proxy(
                [a.url], pool={"max_connections": 2, "max_idle": 2}) as p:
            a.delay = 0.1
            responses = await asyncio.gather(*(get(p.port, f"/{i}") for i in range(6)))
            assert all(r.status == 200 for r in responses)
            assert a.peak_connections <= 2 and a.peak_in_flight == 2
            stats = p.group().servers[0].pool.snapshot()
            assert stats["waited"] >= 4 and stats["open"] <= 2, stats
            assert stats["created"] + stats["reused"] >= 6, stats

    run(scenario())


def test_the_queue_is_first_in_first_out(run) -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), proxy(
                [a.url], pool={"max_connections": 1, "max_idle": 1}) as p:
            a.delay = 0.05
            tasks = []
            for i in range(5):
                tasks.append(asyncio.ensure_future(get(p.port, f"/{i}")))
                await asyncio.sleep(0.01)  # arrive in this order, all while /0 is served
            assert all(r.status == 200 for r in await asyncio.gather(*tasks))
            assert a.targets == ["/0", "/1", "/2", "/3", "/4"]

    run(scenario())


def test_a_full_queue_answers_503_at_once(run) -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), proxy([a.url], pool={
                "max_connections": 1, "max_idle": 1, "max_waiting": 1,
                "wait_timeout": "5s"}) as p:
            a.delay = 0.3
            first = asyncio.ensure_future(get(p.port, "/first"))
            await eventually(lambda: a.in_flight == 1)
            second = asyncio.ensure_future(get(p.port, "/second"))
            await eventually(lambda: p.group().servers[0].pool.waiting == 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            third = await get(p.port, "/third")
            assert third.status == 503 and loop.time() - started < 0.2
            assert b"already waiting" in third.body, third.body
            assert (await first).status == 200 and (await second).status == 200
            stats = p.group().servers[0].pool.snapshot()
            assert stats["queue_full"] == 1 and stats["waiting"] == 0, stats
            assert not p.group().servers[0].failures, "our own limit is not the server's fault"

    run(scenario())


@pytest.mark.slow
def test_a_wait_longer_than_wait_timeout_answers_503(run) -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), proxy([a.url], pool={
                "max_connections": 1, "max_idle": 1, "wait_timeout": "150ms"}) as p:
            a.delay = 0.6
            first = asyncio.ensure_future(get(p.port, "/slow"))
            await eventually(lambda: a.in_flight == 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            late = await get(p.port, "/late")
            waited = loop.time() - started
            assert late.status == 503 and 0.1 <= waited < 0.5, (late, waited)
            assert (await first).status == 200
            stats = p.group().servers[0].pool.snapshot()
            assert stats["wait_timeouts"] == 1 and stats["waiting"] == 0, stats

    run(scenario())


def test_idle_timeout_and_max_lifetime_close_pooled_connections(run) -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), proxy([a.url], pool={
                "idle_timeout": "200ms", "max_lifetime": "10s"}) as p:
            pool = p.group().servers[0].pool
            assert (await get(p.port)).status == 200
            assert pool.snapshot()["idle"] == 1
            await eventually(lambda: pool.open == 0 and not a.connections, timeout=2)
        async with backends("a") as (a,), proxy([a.url], pool={"max_lifetime": "200ms"}) as p:
            pool = p.group().servers[0].pool
            assert (await get(p.port)).status == 200
            assert (await get(p.port)).status == 200
            assert a.accepted == 1  # reused while young
            await eventually(lambda: pool.open == 0, timeout=2)  # retired while idle
            assert (await get(p.port)).status == 200
            assert a.accepted == 2 and pool.snapshot()["created"] == 2

    run(scenario())


def test_an_idle_connection_the_server_closed_is_dropped_before_reuse(run) -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), proxy([a.url], retries=0) as p:
            pool = p.group().servers[0].pool
            assert (await get(p.port)).status == 200
            for conn in list(a.connections):  # the server closes its idle keep-alive side
                assert conn.transport is not None
                conn.transport.close()
            await eventually(lambda: pool.snapshot()["idle"] == 0)
            assert (await get(p.port)).status == 200  # on a new connection, no error
            assert a.accepted == 2

    run(scenario())
