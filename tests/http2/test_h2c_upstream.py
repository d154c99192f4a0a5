"""gRPC-style forwarding: HTTP/2 clients to an upstream group with `protocol: h2c`, the
response's trailers preserved. The upstream is a small HTTP/2 server on the h2 package,
on a real socket."""

from __future__ import annotations

import h2.events
import pytest

from tests.support.client import get
from tests.support.h2c_backend import H2cBackend
from tests.support.tls import h2_connect, start_tls_proxy
from tests.tls.conftest import base_config, tls_listener

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]


@pytest.fixture(scope="module")
def grpc_stack(pki, veloxy_loop, tmp_path_factory):
    backend = H2cBackend()
    url = f"http://127.0.0.1:{backend.port}"
    config = base_config(url, [tls_listener(pki), {"address": "127.0.0.1:0", "h2c": True}])
    config["upstreams"]["default"]["protocol"] = "h2c"
    config["routes"] = [{"match": {"path_prefix": "/svc/"}, "upstream": "default",
                         "strip_prefix": True}]
    started: list = []
    proxy = start_tls_proxy(config, tmp_path_factory.mktemp("grpc"), veloxy_loop, 2, started)
    try:
        yield proxy, backend
        proxy.stop()
    finally:
        if not proxy.stopped:
            proxy.kill()
        backend.close()


def _trailers(client, sid):
    for event in client.events:
        if isinstance(event, h2.events.TrailersReceived) and event.stream_id == sid:
            return dict(event.headers)
    return None


@pytest.mark.parametrize("tls", [True, False], ids=["h2-tls", "h2c"])
def test_streams_forwarded_with_trailers_on_one_upstream_connection(grpc_stack, pki, tls):
    proxy, backend = grpc_stack
    port = proxy.listeners[0][1] if tls else proxy.listeners[1][1]
    client = h2_connect(port, pki if tls else None)
    try:
        sids = [client.request(f"/svc/pkg.Echo/Say{i}", method="POST",
                               body=b"message %d" % i,
                               headers=[("content-type", "application/grpc"),
                                        ("te", "trailers")])
                for i in range(20)]
        client.wait(sids, timeout=10)
        for i, sid in enumerate(sids):
            r = client.responses[sid]
            assert r["status"] == 200 and r["reset"] is None, r
            assert bytes(r["body"]) == b"echo:message %d" % i
            assert _trailers(client, sid) == {b"grpc-status": b"0", b"grpc-message": b"ok"}
    finally:
        client.close()
    seen = [h for h in backend.requests if h[b":path"].startswith(b"/pkg.Echo/Say")]
    assert len(seen) >= 20
    head = seen[-1]
    assert head[b":method"] == b"POST" and head[b"te"] == b"trailers"
    assert head[b"x-forwarded-proto"] == (b"https" if tls else b"http")
    assert head[b"content-type"] == b"application/grpc"
    assert backend.connections == 1  # every stream on the one upstream connection


def test_upstream_reset_and_http11_clients(grpc_stack, pki):
    proxy, _ = grpc_stack
    client = h2_connect(proxy.listeners[0][1], pki)
    try:
        sid = client.request("/svc/reset/x", method="POST", body=b"x")
        client.wait([sid])
        r = client.responses[sid]
        # CANCEL after the request: it may have been processed, so a POST is not retried
        assert r["status"] == 502 and b"upstream reset the stream (CANCEL)" in bytes(
            r["body"]), r
    finally:
        client.close()
    resp = get(proxy.listeners[1][1], "/svc/pkg.Echo/Say")
    assert resp.status == 503
    assert b"speaks HTTP/2 (protocol: h2c): only HTTP/2 clients" in resp.body
