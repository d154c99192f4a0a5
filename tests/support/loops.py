"""The event loops the suite runs on, and the runner of the in-process tests.

`LOOPS`: VELOXY_TEST_LOOPS (comma-separated), default "asyncio,uvloop": the values of
VELOXY_LOOP the tests are parametrized over (tests/proxy adds "asyncio+python", the pure
Python parsers, for its processes).

`run(coroutine, timeout=30)`, the fixture of the in-process suites (tests/upstream, tests/net,
tests/tuning): runs the coroutine on a fresh loop of the parametrized kind, made by
veloxy.net.loop as a serving process makes it (with VELOXY_LOOP set while it runs, so code
that asks which loop it is on gets the same answer), and fails on any exception the loop
reported that nobody handled, as uvloop's own test base does. Signal handlers the code under
test installed (serve() installs its own) are put back afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from veloxy.net.loop import new_event_loop

LOOPS = [name for name in os.environ.get("VELOXY_TEST_LOOPS", "asyncio,uvloop").split(",")
         if name]

Runner = Callable[..., Any]


def run_on(loop: str, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """Run `coro` within `timeout` on a fresh event loop of kind `loop` (see the module)."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    chosen = os.environ.get("VELOXY_LOOP")
    os.environ["VELOXY_LOOP"] = loop
    problems: list[dict[str, Any]] = []
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.get_loop().set_exception_handler(lambda _loop, ctx: problems.append(ctx))
            result = runner.run(asyncio.wait_for(coro, timeout))
    finally:
        if chosen is None:
            del os.environ["VELOXY_LOOP"]
        else:
            os.environ["VELOXY_LOOP"] = chosen
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert not problems, f"unhandled loop exceptions: {problems}"
    return result


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Runner:
    """`run(coroutine, timeout=30)`: run it on a fresh loop of the parametrized kind."""

    def runner(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return run_on(request.param, coro, timeout)

    return runner
