"""`--workers 2`: two worker processes serve one port; a killed worker is replaced."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.backends import ok_script
from tests.support.client import Client, get
from veloxy.lab.procs import established_inodes, socket_inodes, tree_pids

pytestmark = [pytest.mark.timeout(40), pytest.mark.process]


@pytest.fixture(autouse=True, params=["fork", "spawn"])
def workers_mode(request: pytest.FixtureRequest, start_proxy) -> str:
    """Every test here in both worker modes (config workers_mode, workers.py)."""
    start_proxy.workers_mode = request.param
    return request.param


def wait_children(proxy, n: int, timeout: float = 5.0,
                  exclude: set[int] = frozenset()) -> list[int]:
    deadline = time.monotonic() + timeout
    kids: list[int] = []
    while time.monotonic() < deadline:
        kids = proxy.children()
        if len(kids) == n and not (set(kids) & exclude):
            return kids
        time.sleep(0.05)
    raise AssertionError(f"expected {n} worker processes (excluding {sorted(exclude)}), "
                         f"found children {kids}\n{proxy.describe()}")


def serving_pids(proxy, port: int) -> dict[int, int]:
    """pid -> number of established downstream connections it holds."""
    conns = established_inodes(local_port=port)
    out = {}
    for pid in tree_pids(proxy.pid):
        n = len(socket_inodes([pid]) & conns)
        if n:
            out[pid] = n
    return out


def requests_succeed(port: int, n: int) -> list:
    failures = []
    for i in range(n):
        try:
            resp = get(port, f"/w/{i}", timeout=5)
            if resp.status != 200 or resp.body != b"worker":
                failures.append(resp)
        except Exception as exc:  # collected and reported
            failures.append(exc)
    return failures


def test_two_workers_serve_the_same_port(start_proxy, make_backend):
    backend = make_backend(ok_script(b"worker"))
    proxy = start_proxy(backend, workers=2)
    wait_children(proxy, 2)
    failures = requests_succeed(proxy.port, 200)
    assert not failures, f"{len(failures)} of 200 requests failed: {failures[:3]}"
    # Hold 40 keep-alive connections open and see which processes own them.
    clients = [Client(proxy.port, timeout=5) for _ in range(40)]
    try:
        for c in clients:
            assert c.request("GET", "/hold").status == 200
        owners = serving_pids(proxy, proxy.port)
    finally:
        for c in clients:
            c.close()
    assert len(owners) >= 2, f"only {owners} (pid: connections) served 40 connections"


def test_killed_worker_is_restarted(start_proxy, make_backend):
    backend = make_backend(ok_script(b"worker"))
    proxy = start_proxy(backend, workers=2)
    before = wait_children(proxy, 2)
    assert not requests_succeed(proxy.port, 10)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    after = wait_children(proxy, 2, timeout=10, exclude={victim})
    assert victim not in after and len(set(after) - set(before)) == 1, (before, after)
    time.sleep(0.2)  # let the new worker start listening
    failures = requests_succeed(proxy.port, 50)
    assert not failures, f"{len(failures)} of 50 requests failed after the restart: {failures[:3]}"
