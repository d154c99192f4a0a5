"""https:// upstreams over HTTP/2 (`protocol: h2`): ALPN h2 to the upstream, with the h2c
groups' pooling (one shared connection per server), health checks, metrics and retries.
Real TLS HTTP/2 backends on 127.0.0.1 (tests/support/h2c_backend.py with a trustme
certificate), one veloxy process with an h2c listener and the admin listener."""

from __future__ import annotations

import ssl
import time

import pytest

from tests.observe.conftest import admin_port, scrape, status, value
from tests.support.h2c_backend import H2cBackend
from tests.support.tls import h2_connect, start_tls_proxy
from tests.tls.conftest import base_config

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]


def _server_context(pki, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert = pki.certs["default"]
    context.load_cert_chain(str(cert.cert), str(cert.key))
    context.set_alpn_protocols(alpn)
    return context


@pytest.fixture(scope="module")
def stack(pki, veloxy_loop, tmp_path_factory):
    h2 = _server_context(pki, ["h2"])
    backends = {"one": H2cBackend("one", tls=h2), "sick": H2cBackend("sick", tls=h2),
                "h1only": H2cBackend("h1only", tls=_server_context(pki, ["http/1.1"]))}
    backends["sick"].healthy = False
    backends["sick"].status = 503
    tls = {"ca": str(pki.ca_file)}
    config = base_config(backends["one"].url, [{"address": "127.0.0.1:0", "h2c": True}],
                         admin="127.0.0.1:0")
    timeouts = {"connect": "2s", "response_header": "10s", "read": "10s"}
    config["upstreams"] = {
        "grpc": {"servers": [backends["one"].url], "protocol": "h2", "tls": tls,
                 "timeouts": timeouts},
        "health": {"servers": [backends["sick"].url, backends["one"].url], "protocol": "h2",
                   "tls": tls, "balance": "round_robin", "timeouts": timeouts,
                   "passive_health": None,
                   "health_check": {"path": "/healthz", "interval": "0.2s",
                                    "timeout": "0.2s", "unhealthy_threshold": 1}},
        "noalpn": {"servers": [backends["h1only"].url], "protocol": "h2", "tls": tls,
                   "retries": 0, "timeouts": timeouts},
        "untrusted": {"servers": [backends["one"].url], "protocol": "h2", "retries": 0,
                      "timeouts": timeouts},  # the system trust store: our CA is not in it
    }
    config["routes"] = [{"match": {"path_prefix": f"/{name}/"}, "upstream": name}
                        for name in config["upstreams"]]
    proxy = start_tls_proxy(config, tmp_path_factory.mktemp("h2-upstream-tls"), veloxy_loop,
                            1, [])
    proxy.admin = admin_port(proxy)
    proxy.backends = backends
    try:
        yield proxy
        proxy.stop()
    finally:
        if not proxy.stopped:
            proxy.kill()
        for backend in backends.values():
            backend.close()


def _call(client, path: str) -> int:
    return client.request(path, method="POST", body=b"m",
                          headers=[("content-type", "application/grpc"), ("te", "trailers")])


def _group(proxy, name: str) -> dict:
    return next(g for g in status(proxy.admin)["upstreams"] if g["name"] == name)


def test_streams_share_one_tls_http2_connection(stack):
    one = stack.backends["one"]
    before = value(scrape(stack.admin), "http_requests_total", route="/grpc/", method="POST",
                   code="200")
    client = h2_connect(stack.listeners[0][1], None)
    try:
        sids = [_call(client, f"/grpc/call/{i}") for i in range(20)]
        client.wait(sids, timeout=15)
        for sid in sids:
            r = client.responses[sid]
            assert r["status"] == 200 and bytes(r["body"]) == b"echo:m", r
        trailers = [e for e in client.events if type(e).__name__ == "TrailersReceived"]
        assert len(trailers) == 20 and (b"grpc-status", b"0") in trailers[0].headers
    finally:
        client.close()
    heads = [h for h in one.requests if h[b":path"].startswith(b"/grpc/call/")]
    assert len(heads) == 20 and {h[b":scheme"] for h in heads} == {b"https"}
    assert one.alpn and set(one.alpn) == {"h2"}
    pool = _group(stack, "grpc")["servers"][0]["pool"]
    assert pool["created"] == 1 and pool["open"] == 1  # one connection carried them all
    assert value(scrape(stack.admin), "http_requests_total", route="/grpc/", method="POST",
                 code="200") == before + 20


def test_health_checks_probe_over_tls_http2(stack):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        servers = _group(stack, "health")["servers"]
        if not servers[0]["healthy"] and servers[1]["healthy"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the sick server was not taken out: {servers}")
    client = h2_connect(stack.listeners[0][1], None)
    try:
        sids = [_call(client, f"/health/call/{i}") for i in range(6)]
        client.wait(sids)
        assert all(client.responses[s]["status"] == 200 for s in sids)
    finally:
        client.close()
    assert stack.backends["sick"].answered(b"/health/call/") == 0


@pytest.mark.parametrize(("group", "reason"), [
    ("noalpn", "did not choose HTTP/2 by ALPN"),
    ("untrusted", "unable to get local issuer certificate"),
])
def test_a_server_that_cannot_speak_verified_h2_is_a_502(stack, group, reason):
    server = stack.backends["h1only" if group == "noalpn" else "one"].url.split("//")[1]

    def failures() -> float:
        return value(scrape(stack.admin), "veloxy_upstream_connect_failures_total",
                     upstream=group, server=server)

    before = failures()
    client = h2_connect(stack.listeners[0][1], None)
    try:
        sid = _call(client, f"/{group}/call")
        client.wait([sid])
        r = client.responses[sid]
        assert r["status"] == 502, r
        assert reason in bytes(r["body"]).decode(), bytes(r["body"])
    finally:
        client.close()
    assert failures() == before + 1


def test_http11_clients_are_told_the_group_speaks_http2(stack):
    from tests.support.client import get

    resp = get(stack.listeners[0][1], "/grpc/x")
    assert resp.status == 503 and b"protocol: h2)" in resp.body, resp.body


def test_websocket_over_http2_to_an_http2_group_is_501(stack):
    client = h2_connect(stack.listeners[0][1], None)
    try:
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [
            (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
            (b":path", b"/grpc/ws"), (b":authority", b"test.local"),
            (b"sec-websocket-version", b"13")])
        client.responses[sid] = {"status": None, "headers": [], "body": bytearray(),
                                 "ended": False, "reset": None}
        client.flush()
        client.wait([sid])
        assert client.responses[sid]["status"] == 501
        assert b"toward an HTTP/2 upstream group" in bytes(client.responses[sid]["body"])
    finally:
        client.close()
    assert stack.backends["one"].answered(b"/grpc/ws") == 0
