"""Event loop selection: uvloop where it is installed, the stdlib loop elsewhere.

`VELOXY_LOOP=asyncio` forces the stdlib loop (the path Windows takes, where it is the
Proactor/IOCP loop), `VELOXY_LOOP=uvloop` insists on uvloop. The test suite runs on both.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    """Which loop `run` will use: "uvloop" or "asyncio"."""
    wanted = os.environ.get("VELOXY_LOOP", "auto").strip().lower()
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise RuntimeError("VELOXY_LOOP=uvloop but uvloop is not installed") from None
        return "asyncio"
    return "uvloop"


def new_event_loop() -> asyncio.AbstractEventLoop:
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if sys.platform == "win32":
        return asyncio.ProactorEventLoop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the chosen loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
