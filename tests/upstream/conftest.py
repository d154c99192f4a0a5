"""Every test of the upstream suite runs on both event loops through `run`.

`run(coroutine)` runs it on a fresh loop of the parametrized kind (VELOXY_TEST_LOOPS, default
"asyncio,uvloop") and fails on any exception the loop reports but nobody handled, as
uvloop's own test base does. The helpers live in tests/upstream/harness.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

LOOPS = [name for name in os.environ.get("VELOXY_TEST_LOOPS", "asyncio,uvloop").split(",")
         if name]


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


Runner = Callable[..., Any]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Runner:
    """`run(coroutine, timeout=30)`: run it on a fresh loop of the parametrized kind."""

    def runner(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        problems: list[dict[str, Any]] = []
        with asyncio.Runner(loop_factory=_loop_factory(request.param)) as r:
            r.get_loop().set_exception_handler(lambda _loop, ctx: problems.append(ctx))
            result = r.run(asyncio.wait_for(coro, timeout))
        assert not problems, f"unhandled loop exceptions: {problems}"
        return result

    return runner
