"""Fixtures for the observability suite: the proxy suite's (both loops, scripted backends,
strict teardown), plus the admin listener's port and scrapes parsed by prometheus_client."""

from __future__ import annotations

import json
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.conftest import (  # noqa: F401  (fixtures, found by name)
    make_backend,
    module_stack,
    origin,
    proxy_for,
    start_proxy,
    veloxy_loop,
)
from tests.support.client import Client, get
from tests.support.proc import VeloxyProcess

_ADMIN_RE = re.compile(r"veloxy admin listening on \S+:(\d+)\s*$")


def admin_port(proxy: VeloxyProcess, timeout: float = 5.0) -> int:
    """The admin listener's port, from its `veloxy admin listening on` line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(proxy.lines):
            m = _ADMIN_RE.search(line)
            if m:
                return int(m.group(1))
        time.sleep(0.02)
    raise AssertionError("no 'veloxy admin listening on' line\n" + proxy.describe())


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """GET /metrics, parsed by prometheus_client's parser: {(name, labels): value}."""
    resp = get(port, "/metrics", timeout=5)
    assert resp.status == 200, resp
    assert resp.header("content-type").startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter not yet incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def status(port: int) -> dict:
    resp = get(port, "/status", timeout=5)
    assert resp.status == 200, resp
    assert resp.header("content-type") == "application/json"
    return json.loads(resp.body)


def post_reload(port: int, timeout: float = 15.0) -> tuple[int, dict]:
    with Client(port, timeout=timeout) as c:
        resp = c.request("POST", "/reload", body=b"")
    return resp.status, json.loads(resp.body)


@pytest.fixture
def proxy_with_admin(start_proxy):  # noqa: F811  (the fixture imported above)
    """`proxy_with_admin(config_dict, workers=None)` -> (proxy, admin port)."""

    def start(config: dict, workers: int | None = None):
        proxy = start_proxy(config={**config, "admin": "127.0.0.1:0"}, workers=workers)
        return proxy, admin_port(proxy)

    return start
