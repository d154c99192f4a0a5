"""HTTP/2 client features beyond plain request and response: 1xx answers relayed (103
Early Hints, 100 Continue), the write-stall timeout for a client that never opens its
window, and WebSocket over HTTP/2 (RFC 8441 extended CONNECT) to HTTP/1.1 upstreams.
Real backends on 127.0.0.1, the h2 package as the client on real sockets."""

from __future__ import annotations

import time

import h2.events
import pytest

from tests.support.backends import Conn, ScriptedBackend, continue_script
from tests.support.tls import h2_connect, start_tls_proxy
from tests.tls.conftest import base_config, tls_listener

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]


def _early_hints(conn: Conn) -> None:
    """103 Early Hints, a pause, then the final answer, for every request."""
    while conn.read_request() is not None:
        conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        time.sleep(0.05)
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal")


@pytest.fixture(scope="module")
def stack(pki, origin, veloxy_loop, tmp_path_factory):
    backends = {"hints": ScriptedBackend(_early_hints, name="hints"),
                "continue": ScriptedBackend(continue_script(), name="continue")}
    config = base_config(f"http://127.0.0.1:{origin.port}",
                         [tls_listener(pki), {"address": "127.0.0.1:0", "h2c": True}])
    config["routes"] = [{"match": {"path_prefix": f"/{name}/"}, "upstream": name}
                        for name in backends] + [{"upstream": "default"}]
    for name, backend in backends.items():
        config["upstreams"][name] = {"servers": [backend.url], "retries": 0}
    proxy = start_tls_proxy(config, tmp_path_factory.mktemp("h2features"), veloxy_loop, 2, [])
    proxy.backends = backends
    yield proxy
    try:
        proxy.stop()
    finally:
        for backend in backends.values():
            backend.close()


def tls_port(proxy) -> int:
    return proxy.listeners[0][1]


def _stream_events(client, sid: int) -> list:
    return [e for e in client.events if getattr(e, "stream_id", None) == sid]


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "h2c"])
def test_103_early_hints_reach_the_client_before_the_final_response(stack, pki, tls):
    client = h2_connect(tls_port(stack) if tls else stack.listeners[1][1], pki if tls else None)
    try:
        sid = client.request("/hints/page")
        client.wait([sid])
        events = _stream_events(client, sid)
        kinds = [type(e) for e in events]
        assert h2.events.InformationalResponseReceived in kinds, kinds
        hints = events[kinds.index(h2.events.InformationalResponseReceived)]
        assert (b":status", b"103") in hints.headers
        assert (b"link", b"</s.css>; rel=preload") in hints.headers
        assert kinds.index(h2.events.InformationalResponseReceived) < kinds.index(
            h2.events.ResponseReceived)
        final = client.responses[sid]
        assert final["status"] == 200 and bytes(final["body"]) == b"final"
        assert (b"x-final", b"yes") in final["headers"]
        again = client.request("/hints/again")  # the connection and the stream state go on
        client.wait([again])
        assert client.responses[again]["status"] == 200
    finally:
        client.close()


def test_100_continue_lets_an_http2_client_send_its_body(stack, pki):
    client = h2_connect(tls_port(stack), pki)
    try:
        sid = client.request("/continue/upload", method="POST", end=False,
                             headers=[("expect", "100-continue"), ("content-length", "4")])
        deadline = time.monotonic() + 5
        while not any(isinstance(e, h2.events.InformationalResponseReceived)
                      for e in _stream_events(client, sid)):
            assert time.monotonic() < deadline, "no 100 Continue"
            client.read_once()
        assert client.responses[sid]["status"] is None  # only the 100 so far
        info = next(e for e in _stream_events(client, sid)
                    if isinstance(e, h2.events.InformationalResponseReceived))
        assert (b":status", b"100") in info.headers
        client.conn.send_data(sid, b"body", end_stream=True)
        client.flush()
        client.wait([sid])
        assert client.responses[sid]["status"] == 200
        assert bytes(client.responses[sid]["body"]) == b"body"
    finally:
        client.close()
