"""Upstream keep-alive pool: reuse, never reuse a connection the backend closed, never
replay a POST silently."""

from __future__ import annotations

import time

import pytest

from tests.support.backends import black_hole_post_script, close_idle_script, ok_script
from tests.support.client import Client, get
from tests.support.config import prefix_routes, proxy_config

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]


@pytest.fixture(scope="module")
def pool(module_stack):
    """One proxy, one backend per test behind its own path prefix (accept counts apart)."""
    make_backend, start_proxy = module_stack
    backends = {
        "pool": make_backend(ok_script(b"pooled"), name="pool"),
        "stale": make_backend(close_idle_script(b"fresh"), name="stale"),
        "post": make_backend(black_hole_post_script(), name="post"),
        "recover": make_backend(black_hole_post_script(), name="recover"),
    }
    proxy = start_proxy(config=proxy_config(
        backends, routes=prefix_routes({f"/{name}/": name for name in backends})))
    return proxy, backends


def test_sequential_requests_reuse_backend_connections(pool):
    proxy, backends = pool
    backend = backends["pool"]
    with Client(proxy.port) as c:
        for i in range(50):
            resp = c.request("GET", f"/pool/one-client/{i}")
            assert resp.status == 200 and resp.body == b"pooled", resp
    after_one = backend.accepted
    assert after_one <= 2, (f"50 sequential requests on one client connection used {after_one} "
                            f"backend connections")
    for n in range(10):
        with Client(proxy.port) as c:
            for i in range(5):
                resp = c.request("GET", f"/pool/many-clients/{n}/{i}")
                assert resp.status == 200 and resp.body == b"pooled", resp
    assert backend.accepted <= 2, (
        f"100 sequential requests over 11 client connections used {backend.accepted} backend "
        f"connections: the upstream pool is not reused across client connections")


def test_idle_connection_closed_by_backend_is_not_reused(pool):
    """The backend closes each connection right after its response, without saying
    'Connection: close'. The next request must not fail on the dead pooled connection."""
    proxy, backends = pool
    backend = backends["stale"]
    failures = []
    with Client(proxy.port) as c:
        for i in range(20):
            try:
                resp = c.request("GET", f"/stale/round/{i}")
                if resp.status != 200 or resp.body != b"fresh":
                    failures.append((i, resp))
            except Exception as exc:  # collect them all, report below
                failures.append((i, exc))
                c.close()
                c = Client(proxy.port)
            time.sleep(0.03)
    assert not failures, f"{len(failures)} of 20 requests failed: {failures[:3]}"
    # Every response ended its connection, so at least 20 were needed (the script worked).
    assert backend.accepted >= 20, backend.accepted


def test_post_is_never_replayed(pool):
    proxy, backends = pool
    backend = backends["post"]
    with Client(proxy.port) as c:
        warm = c.request("GET", "/post/warm")  # leaves a pooled connection behind
        assert warm.status == 200, warm
        resp = c.request("POST", "/post/submit", body=b"pay 100", timeout=10)
    assert resp.status == 502, resp
    time.sleep(0.3)  # a silent replay would land now
    posts = backend.requests_for("/post/submit")
    assert len(posts) == 1, f"the POST reached the backend {len(posts)} times"


def test_pool_recovers_after_a_reset(pool):
    """A backend connection that failed must not poison the pool: after a reset, plain
    requests go through again."""
    proxy, _ = pool
    assert get(proxy.port, "/recover/a").status == 200
    assert get(proxy.port, "/recover/b", method="POST", body=b"x", timeout=10).status == 502
    for i in range(5):
        resp = get(proxy.port, f"/recover/after/{i}")
        assert resp.status == 200, resp
