"""gRPC-style forwarding: HTTP/2 clients to an upstream group with `protocol: h2c`, the
response's trailers preserved. The upstream is a small HTTP/2 server on the h2 package,
on a real socket."""

from __future__ import annotations

import socket
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from tests.support.client import get
from tests.support.tls import h2_connect, start_tls_proxy
from tests.tls.conftest import base_config, tls_listener

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]


class H2cBackend:
    """Answers each request with its body echoed and gRPC-like trailers; /reset/ paths are
    reset before any answer. Records the request headers and counts connections."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[dict[bytes, bytes]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        sock.settimeout(0.2)
        heads: dict[int, dict[bytes, bytes]] = {}
        bodies: dict[int, bytes] = {}
        with sock:
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        heads[event.stream_id] = dict(event.headers)
                        bodies[event.stream_id] = b""
                        self.requests.append(dict(event.headers))
                        if heads[event.stream_id][b":path"].startswith(b"/reset/"):
                            conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        sid = event.stream_id
                        if heads[sid][b":path"].startswith(b"/reset/"):
                            continue
                        conn.send_headers(sid, [(b":status", b"200"),
                                                (b"content-type", b"application/grpc")])
                        conn.send_data(sid, b"echo:" + bodies[sid])
                        conn.send_headers(sid, [(b"grpc-status", b"0"),
                                                (b"grpc-message", b"ok")], end_stream=True)
                sock.sendall(conn.data_to_send())

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(2)


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
        assert r["status"] == 502 and b"upstream reset the stream" in bytes(r["body"]), r
    finally:
        client.close()
    resp = get(proxy.listeners[1][1], "/svc/pkg.Echo/Say")
    assert resp.status == 503
    assert b"speaks HTTP/2 (protocol: h2c): only HTTP/2 clients" in resp.body
