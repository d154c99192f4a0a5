"""Retries on another server: a server killed under load costs the clients nothing when
`retries: 1`, while a request that may not be replayed is never sent twice."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import pytest

from tests.upstream.harness import backends, drive, get, proxy

pytestmark = pytest.mark.timeout(60)


def test_zero_failed_gets_while_one_of_two_servers_is_killed(run) -> None:
    async def scenario() -> None:
        async with backends("a", "b") as (a, b), proxy([a.url, b.url], retries=1) as p:
            a.delay = b.delay = 0.003  # so that requests are in flight on a when it dies

            async def kill_a_later() -> None:
                while a.hits + b.hits < 60:
                    await asyncio.sleep(0.005)
                await a.kill()

            killer = asyncio.ensure_future(kill_a_later())
            responses = await drive(p.port, 200, concurrency=4)
            await killer
            failed = [r for r in responses if r.status != 200]
            assert not failed, f"{len(failed)} of 200 failed: {failed[:3]}"
            assert a.hits >= 20 and b.hits >= 100

    run(scenario())


async def _start_origin() -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "veloxy", "origin", "--listen", "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
        if not line:
            raise AssertionError("origin exited before listening")
        found = re.search(r"veloxy origin listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found.group(1))


@pytest.mark.process
def test_zero_failed_gets_while_a_real_origin_process_is_killed_with_sigkill(run) -> None:
    async def scenario() -> None:
        (one, port_one), (two, port_two) = await asyncio.gather(_start_origin(),
                                                                _start_origin())
        try:
            urls = [f"http://127.0.0.1:{port_one}", f"http://127.0.0.1:{port_two}"]
            async with proxy(urls, retries=1) as p:
                done = 0

                async def kill_later() -> None:
                    while done < 50:
                        await asyncio.sleep(0.005)
                    one.send_signal(signal.SIGKILL)

                killer = asyncio.ensure_future(kill_later())

                def count(i: int) -> dict[str, str]:
                    nonlocal done
                    done = i
                    return {}

                responses = await drive(p.port, 200, concurrency=4, path="/?delay=2ms",
                                        headers=count)
                await killer
                failed = [r for r in responses if r.status != 200]
                assert not failed, f"{len(failed)} of 200 failed: {failed[:3]}"
                assert await asyncio.wait_for(one.wait(), 5) == -signal.SIGKILL
        finally:
            for proc in (one, two):
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()

    run(scenario())


def test_get_reset_on_a_fresh_connection_is_retried_on_the_other_server(run) -> None:
    async def scenario() -> None:
        async with backends("a", "b") as (a, b), proxy([a.url, b.url], retries=1) as p:
            a.reset = True  # a reads each request and closes without a word
            responses = [await get(p.port, f"/get/{i}") for i in range(4)]
            assert all(r.status == 200 and r.backend == "b" for r in responses)
            assert a.resets >= 1 and b.hits == 4

    run(scenario())


def test_a_retry_never_goes_back_to_a_server_that_failed_this_request(run) -> None:
    """a is down; b closes each reused connection as a request arrives (the keep-alive
    race). A request that failed on a and then met the race on b must be tried on b again,
    on a fresh connection, not sent back to a."""

    async def scenario() -> None:
        async with backends("a", "b") as (a, b), proxy(
                [a.url, b.url], retries=1, passive_health=None) as p:
            await a.kill()
            b.drop_reused = True
            responses = [await get(p.port, f"/{i}") for i in range(10)]
            assert [r.status for r in responses] == [200] * 10, responses
            assert b.resets >= 4, "the race was not exercised"

    run(scenario())


def test_retries_zero_shows_the_failure(run) -> None:
    async def scenario() -> None:
        async with backends("a") as (a,), proxy([a.url], retries=0) as p:
            a.reset = True
            assert (await get(p.port)).status == 502

    run(scenario())


def test_post_reset_is_never_replayed(run) -> None:
    async def scenario() -> None:
        async with backends("a", "b") as (a, b), proxy([a.url, b.url], retries=2) as p:
            a.reset = True
            response = await get(p.port, "/pay", method="POST", body=b"100 EUR")
            assert response.status == 502
            await asyncio.sleep(0.05)  # a replay would land by now
            assert a.targets == ["/pay"] and b.hits == 0, "the POST was sent twice"

    run(scenario())


def test_connect_failure_is_retried_for_any_method(run) -> None:
    async def scenario() -> None:
        async with backends("a", "b") as (a, b), proxy([a.url, b.url], retries=1) as p:
            await a.kill()  # refused: nothing of the request was sent, so a POST is safe
            for method in ("POST", "PUT", "POST", "PUT"):
                response = await get(p.port, "/form", method=method, body=b"x" * 1000)
                assert (response.status, response.backend) == (200, "b"), response
            assert [h["content-length"] for h in b.headers] == ["1000"] * 4

    run(scenario())


