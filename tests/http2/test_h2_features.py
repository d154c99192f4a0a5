"""HTTP/2 client features beyond plain request and response: 1xx answers relayed (103
Early Hints, 100 Continue), the write-stall timeout for a client that never opens its
window, and WebSocket over HTTP/2 (RFC 8441 extended CONNECT) to HTTP/1.1 upstreams.
Real backends on 127.0.0.1, the h2 package as the client on real sockets."""

from __future__ import annotations

import base64
import socket
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from tests.observe.conftest import admin_port, scrape, status, value
from tests.support.backends import (
    Conn,
    ScriptedBackend,
    continue_script,
    streaming_download_script,
    upgrade_script,
)
from tests.support.tls import h2_connect, start_tls_proxy
from tests.tls.conftest import base_config, tls_listener

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]

SEND_TIMEOUT = 0.5


def _early_hints(conn: Conn) -> None:
    """103 Early Hints, a pause, then the final answer, for every request."""
    while conn.read_request() is not None:
        conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        time.sleep(0.05)
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal")


@pytest.fixture(scope="module")
def stack(pki, origin, veloxy_loop, tmp_path_factory):
    backends = {"hints": ScriptedBackend(_early_hints, name="hints"),
                "continue": ScriptedBackend(continue_script(), name="continue"),
                "download": ScriptedBackend(streaming_download_script(64 << 20),
                                            name="download"),
                "ws": ScriptedBackend(upgrade_script(b"hello-from-backend\n"), name="ws")}
    config = base_config(f"http://127.0.0.1:{origin.port}",
                         [tls_listener(pki), {"address": "127.0.0.1:0", "h2c": True}],
                         admin="127.0.0.1:0", http2={"send_timeout": f"{SEND_TIMEOUT}s"})
    config["routes"] = [{"match": {"path_prefix": f"/{name}/"}, "upstream": name}
                        for name in backends] + [{"upstream": "default"}]
    for name, backend in backends.items():
        # least_conn: the server's in-flight count shows in /status
        config["upstreams"][name] = {"servers": [backend.url], "retries": 0,
                                     "balance": "least_conn"}
    proxy = start_tls_proxy(config, tmp_path_factory.mktemp("h2features"), veloxy_loop, 2, [])
    proxy.backends = backends
    proxy.admin = admin_port(proxy)
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


def _stingy_client(port: int, stream_window: int
                   ) -> tuple[socket.socket, h2.connection.H2Connection]:
    """An h2c client that announces `stream_window` and never sends WINDOW_UPDATE."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding=None))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window})
    sock.sendall(conn.data_to_send())
    return sock, conn


def _get(sock, conn, path: str) -> int:
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(b":method", b"GET"), (b":path", path.encode()),
                            (b":scheme", b"http"), (b":authority", b"test.local")],
                      end_stream=True)
    sock.sendall(conn.data_to_send())
    return sid


def _events_until(sock, conn, done, limit: float) -> tuple[list, float]:
    """Read (acknowledging nothing) until done(events) or the connection ends; the events
    and the time it took."""
    events: list = []
    started = time.monotonic()
    while not done(events):
        assert time.monotonic() - started < limit, events[-5:]
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            events.append("closed")
            break
        events.extend(conn.receive_data(data))
        out = conn.data_to_send()  # SETTINGS and PING acknowledgements only
        if out:
            sock.sendall(out)
    return events, time.monotonic() - started


def _released(proxy, group_name: str = "download") -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        group = next(g for g in status(proxy.admin)["upstreams"] if g["name"] == group_name)
        server = group["servers"][0]
        if server["active"] == 0 and server["pool"]["open"] == 0:
            return True
        time.sleep(0.05)
    return False


def test_a_small_response_larger_than_the_window_waits_for_it(stack):
    """A response that fits one frame but not the stream's window (stream.py's one-frame
    send falls back to the window's size): 16 bytes, then the rest once the client opens
    the window, then END_STREAM."""
    sock, conn = _stingy_client(stack.listeners[1][1], stream_window=16)
    try:
        sid = _get(sock, conn, "/?size=100")
        events, _ = _events_until(sock, conn, lambda evs: sum(
            len(e.data) for e in evs if isinstance(e, h2.events.DataReceived)) >= 16, 5)
        assert sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived)) == 16
        assert not any(isinstance(e, h2.events.StreamEnded) for e in events)
        conn.increment_flow_control_window(84, stream_id=sid)
        sock.sendall(conn.data_to_send())
        more, _ = _events_until(
            sock, conn, lambda evs: any(isinstance(e, h2.events.StreamEnded) for e in evs), 5)
        assert sum(len(e.data) for e in more if isinstance(e, h2.events.DataReceived)) == 84
    finally:
        sock.close()


def test_a_stream_whose_window_stays_shut_is_reset_after_send_timeout(stack):
    before = value(scrape(stack.admin), "veloxy_http2_send_timeouts_total")
    sock, conn = _stingy_client(stack.listeners[1][1], stream_window=16)
    try:
        sid = _get(sock, conn, "/download/big")
        events, took = _events_until(
            sock, conn, lambda evs: any(isinstance(e, h2.events.StreamReset) for e in evs), 10)
        reset = next(e for e in events if isinstance(e, h2.events.StreamReset))
        assert reset.stream_id == sid and reset.error_code == h2.errors.ErrorCodes.CANCEL
        body = sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived))
        assert body == 16  # what the window allowed, then nothing
        assert SEND_TIMEOUT * 0.8 <= took < SEND_TIMEOUT + 3
        assert _released(stack), "the upstream connection was not let go"
        # the connection itself goes on
        other = _get(sock, conn, "/?size=3")
        events, _ = _events_until(
            sock, conn, lambda evs: any(isinstance(e, h2.events.StreamEnded) for e in evs), 5)
        assert any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == other
                   for e in events)
    finally:
        sock.close()
    assert value(scrape(stack.admin), "veloxy_http2_send_timeouts_total") == before + 1


def test_a_connection_whose_window_stays_shut_is_closed_after_send_timeout(stack):
    sock, conn = _stingy_client(stack.listeners[1][1], stream_window=1 << 20)
    try:
        _get(sock, conn, "/download/big")  # fills the 64 KiB connection window, then waits
        events, took = _events_until(sock, conn, lambda evs: "closed" in evs, 10)
        goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway and goaway[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        body = sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived))
        assert body == 65535
        assert SEND_TIMEOUT * 0.8 <= took < SEND_TIMEOUT + 3
        assert _released(stack), "the upstream connection was not let go"
    finally:
        sock.close()


def _open_websocket(client, path: str = "/ws/chat", protocol: str = "websocket") -> int:
    """An extended CONNECT (RFC 8441 §4) on a new stream, left open."""
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [
        (b":method", b"CONNECT"), (b":protocol", protocol.encode()), (b":scheme", b"https"),
        (b":path", path.encode()), (b":authority", b"test.local"),
        (b"sec-websocket-version", b"13"), (b"origin", b"https://test.local")])
    client.responses[sid] = {"status": None, "headers": [], "body": bytearray(),
                             "ended": False, "reset": None}
    client.flush()
    return sid


def _read_until(client, check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        client.read_once()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "h2c"])
def test_websocket_over_http2_to_an_http11_upstream(stack, pki, tls):
    client = h2_connect(tls_port(stack) if tls else stack.listeners[1][1], pki if tls else None)
    backend = stack.backends["ws"]
    before = scrape(stack.admin)
    try:
        _read_until(client, lambda: client.conn.remote_settings.enable_connect_protocol == 1)
        sid = _open_websocket(client)
        r = client.responses[sid]
        _read_until(client, lambda: r["status"] is not None and len(r["body"]) >= 19)
        assert r["status"] == 200 and r["reset"] is None and not r["ended"], r
        names = [name for name, _ in r["headers"]]
        assert b"sec-websocket-accept" not in names and b"upgrade" not in names
        assert bytes(r["body"]) == b"hello-from-backend\n"  # sent with the 101
        # metrics (and the access log, from the same logging phase) count the status the
        # client saw: 200, not the upstream's 101 (the method is the handshake's, GET)
        after = scrape(stack.admin)
        for code, added in (("200", 1), ("101", 0)):
            assert value(after, "http_requests_total", route="/ws/", method="GET",
                         code=code) == value(before, "http_requests_total", route="/ws/",
                                             method="GET", code=code) + added, code
        # the handshake upstream is RFC 6455's
        head = backend.find("/ws/chat").head
        assert head.start_line == b"GET /ws/chat HTTP/1.1"
        assert head.get("upgrade") == b"websocket" and "upgrade" in head.tokens("connection")
        assert len(base64.b64decode(head.get("sec-websocket-key"))) == 16
        assert head.get("sec-websocket-version") == b"13"
        # both ways under flow control: more than a stream window (256 KiB) each way
        del r["body"][:]
        payload = b"z" * 300_000
        client._send_body(sid, payload, end=False)
        _read_until(client, lambda: len(bytes(r["body"]).replace(b"echo:", b"")) >= len(payload),
                    timeout=15)
        assert bytes(r["body"]).replace(b"echo:", b"") == payload
        # END_STREAM is the client's half-close; the backend's answer to it comes back, then
        # its own EOF as END_STREAM
        del r["body"][:]
        client.conn.end_stream(sid)
        client.flush()
        _read_until(client, lambda: r["ended"] or r["reset"] is not None)
        assert bytes(r["body"]) == b"bye\n" and r["reset"] is None
        # the connection goes on
        again = client.request("/?size=4")
        client.wait([again])
        assert client.responses[again]["status"] == 200
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["websocket", "connect-udp"])
def test_extended_connect_refusals(stack, pki, protocol):
    client = h2_connect(tls_port(stack), pki)
    try:
        _read_until(client, lambda: client.conn.remote_settings.enable_connect_protocol == 1)
        # connect-udp is not relayed; a websocket to a plain HTTP server that answers 200
        # is not a WebSocket either: a 2xx would tell the client it is open
        sid = _open_websocket(client, path="/?size=2", protocol=protocol)
        r = client.responses[sid]
        _read_until(client, lambda: r["ended"] or r["reset"] is not None)
        assert r["status"] == (502 if protocol == "websocket" else 501), r
    finally:
        client.close()


def test_a_websocket_stream_reset_by_the_client_closes_its_upstream_connection(stack, pki):
    client = h2_connect(tls_port(stack), pki)
    try:
        _read_until(client, lambda: client.conn.remote_settings.enable_connect_protocol == 1)
        sid = _open_websocket(client, path="/ws/reset")
        r = client.responses[sid]
        _read_until(client, lambda: r["status"] is not None and len(r["body"]) >= 19)
        assert r["status"] == 200
        client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        client.flush()
        assert _released(stack, "ws"), "the WebSocket's upstream connection was kept"
        again = client.request("/?size=4")
        client.wait([again])
        assert client.responses[again]["status"] == 200
    finally:
        client.close()


def test_a_client_that_does_not_read_the_socket_is_cut_off_after_send_timeout(stack):
    before = value(scrape(stack.admin), "veloxy_http2_send_timeouts_total")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", stack.listeners[1][1]))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding=None))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    conn.increment_flow_control_window(2**31 - 1 - 65535)  # windows wide open...
    sock.sendall(conn.data_to_send())
    try:
        _get(sock, conn, "/download/big")  # 64 MiB
        time.sleep(SEND_TIMEOUT + 1.0)  # ...but the socket is not read
        assert _released(stack), "the upstream connection was not let go"
        received = 0
        try:
            while piece := sock.recv(1 << 20):
                received += len(piece)
        except ConnectionResetError:
            pass
        assert received < 64 << 20  # cut off, not served
    finally:
        sock.close()
    assert value(scrape(stack.admin), "veloxy_http2_send_timeouts_total") == before + 1


def test_a_slow_reader_with_wide_windows_gets_the_whole_download(stack, pki):
    """A fast upstream and a client that opens its windows wide but reads slowly: the
    socket's backpressure holds the response in the stream's queue (and pauses the
    upstream) instead of bursting megabytes into the write buffer, which got the client
    disconnected as one that does not read."""
    client = h2_connect(tls_port(stack), pki)
    client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    client.conn.increment_flow_control_window(2**31 - 1 - (16 << 20) - 65535)
    client.flush()
    try:
        sid = client.request("/?size=12m")
        deadline = time.monotonic() + 30
        while not client.responses[sid]["ended"] and client.responses[sid]["reset"] is None:
            assert time.monotonic() < deadline
            client.read_once()
            time.sleep(0.002)  # a slow reader
        r = client.responses[sid]
        assert r["status"] == 200 and r["reset"] is None and len(r["body"]) == 12 << 20
    finally:
        client.close()


def test_shutdown_cuts_websocket_streams_at_once(pki, veloxy_loop, tmp_path, proxies):
    backend = ScriptedBackend(upgrade_script(b"hello-from-backend\n"), name="ws")
    try:
        config = base_config(backend.url, [{"address": "127.0.0.1:0", "h2c": True}])
        proxy = start_tls_proxy(config, tmp_path, veloxy_loop, 1, proxies)
        client = h2_connect(proxy.port, None)
        try:
            _read_until(client, lambda: client.conn.remote_settings.enable_connect_protocol == 1)
            sid = _open_websocket(client)
            r = client.responses[sid]
            _read_until(client, lambda: r["status"] is not None and len(r["body"]) >= 19)
            assert r["status"] == 200
            started = time.monotonic()
            proxy.send_signal()  # SIGTERM; limits.shutdown_timeout is 3s
            try:
                _read_until(client, lambda: client.goaway() is not None)
            except ConnectionError:
                pass
            assert r["reset"] == h2.errors.ErrorCodes.CANCEL, r  # (it came before the GOAWAY)
            assert client.goaway() is not None
            assert proxy.wait(5) == 0
            assert time.monotonic() - started < 2.5  # not held until shutdown_timeout
        finally:
            client.close()
    finally:
        backend.close()
