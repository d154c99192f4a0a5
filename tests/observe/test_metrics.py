"""GET /metrics: exposition text the official parser accepts, with exact counts.

Every count is checked as a delta between two scrapes around a known number of requests,
so a counter that counts twice, misses a path, or sees one worker only, fails.
"""

from __future__ import annotations

import resource
import time

import pytest

from tests.observe.conftest import admin_port, scrape, status, value
from tests.support.backends import ok_script, response, serve
from tests.support.client import Client, get, refusing_port
from tests.support.config import prefix_routes, proxy_config
from veloxy.net.accept import default_max_connections

pytestmark = [pytest.mark.timeout(40), pytest.mark.process]


def test_counts_summed_over_two_workers(proxy_with_admin, make_backend):
    backend = make_backend(ok_script(b"hello"))
    config = proxy_config(backend, routes=prefix_routes({"/api/": "default"}))
    proxy, admin = proxy_with_admin(config, workers=2)
    before = scrape(admin)
    n_ok, n_404 = 40, 7
    for i in range(n_ok):  # a new connection each: SO_REUSEPORT spreads them over both
        resp = get(proxy.port, f"/api/{i}")
        assert resp.status == 200 and resp.body == b"hello"
    for i in range(n_404):
        assert get(proxy.port, f"/other/{i}").status == 404
    after = scrape(admin)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "veloxy_workers") == 2
    route = {"route": "/api/", "method": "GET"}
    assert delta("http_requests_total", **route, code="200") == n_ok
    assert delta("http_requests_total", route="", method="GET", code="404") == n_404
    assert delta("http_request_duration_seconds_count", route="/api/") == n_ok
    assert delta("http_request_duration_seconds_bucket", route="/api/", le="+Inf") == n_ok
    assert delta("http_request_duration_seconds_bucket", route="/api/", le="10.0") == n_ok
    assert 0 < delta("http_request_duration_seconds_sum", route="/api/") < n_ok * 5
    server = {"upstream": "default", "server": f"127.0.0.1:{backend.port}"}
    assert delta("veloxy_upstream_requests_total", **server, code="200") == n_ok
    assert delta("veloxy_upstream_response_seconds_count", **server) == n_ok
    assert delta("veloxy_downstream_connections_accepted_total") == n_ok + n_404
    assert value(after, "veloxy_upstream_healthy", **server) == 1
    created = value(after, "veloxy_upstream_pool_connections_created_total", **server)
    reused = value(after, "veloxy_upstream_pool_connections_reused_total", **server)
    assert created + reused == n_ok  # every upstream request took a new or a pooled one
    assert 1 <= created <= 2  # one per worker, sequential requests
    # limits.max_connections left out: each worker's cap follows `ulimit -n` (inherited)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert value(after, "veloxy_downstream_connections_max") == 2 * default_max_connections(
        nofile)
    assert value(after, "veloxy_downstream_connection_limit_reached_total") == 0
    assert value(after, "veloxy_downstream_accept_backoffs_total") == 0
    assert value(after, "process_open_fds") > 0
    assert value(after, "process_resident_memory_bytes") > 1_000_000
    # The scrape that lands on the other worker sees the same totals.
    for _ in range(4):
        again = scrape(admin)
        assert value(again, "http_requests_total", **route, code="200") == \
            value(after, "http_requests_total", **route, code="200")
    info = status(admin)
    assert info["workers"]["configured"] == 2 and info["workers"]["answering"] == 2
    assert len({w["pid"] for w in info["workers"]["list"]}) == 2


@pytest.fixture(scope="module")
def one_worker(module_stack):
    """One proxy (one worker) per loop for the tests below, each on groups of its own:
    "solo" (/solo/), "default" (a refusing port and a good server, catch-all) and
    "failing" (/err/, answers 503). Returns (proxy, admin port, backends, dead port)."""
    backends, proxies = module_stack
    solo = backends(ok_script(b"x" * 100), name="solo")
    good = backends(ok_script(), name="good")
    failing = backends(serve(lambda req, conn: response(503, b"busy")), name="failing")
    dead = refusing_port()  # kept bound (never listening) until the module ends
    dead_port = dead.getsockname()[1]
    config = proxy_config(
        {"solo": solo, "default": [f"http://127.0.0.1:{dead_port}", good.url],
         "failing": failing},
        routes=prefix_routes({"/solo/": "solo", "/err/": "failing"}, default="default"),
        limits={"max_body_bytes": 1000})
    proxy = proxies(config={**config, "admin": "127.0.0.1:0"})
    try:
        yield proxy, admin_port(proxy), {"solo": solo, "good": good, "failing": failing}, \
            dead_port
    finally:
        dead.close()


def wait_no_connections(admin: int) -> dict:
    deadline = time.monotonic() + 3
    while True:
        samples = scrape(admin)
        if value(samples, "veloxy_downstream_connections_open") == 0:
            return samples
        assert time.monotonic() < deadline, "client connections still open"
        time.sleep(0.02)


def test_connections_bytes_and_pool_on_one_worker(one_worker):
    proxy, admin, backends, _ = one_worker
    before = wait_no_connections(admin)
    sent = received = 0
    with Client(proxy.port) as c:
        for i in range(5):
            request = f"GET /solo/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            c.send(request)
            resp = c.read_response()
            assert resp.status == 200 and resp.body == b"x" * 100
            sent += len(request)
            received += len(resp.raw_head) + len(resp.body)
        during = scrape(admin)
    assert value(during, "veloxy_downstream_connections_open") == 1
    after = wait_no_connections(admin)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("veloxy_downstream_received_bytes_total") == sent
    assert delta("veloxy_downstream_sent_bytes_total") == received
    assert delta("veloxy_downstream_connections_accepted_total") == 1
    server = {"upstream": "solo", "server": f"127.0.0.1:{backends['solo'].port}"}
    assert delta("veloxy_upstream_pool_connections_created_total", **server) == 1
    assert delta("veloxy_upstream_pool_connections_reused_total", **server) == 4
    assert value(after, "veloxy_upstream_pool_open_connections", **server) == 1
    assert value(after, "veloxy_upstream_pool_idle_connections", **server) == 1
    assert value(after, "veloxy_upstream_pool_in_use_connections", **server) == 0
    assert value(after, "veloxy_upstream_pool_waiting_requests", **server) == 0


BAD_REQUESTS = [
    (b"GARBAGE\r\n\r\n", "400", "bad_request"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", "414", "uri_too_long"),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", "431",
     "headers_too_large"),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n", "413",
     "body_too_large"),
]


def test_bad_requests_by_reason(one_worker):
    proxy, admin, backends, _ = one_worker
    for request_bytes, code, reason in BAD_REQUESTS:
        before = scrape(admin)
        with Client(proxy.port) as c:
            c.send(request_bytes)
            assert c.read_response().status == int(code)
        after = scrape(admin)
        labels = {"code": code, "reason": reason}
        assert value(after, "veloxy_bad_requests_total", **labels) \
            - value(before, "veloxy_bad_requests_total", **labels) == 1, reason
        assert value(after, "http_requests_total", route="/", method="POST", code="413") == 0
    assert not any(b.requests_for("/") for b in backends.values())  # none went upstream


def test_upstream_failures_retries_and_statuses(one_worker):
    proxy, admin, backends, dead_port = one_worker
    before = scrape(admin)
    for i in range(4):
        assert get(proxy.port, f"/r/{i}").status == 200
    for _ in range(3):
        assert get(proxy.port, "/err/").status == 503
    after = scrape(admin)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    dead_server = {"upstream": "default", "server": f"127.0.0.1:{dead_port}"}
    failures = delta("veloxy_upstream_connect_failures_total", **dead_server)
    retries = delta("veloxy_upstream_retries_total", upstream="default")
    assert failures >= 1 and failures == retries  # each failed connect was retried once
    good = {"upstream": "default", "server": f"127.0.0.1:{backends['good'].port}"}
    assert delta("veloxy_upstream_requests_total", **good, code="200") == 4
    assert delta("http_requests_total", route="/", method="GET", code="200") == 4
    server = {"upstream": "failing", "server": f"127.0.0.1:{backends['failing'].port}"}
    assert delta("veloxy_upstream_requests_total", **server, code="503") == 3
    assert delta("http_requests_total", route="/err/", method="GET", code="503") == 3
