"""Fixtures for the black-box proxy suite: both event loops, scripted backends, the proxy
process with strict teardown, and the built-in origin.

Every test that starts a proxy runs three times, through the session-scoped `veloxy_loop`
fixture: on each event loop (VELOXY_LOOP=asyncio and VELOXY_LOOP=uvloop) with the C fast
lane of h1/_fastpath.c, and as "asyncio+python": the stdlib loop with the Python parsers
alone (VELOXY_PURE_PYTHON=1), the path of a machine where the C extension was not built.
Set VELOXY_TEST_LOOPS=asyncio (comma-separated) to run only some of them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import BackendStarter, ScriptedBackend
from tests.support.config import proxy_config, write_config
from tests.support.proc import VeloxyProcess, running_origin

LOOPS = [name for name in os.environ.get("VELOXY_TEST_LOOPS",
                                                   "asyncio,uvloop,asyncio+python").split(",")
         if name]


@pytest.fixture(scope="session", params=LOOPS)
def veloxy_loop(request: pytest.FixtureRequest) -> str:
    """The event loop the proxy (and origin) processes run on: VELOXY_LOOP's value."""
    return request.param


_config_ids = itertools.count()


class ProxyStarter:
    """`start(backend_or_url, ..., config=None, workers=None, args=(), env=None)`.

    Without `config`: `serve --listen 127.0.0.1:0 --upstream URL...`. With `config` (a dict
    from tests.support.config.proxy_config, or YAML text): `serve --config FILE`.
    Returns the process once its `veloxy listening on HOST:PORT` line is printed (10 s).

    Strict teardown (`close`): SIGTERM, then exit code 0 within 5 s, no stray loop exception
    in stderr and no process of the proxy left behind; anything else fails the test.
    """

    def __init__(self, loop: str, tmp_path: Path) -> None:
        self.loop = loop
        self.tmp_path = tmp_path
        self.started: list[VeloxyProcess] = []
        #: --workers-mode with --workers (fork, spawn): tests/proxy/test_workers.py runs in
        #: both; VELOXY_TEST_WORKERS_MODE=spawn runs every multi-worker test spawned.
        self.workers_mode: str | None = os.environ.get("VELOXY_TEST_WORKERS_MODE") or None

    def __call__(self, *upstreams: Any, config: dict | str | None = None,
                 workers: int | None = None, args: list[str] | tuple = (),
                 env: dict[str, str] | None = None, ready_timeout: float = 10.0) -> VeloxyProcess:
        argv = ["serve"]
        if config is not None:
            path = write_config(self.tmp_path / f"veloxy-{next(_config_ids)}.yaml", config)
            argv += ["--config", str(path)]
        else:
            argv += ["--listen", "127.0.0.1:0"]
            for up in upstreams:
                argv += ["--upstream", up if isinstance(up, str) else up.url]
        if workers is not None:
            argv += ["--workers", str(workers)]
            if self.workers_mode is not None:
                argv += ["--workers-mode", self.workers_mode]
        proc = VeloxyProcess(argv + list(args), self.loop, env=env)
        self.started.append(proc)
        return proc.wait_ready(ready_timeout)

    def close(self) -> None:
        problems = []
        for proc in self.started:
            try:
                proc.stop()
            except AssertionError as exc:
                problems.append(str(exc))
        if problems:
            pytest.fail("strict teardown failed:\n" + "\n\n".join(problems), pytrace=False)


@pytest.fixture
def make_backend() -> Iterator[BackendStarter]:
    """Start scripted backends; all are closed at teardown (after the proxy has stopped)."""
    starter = BackendStarter()
    yield starter
    starter.close()


@pytest.fixture
def start_proxy(veloxy_loop: str, tmp_path: Path, make_backend) -> Iterator[ProxyStarter]:
    """Start proxies for one test; strict teardown (see ProxyStarter)."""
    starter = ProxyStarter(veloxy_loop, tmp_path)
    yield starter
    starter.close()


@pytest.fixture(scope="module")
def module_stack(veloxy_loop: str,
                 tmp_path_factory) -> Iterator[tuple[BackendStarter, ProxyStarter]]:
    """(make_backend, start_proxy) shared by a module's tests, per loop: for many small
    checks against one proxy. Strict teardown at the end of the module."""
    backends = BackendStarter()
    proxies = ProxyStarter(veloxy_loop, tmp_path_factory.mktemp("veloxy"))
    try:
        yield backends, proxies
        proxies.close()
    finally:
        for proc in proxies.started:
            if not proc.stopped:
                proc.kill()
        backends.close()


@pytest.fixture
def proxy_for(start_proxy, make_backend) -> Callable[..., tuple[VeloxyProcess, ScriptedBackend]]:
    """`proxy_for(script, **config)`: a backend running `script` and a proxy in front of it.
    With keyword arguments (limits=..., timeouts=...) the proxy gets a config file."""

    def make(script, name: str = "backend", backend_kw: dict | None = None,
             **config_kw: Any) -> tuple[VeloxyProcess, ScriptedBackend]:
        backend = make_backend(script, name=name, **(backend_kw or {}))
        if config_kw:
            proxy = start_proxy(config=proxy_config(backend, **config_kw))
        else:
            proxy = start_proxy(backend)
        return proxy, backend

    return make


@pytest.fixture(scope="module")
def origin(veloxy_loop: str) -> Iterator[VeloxyProcess]:
    """The built-in backend, `veloxy origin --listen 127.0.0.1:0`, on the same loop (one
    per module and loop; it is stateless)."""
    with running_origin(veloxy_loop) as proc:
        yield proc
