"""HTTP/2 toward clients: ALPN h2 on TLS, h2c with prior knowledge, streams forwarded as
HTTP/1.1 through the same pools, flow control, RST_STREAM, GOAWAY and the flood guard.
Clients: the h2 package over real sockets, and nghttp2's h2load where installed."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import h2.errors
import h2.events
import hyperframe.frame
import pytest

from tests.support.backends import ScriptedBackend
from tests.support.client import get
from tests.support.tls import h2_connect, start_tls_proxy
from tests.tls.conftest import base_config, tls_listener

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]


def _truncating(conn) -> None:
    """Answers with a head and half the body it announced, then closes."""
    if conn.read_request() is not None:
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50000)
        conn.close()


def _raw_head_back(conn) -> None:
    """Answers each request with the head it received, raw, as the body."""
    while not conn.closed:
        req = conn.read_request()
        if req is None:
            return
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(req.raw_head)
                  + req.raw_head)


@pytest.fixture(scope="module")
def stack(pki, origin, veloxy_loop, tmp_path_factory):
    broken = ScriptedBackend(_truncating, name="truncating")
    heads = ScriptedBackend(_raw_head_back, name="heads")
    config = base_config(f"http://127.0.0.1:{origin.port}",
                         [tls_listener(pki), {"address": "127.0.0.1:0", "h2c": True}])
    config["upstreams"]["broken"] = {"servers": [broken.url], "retries": 0}
    config["upstreams"]["heads"] = {"servers": [heads.url]}
    config["limits"]["max_body_bytes"] = "2m"
    config["routes"] = [{"match": {"path_prefix": "/broken/"}, "upstream": "broken"},
                        {"match": {"path_prefix": "/heads/"}, "upstream": "heads"},
                        {"upstream": "default"}]
    started = []
    proxy = start_tls_proxy(config, tmp_path_factory.mktemp("h2"), veloxy_loop, 2, started)
    yield proxy
    try:
        proxy.stop()
    finally:
        broken.close()
        heads.close()


def tls_port(proxy) -> int:
    return proxy.listeners[0][1]


def h2c_port(proxy) -> int:
    return proxy.listeners[1][1]


def test_100_concurrent_streams_on_one_connection(stack, pki):
    client = h2_connect(tls_port(stack), pki)
    try:
        sids = [client.request(f"/?size={1000 + i}") for i in range(100)]
        client.wait(sids, timeout=15)
        for i, sid in enumerate(sids):
            r = client.responses[sid]
            assert r["status"] == 200 and r["reset"] is None, r
            assert len(r["body"]) == 1000 + i
        remote = client.conn.remote_settings
        assert remote.max_concurrent_streams == 100
    finally:
        client.close()


def test_cookie_fields_reach_the_upstream_joined(stack, pki):
    """RFC 9113 §8.2.3: several cookie fields become one "; "-joined field upstream
    (http2/headers.py joins them; h2's own inbound normalisation is off)."""
    client = h2_connect(tls_port(stack), pki)
    try:
        sid = client.request("/heads/", headers=[("cookie", "a=1"), ("x-other", "v"),
                                                 ("cookie", "b=2")])
        client.wait([sid], timeout=15)
        head = bytes(client.responses[sid]["body"]).lower()
        assert head.count(b"cookie") == 1, head
        assert b"\r\ncookie: a=1; b=2\r\n" in head, head
        assert b"\r\nx-other: v\r\n" in head, head
    finally:
        client.close()


def test_request_and_response_bodies_under_flow_control(stack, pki):
    body = bytes(range(256)) * 4096  # 1 MiB: several stream windows each way
    client = h2_connect(tls_port(stack), pki)
    try:
        sid = client.request("/echo", method="POST", body=body)
        client.wait([sid], timeout=15)
        assert client.responses[sid]["status"] == 200
        assert bytes(client.responses[sid]["body"]) == body
        big = client.request("/?size=3000000")  # larger than our 1 MiB stream window
        client.wait([big], timeout=15)
        assert len(client.responses[big]["body"]) == 3000000
    finally:
        client.close()


def test_request_body_over_the_limit_gets_413(stack, pki):
    client = h2_connect(tls_port(stack), pki)
    try:
        sid = client.request("/echo", method="POST", headers=[("content-type", "x/y")],
                             end=False)
        try:
            client._send_body(sid, b"z" * (3 << 20))  # 3 MiB, the limit is 2 MiB
        except Exception:
            pass  # the stream may be reset while we still send
        client.wait([sid], timeout=10)
        r = client.responses[sid]
        assert r["status"] == 413, r
        assert r["reset"] in (None, h2.errors.ErrorCodes.NO_ERROR)
        again = client.request("/?size=3")  # the connection goes on
        client.wait([again])
        assert client.responses[again]["status"] == 200
    finally:
        client.close()


def test_h2c_prior_knowledge_and_http11_on_the_same_listener(stack):
    client = h2_connect(h2c_port(stack), None)
    try:
        sid = client.request("/?size=10")
        client.wait([sid])
        assert client.responses[sid]["status"] == 200
        assert len(client.responses[sid]["body"]) == 10
    finally:
        client.close()
    resp = get(h2c_port(stack), "/?size=7")
    assert resp.status == 200 and len(resp.body) == 7


def test_upstream_failure_resets_only_its_stream(stack, pki):
    client = h2_connect(tls_port(stack), pki)
    try:
        bad = client.request("/broken/x")
        good = client.request("/?size=100")
        client.wait([bad, good], timeout=10)
        assert client.responses[bad]["status"] == 200  # the head had gone out
        assert client.responses[bad]["reset"] == h2.errors.ErrorCodes.INTERNAL_ERROR
        assert len(client.responses[good]["body"]) == 100
        again = client.request("/?size=5")  # the connection is still fine
        client.wait([again])
        assert client.responses[again]["status"] == 200
    finally:
        client.close()


def _read_until_closed(client, limit: float = 10.0) -> bool:
    """True once the server closed (EOF, reset, or GOAWAY seen); False on a timeout."""
    client.sock.settimeout(limit)
    try:
        while True:
            client.read_once()
    except TimeoutError:
        return client.goaway() is not None
    except (ConnectionError, OSError):
        return True
    except Exception:  # h2 refuses frames after the server's GOAWAY: the connection is done
        return client.goaway() is not None


def _healthy_neighbour(stack, pki) -> None:
    other = h2_connect(tls_port(stack), pki)
    try:
        sid = other.request("/?size=20")
        other.wait([sid])
        assert other.responses[sid]["status"] == 200
    finally:
        other.close()


def _attack(stack, pki, send) -> h2.events.ConnectionTerminated | None:
    """Run `send(client)` on one connection while another keeps working; the attacked
    connection must be closed (its GOAWAY may be lost to the reset of a close with unread
    data, hence None is allowed as the result)."""
    bystander = h2_connect(tls_port(stack), pki)
    attacker = h2_connect(tls_port(stack), pki)
    try:
        try:
            send(attacker)
        except (ConnectionError, OSError):
            pass  # closed under our feet: what we want
        assert _read_until_closed(attacker), "the attacking connection was not closed"
        sid = bystander.request("/?size=30")
        bystander.wait([sid])
        assert bystander.responses[sid]["status"] == 200
        return attacker.goaway()
    finally:
        attacker.close()
        bystander.close()


def test_rapid_reset_is_cut_off(stack, pki):
    def rapid_reset(client) -> None:
        for _ in range(1000):
            sid = client.request("/?delay=1s")
            client.conn.reset_stream(sid)
            client.flush()

    goaway = _attack(stack, pki, rapid_reset)
    assert goaway is None or goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    _healthy_neighbour(stack, pki)


def test_continuation_flood_is_cut_off(stack, pki):
    def flood(client) -> None:
        sid = client.conn.get_next_available_stream_id()
        block = client.conn.encoder.encode([(b":method", b"GET"), (b":path", b"/"),
                                            (b":scheme", b"https"),
                                            (b":authority", b"test.local")])
        client.flush()
        headers = hyperframe.frame.HeadersFrame(sid, data=block)  # no END_HEADERS
        frames = [headers.serialize()]
        for i in range(2000):
            cont = hyperframe.frame.ContinuationFrame(sid, data=b"x-pad-%d: " % i + b"a" * 200)
            frames.append(cont.serialize())
        client.sock.sendall(b"".join(frames))

    goaway = _attack(stack, pki, flood)
    # h2 refuses the 65th CONTINUATION frame of one block; either way, the connection ends
    assert goaway is None or goaway.error_code != h2.errors.ErrorCodes.NO_ERROR
    _healthy_neighbour(stack, pki)


def test_ping_and_settings_floods_are_cut_off(stack, pki):
    def pings(client) -> None:
        for i in range(500):
            client.conn.ping(b"%08d" % i)
        client.flush()

    def settings(client) -> None:
        for i in range(500):
            client.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: i})
        client.flush()

    for send in (pings, settings):
        goaway = _attack(stack, pki, send)
        assert goaway is None or goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing")
def test_h2load_100_streams_on_one_connection(stack, pki):
    out = subprocess.run(
        ["h2load", "-n", "1000", "-c", "1", "-m", "100", "-t", "1",
         f"https://127.0.0.1:{tls_port(stack)}/?size=100"],
        capture_output=True, text=True, timeout=30)
    assert "1000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout + out.stderr
    assert "status codes: 1000 2xx" in out.stdout
    assert "Application protocol: h2" in out.stdout


def test_goaway_on_graceful_shutdown(pki, origin, veloxy_loop, tmp_path, proxies):
    proxy = start_tls_proxy(base_config(f"http://127.0.0.1:{origin.port}",
                                        [tls_listener(pki)]),
                            tmp_path, veloxy_loop, 1, proxies)
    idle = h2_connect(proxy.port, pki)
    curl = None
    if shutil.which("curl"):
        # A request in flight when the shutdown starts is answered in full (the h2 package's
        # own client gives up on a connection once it reads GOAWAY, so curl is the client).
        curl = subprocess.Popen(
            ["curl", "-sS", "--http2", "--max-time", "10", "--cacert", str(pki.ca_file),
             "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{size_download}",
             f"https://localhost:{proxy.port}/?delay=700ms&size=5000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
    try:
        sid = idle.request("/?size=50")
        idle.wait([sid])
        proxy.send_signal()
        assert _read_until_closed(idle, 5.0)
        goaway = idle.goaway()
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert goaway.last_stream_id == sid
        if curl is not None:
            out, err = curl.communicate(timeout=15)
            assert out == "2 200 5000", err
        assert proxy.wait(5) == 0
    finally:
        idle.close()
        if curl is not None and curl.poll() is None:
            curl.kill()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
