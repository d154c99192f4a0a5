"""Fixtures for the load generator's suite: real servers on 127.0.0.1, the bench in-process
(fast: `run_bench`, workers forked) or as the `veloxy bench` command (exit codes, output).

Servers: scripted backends from tests/support (thread per connection, every request recorded,
so a test can count what really arrived) and the built-in origin as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.backends import BackendStarter, Conn, Request, response
from tests.support.proc import SRC, VeloxyProcess, child_env, running_origin

BENCH_TIMEOUT = 30.0


@pytest.fixture
def backends() -> Iterator[BackendStarter]:
    """`backends.serving(respond)`: a scripted backend answering with `respond`."""
    starter = BackendStarter()
    yield starter
    starter.close()


def ok(req: Request, conn: Conn) -> bytes | None:
    """200 "ok"; honours Connection: close like a real server."""
    if (req.head.get("connection") or b"").lower() == b"close":
        conn.send(response(200, b"ok", [("Connection", "close")]))
        conn.close()
        return None
    return response(200, b"ok")


@pytest.fixture(scope="session")
def origin() -> Iterator[VeloxyProcess]:
    """`veloxy origin` on 127.0.0.1, port 0, for the whole session."""
    with running_origin(None) as proc:
        yield proc


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = BENCH_TIMEOUT, **kw: Any) -> subprocess.CompletedProcess[str]:
    """`python -m veloxy ARGS` with the repo's src first on the path."""
    return subprocess.run([sys.executable, "-m", "veloxy", *args], capture_output=True,
                          text=True, timeout=timeout, env=child_env(None, env),
                          cwd=str(SRC.parent), **kw)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture(autouse=True)
def _no_stray_workers() -> Iterator[None]:
    """Every worker process a test started has exited when it ends."""
    yield
    import multiprocessing

    alive = [p for p in multiprocessing.active_children() if p.name.startswith("veloxy-bench")]
    assert not alive, f"bench workers left running: {alive}"

