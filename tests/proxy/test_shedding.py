"""Load shedding (`limits.shed`, issue 14): while the event loop lags or an upstream group's
wait queue is long, new requests get 503 with Retry-After at once, counted by reason.

In-process (tests/upstream/harness.py: ProxyApp on net.server, exactly what `veloxy serve`
runs, on the test's loop, real sockets on 127.0.0.1), because the lag is made the way a
real one happens, by a blocking call on the proxy's own loop; on both event loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.support.loops import LOOPS, run_on
from tests.upstream.harness import Client, backends, group_config, proxy
from veloxy.observe.metrics import render

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a coroutine on a fresh loop of each kind (tests/support/loops.py)."""
    return lambda coro: run_on(request.param, coro)


def _config(backend: Any, shed: dict, **group: Any) -> dict:
    return {"routes": [{"upstream": "app"}],
            "upstreams": {"app": group_config([backend], **group)},
            "limits": {"shutdown_timeout": "1s", "shed": shed}}


def test_a_stalled_loop_sheds_until_it_catches_up(run: Runner) -> None:
    async def main() -> None:
        async with backends("a") as (backend,), \
                proxy(config=_config(backend, {"loop_lag": "150ms"})) as p:
            client = Client(p.port)
            assert (await client.request("/warm")).status == 200
            await asyncio.sleep(0.25)  # the sweeper's ticks, on time
            assert (await client.request("/before")).status == 200
            time.sleep(0.35)  # a callback that holds the loop (a real block, same process)
            await asyncio.sleep(0.01)  # the tick that was due runs now, 0.3 s late
            shed = [await client.request(f"/during/{i}") for i in range(3)]
            assert [r.status for r in shed] == [503, 503, 503], shed
            assert all(r.headers["retry-after"] == "1" for r in shed)
            assert b"overloaded" in shed[0].body
            await asyncio.sleep(0.3)  # ticks on time again: shedding stops
            assert (await client.request("/after")).status == 200
            await client.close()
            assert backend.targets == ["/warm", "/before", "/after"]  # nothing shed went up
            text = render(p.app.metrics.snapshot())
            assert 'veloxy_requests_refused_total{route="/",reason="loop_lag"} 3' in text
            assert 'http_requests_total{route="/",method="GET",code="503"} 3' in text

    run(main())


@pytest.mark.slow  # waits for three 0.6 s answers in turn
def test_a_long_wait_queue_sheds_new_requests_at_once(run: Runner) -> None:
    """One connection to a server that takes 0.6 s per answer, and shedding from 2 waiting:
    the first request takes the connection, two queue for it, the next two get 503 at once
    and the queued ones are served in turn."""

    async def main() -> None:
        async with backends("slow") as (backend,):
            # 0.6 s: well above a loaded machine's stalls (with 0.2 s the first answer once
            # came back before the fourth request arrived, during a full run at load 8)
            backend.delay = 0.6
            config = _config(backend, {"queue": 2},
                             pool={"max_connections": 1, "max_waiting": 100})
            async with proxy(config=config) as p:
                async def one(i: int):
                    await asyncio.sleep(0.02 * i)  # arrive in order, a loop turn apart
                    client = Client(p.port)
                    started = time.monotonic()
                    try:
                        resp = await client.request(f"/{i}")
                    finally:
                        await client.close()
                    return resp, time.monotonic() - started

                results = await asyncio.gather(*(one(i) for i in range(5)))
                assert [r.status for r, _ in results] == [200, 200, 200, 503, 503], results
                for resp, took in results[3:]:
                    # at once: well before the first answer (0.6 s), let alone a queued one
                    assert resp.headers["retry-after"] == "1" and took < 0.4, results
                    assert b"waiting for upstream group 'app'" in resp.body
                assert backend.hits == 3
                text = render(p.app.metrics.snapshot())
                assert 'veloxy_requests_refused_total{route="/",reason="queue"} 2' in text

    run(main())
