"""Fixtures for the TLS and HTTP/2 suites: certificates made with trustme, the built-in
origin, TLS proxies per event loop (both loops, as in tests/proxy), strict teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.loops import LOOPS
from tests.support.proc import VeloxyProcess, running_origin
from tests.support.tls import Pki, make_pki, stop_all


@pytest.fixture(scope="session", params=LOOPS)
def veloxy_loop(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A CA with a default certificate (localhost), one for b.test and *.w.test (SNI)."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    pki.issue("default", "localhost", "127.0.0.1")
    pki.issue("b", "b.test", "*.w.test")
    return pki


@pytest.fixture(scope="session")
def origin(veloxy_loop: str) -> Iterator[VeloxyProcess]:
    with running_origin(veloxy_loop) as proc:
        yield proc


@pytest.fixture
def proxies() -> Iterator[list[VeloxyProcess]]:
    """Proxies started by one test; strict teardown."""
    started: list[VeloxyProcess] = []
    yield started
    problems = stop_all(started)
    if problems:
        pytest.fail("strict teardown failed:\n" + "\n\n".join(problems), pytrace=False)


def tls_listener(pki: Pki, **extra) -> dict:
    tls = {"cert": str(pki.certs["default"].cert), "key": str(pki.certs["default"].key),
           "certificates": [{"names": ["b.test", "*.w.test"], "cert": str(pki.certs["b"].cert),
                             "key": str(pki.certs["b"].key)}]}
    tls.update(extra)
    return {"address": "127.0.0.1:0", "tls": tls}


def base_config(upstream_url: str, listen: list, **more) -> dict:
    return {
        "listen": listen,
        "limits": {"header_timeout": "5s", "idle_timeout": "10s", "shutdown_timeout": "3s"},
        "routes": [{"upstream": "default"}],
        "upstreams": {"default": {"servers": [upstream_url],
                                  "timeouts": {"connect": "2s", "response_header": "5s",
                                               "read": "5s"}}},
        **more,
    }


__all__ = ["base_config", "tls_listener"]
