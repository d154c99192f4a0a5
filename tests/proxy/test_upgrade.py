"""Upgrade (WebSocket-like) tunnels: headers reach the backend, 101 comes back, then raw
bytes flow both ways until one side closes."""

from __future__ import annotations

import pytest

from tests.support.backends import Conn, upgrade_script
from tests.support.client import Client
from tests.support.config import prefix_routes, proxy_config

pytestmark = [pytest.mark.timeout(30), pytest.mark.process]


def close_after_101_script(conn: Conn) -> None:
    if conn.read_request() is None:
        return
    conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\n\r\nlast-words")
    conn.close()


@pytest.fixture(scope="module")
def tunnels(module_stack):
    """/chat: a 101-then-echo backend; /gone: 101, a few bytes, then close."""
    make_backend, start_proxy = module_stack
    echo = make_backend(upgrade_script(greeting=b"hello-from-backend\n"), name="ws-echo")
    gone = make_backend(close_after_101_script, name="ws-gone")
    proxy = start_proxy(config=proxy_config({"echo": echo, "gone": gone},
                                            routes=prefix_routes({"/gone": "gone"}, "echo")))
    return proxy, echo

UPGRADE_REQUEST = (b"GET /chat HTTP/1.1\r\nHost: test.local\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")


def test_websocket_upgrade_tunnels_bytes_both_ways(tunnels):
    proxy, backend = tunnels
    with Client(proxy.port, timeout=3) as c:
        c.send(UPGRADE_REQUEST)
        resp = c.read_message()
        assert resp.status == 101, resp
        assert resp.header("upgrade") and resp.header("upgrade").lower() == "websocket", resp
        assert "upgrade" in resp.head.tokens("connection"), resp
        assert resp.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", resp
        # Bytes the backend sent together with the 101 head belong to the tunnel.
        greeting = c.read_exact(len(b"hello-from-backend\n"))
        assert greeting == b"hello-from-backend\n"
        for msg in (b"ping-1", b"\x00\x01binary\xff" * 100, b"GET / HTTP/1.1\r\n\r\n"):
            c.send(msg)
            assert c.read_exact(5 + len(msg)) == b"echo:" + msg
        # Half-close from the client reaches the backend, which says bye and closes.
        c.shutdown_write()
        assert c.read_exact(4) == b"bye\n"
        assert c.wait_closed(3.0), "tunnel not closed after both sides finished"
    head = backend.find("/chat").head
    assert head.get("upgrade").lower() == b"websocket", head.raw
    assert "upgrade" in head.tokens("connection"), head.raw
    assert head.get("sec-websocket-key") == b"dGhlIHNhbXBsZSBub25jZQ==", head.raw
    assert head.get("sec-websocket-version") == b"13", head.raw


def test_tunnel_closed_when_backend_closes(tunnels):
    proxy, _ = tunnels
    with Client(proxy.port, timeout=3) as c:
        c.send(UPGRADE_REQUEST.replace(b"/chat", b"/gone"))
        assert c.read_message().status == 101
        assert c.read_exact(len(b"last-words")) == b"last-words"
        assert c.wait_closed(3.0), "client side of the tunnel left open after the backend closed"
