"""Active and passive health: servers leave the rotation and come back; a group with no
server left answers 503 at once, with a body that says why."""

from __future__ import annotations

import asyncio

import pytest

from tests.upstream.harness import backends, drive, eventually, get, proxy

pytestmark = pytest.mark.timeout(60)

FAST_CHECKS = {"path": "/healthz", "interval": "50ms", "timeout": "50ms",
               "healthy_threshold": 2, "unhealthy_threshold": 2}


def test_active_check_takes_a_server_out_and_brings_it_back(run) -> None:
    async def scenario() -> None:
        async with backends("a", "b") as (a, b), proxy(
                [a.url, b.url], health_check=FAST_CHECKS, passive_health=None) as p:
            server_a = p.group().servers[0]
            await eventually(lambda: a.health_probes >= 2)
            a.health_status = 503
            await eventually(lambda: not server_a.healthy)
            hits = a.hits
            responses = await drive(p.port, 20)
            assert all(r.status == 200 and r.backend == "b" for r in responses)
            assert a.hits == hits, "an unhealthy server got requests"
            a.health_status = 200
            await eventually(lambda: server_a.healthy)
            responses = await drive(p.port, 20)
            assert {r.backend for r in responses} == {"a", "b"}

    run(scenario())


def test_every_server_down_gives_503_at_once(run) -> None:
    async def scenario() -> None:
        async with backends("a", "b") as (a, b), proxy([a.url, b.url],
                                                       health_check=FAST_CHECKS) as p:
            await a.kill()
            await b.kill()
            await eventually(lambda: not p.group().available)
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await get(p.port)
            elapsed = loop.time() - started
            assert response.status == 503
            assert b"'app'" in response.body and b"health" in response.body, response.body
            assert elapsed < 0.5, f"503 took {elapsed:.3f}s"
            await a.revive()
            await eventually(lambda: bool(p.group().available))
            assert (await get(p.port)).status == 200

    run(scenario())


@pytest.mark.slow
def test_passive_ejection_grows_and_retries_hide_it(run) -> None:
    async def scenario() -> None:
        passive = {"failures": 2, "ejection": "200ms", "max_ejection": "600ms"}
        async with backends("a", "b") as (a, b), proxy(
                [a.url, b.url], retries=1, passive_health=passive) as p:
            server_a = p.group().servers[0]
            sweeper = p.group().sweeper
            await a.kill()  # connects to a are refused from now on
            ejections: list[float] = []
            for _ in range(3):
                while not server_a.ejected:
                    assert (await get(p.port)).status == 200  # retried on b
                ejections.append(server_a.deadline - sweeper.now)
                await eventually(lambda: not server_a.ejected, timeout=2)
            assert [round(e, 1) for e in ejections] == [0.2, 0.4, 0.6], ejections
            await a.revive()
            # On probation: the next request to reach a succeeds and clears its record.
            responses = await drive(p.port, 20)
            assert all(r.status == 200 for r in responses)
            assert a.hits > 0 and server_a.failures == 0 and server_a.ejections == 0

    run(scenario())


def test_the_last_server_is_never_ejected_and_all_failing_gives_503(run) -> None:
    async def scenario() -> None:
        passive = {"failures": 2, "ejection": "5s"}
        async with backends("a", "b") as (a, b), proxy(
                [a.url, b.url], retries=1, passive_health=passive) as p:
            await a.kill()
            await b.kill()
            statuses = [(await get(p.port)).status for _ in range(6)]
            group = p.group()
            assert sum(s.ejected for s in group.servers) == 1, "one must stay in rotation"
            assert group.available and all(s.failures >= 2 for s in group.servers)
            assert statuses[0] == 502 and statuses[-1] == 503, statuses
            response = await get(p.port)
            assert response.status == 503
            assert b"every server of upstream group 'app' is failing" in response.body
            await a.revive()
            await b.revive()  # the one kept in rotation answers again: back to normal
            assert (await get(p.port)).status == 200
            assert not group.all_failing()

    run(scenario())
