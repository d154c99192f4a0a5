"""Bodies stream through the proxy with backpressure, and arrive intact.

A proxy that buffers whole bodies shows it in its resident memory: while a client reads a
64 MiB response slowly (or a backend reads a 48 MiB upload slowly), the proxy's RSS, summed
over its process tree from /proc, must stay within a bound far below the body size.
Kernel socket buffers (which loopback autotuning makes large) are not part of RSS.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from tests.support.backends import (
    Conn,
    Request,
    echo_headers,
    pattern_block,
    pattern_sha256,
    response,
    serve,
)
from tests.support.client import Client
from tests.support.config import prefix_routes, proxy_config
from tests.support.proc import RssSampler

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]

MiB = 1 << 20
DOWNLOAD = 64 * MiB
UPLOAD = 48 * MiB
RSS_GROWTH_LIMIT_KIB = 24 * 1024  # far below either body: only a buffering proxy exceeds it
PIECE = 65536


def drain_exact(client: Client, n: int, digest, timeout: float = 30.0) -> int:
    """Read exactly n body bytes into `digest`, returning how many arrived before EOF."""
    got = 0
    deadline = time.monotonic() + timeout
    while got < n:
        data = client.reader.read_some(timeout=max(0.01, deadline - time.monotonic()),
                                       max_bytes=min(n - got, 1 << 20))
        if not data:
            break
        digest.update(data)
        got += len(data)
    return got


def download_respond(req: Request, conn: Conn) -> bytes | None:
    if req.target == "/big":
        conn.send(response(200, b"", [("Content-Length", str(DOWNLOAD))]))
        block = pattern_block(PIECE)
        for _ in range(DOWNLOAD // PIECE):
            conn.send(block, timeout=30)
        return None
    if req.target.startswith("/chunked-down"):
        return chunked_response(CHUNKED_BODY)
    if req.target == "/close-delimited":
        conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + CLOSE_BODY)
        conn.close()
        return None
    return response(200, req.body if req.method == "POST" else b"warm", echo_headers(req))


CHUNKED_BODY = os.urandom(2 * MiB + 3)
CLOSE_BODY = os.urandom(512 * 1024)
CHUNK_SIZES = [1, 10, 65535, 65536, 65537, 1000, MiB]


def chunked_response(body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    i = 0
    while pos < len(body):
        n = CHUNK_SIZES[i % len(CHUNK_SIZES)]
        piece = body[pos:pos + n]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        pos += n
        i += 1
    out += b"0\r\n\r\n"
    return response(200, bytes(out), [("Transfer-Encoding", "chunked")], length=False)


def slow_reader_script(conn: Conn) -> None:
    """Reads a request body, pausing 0.6 s once the first MiB of /upload has arrived."""
    paused = conn.backend.event("paused")
    while True:
        seen = 0

        def on_data(piece: bytes) -> None:
            nonlocal seen
            seen += len(piece)
            if seen >= MiB and not paused.is_set():
                paused.set()
                time.sleep(0.6)  # the slow reader

        req = conn.read_request(keep_body=False, on_data=on_data, timeout=30)
        if req is None:
            return
        conn.send(response(200, b"stored", echo_headers(req)))


@pytest.fixture(scope="module")
def streaming(module_stack):
    """One proxy: /upload goes to a slow-reading backend, everything else to `main`."""
    make_backend, start_proxy = module_stack
    main = make_backend(serve(download_respond), name="main")
    slow = make_backend(slow_reader_script, name="slow", rcvbuf=65536)
    proxy = start_proxy(config=proxy_config(
        {"main": main, "slow": slow}, routes=prefix_routes({"/upload": "slow"}, default="main"),
        timeouts={"read": "30s"}))
    return proxy, main, slow


def test_large_response_streams_with_backpressure(streaming):
    proxy, _, _ = streaming
    with Client(proxy.port, timeout=30, rcvbuf=65536) as c:
        assert c.request("GET", "/warm").body == b"warm"
        time.sleep(0.1)
        baseline = proxy.rss_kib()
        with RssSampler(proxy) as rss:
            c.send(b"GET /big HTTP/1.1\r\nHost: test.local\r\n\r\n")
            head = c.read_message(method="HEAD")  # head only; the body is read below
            assert head.status == 200, head
            assert head.header("content-length") in (str(DOWNLOAD), None), head
            assert head.framing_of_body() != "chunked", (
                "the backend's Content-Length framing was changed to chunked", head)
            digest = hashlib.sha256()
            first = drain_exact(c, MiB, digest)
            assert first == MiB
            # The slow reader: nothing read for a while, the backend keeps pushing.
            time.sleep(0.5)
            paused_peak = rss.max_kib
            rest = drain_exact(c, DOWNLOAD - MiB, digest)
    assert first + rest == DOWNLOAD, f"body truncated: {first + rest} of {DOWNLOAD}"
    assert digest.hexdigest() == pattern_sha256(DOWNLOAD, PIECE), "body corrupted in transit"
    growth = rss.max_kib - baseline
    assert growth < RSS_GROWTH_LIMIT_KIB, (
        f"proxy RSS grew by {growth} KiB (peak while the client paused: "
        f"{paused_peak - baseline} KiB) relaying a {DOWNLOAD >> 20} MiB body: it buffers "
        f"instead of applying backpressure")


def test_large_chunked_upload_streams_to_slow_backend(streaming):
    proxy, _, slow = streaming
    paused = slow.event("paused")
    block = pattern_block(PIECE)
    with Client(proxy.port, timeout=30) as c:
        assert c.request("POST", "/upload-warm", body=b"x").status == 200
        time.sleep(0.1)
        baseline = proxy.rss_kib()
        sent = 0
        send_error: list[BaseException] = []

        def sender() -> None:
            nonlocal sent
            try:
                c.send(b"POST /upload HTTP/1.1\r\nHost: test.local\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n", timeout=30)
                chunk = b"%x\r\n" % PIECE + block + b"\r\n"
                for _ in range(UPLOAD // PIECE):
                    c.send(chunk, timeout=30)
                    sent += PIECE
                c.send(b"0\r\n\r\n", timeout=30)
            except BaseException as exc:  # reported below
                send_error.append(exc)

        with RssSampler(proxy) as rss:
            t = threading.Thread(target=sender, daemon=True)
            t.start()
            assert paused.wait(20), "backend never received the first MiB of the upload"
            time.sleep(0.5)
            sent_while_paused = sent
            resp = c.read_response(timeout=40)
            t.join(10)
    assert not send_error, send_error
    assert resp.status == 200, resp
    assert resp.header("x-got-body-length") == str(UPLOAD), resp
    assert resp.header("x-got-body-sha256") == pattern_sha256(UPLOAD, PIECE), resp
    growth = rss.max_kib - baseline
    assert growth < RSS_GROWTH_LIMIT_KIB, (
        f"proxy RSS grew by {growth} KiB forwarding a {UPLOAD >> 20} MiB upload to a slow "
        f"backend (client had sent {sent_while_paused >> 20} MiB while the backend paused)")


def test_content_length_bodies_forwarded_intact(streaming):
    proxy, backend, _ = streaming
    body = os.urandom(3 * MiB + 7)
    with Client(proxy.port, timeout=20) as c:
        resp = c.request("POST", "/echo-cl", body=body, timeout=20)
    assert resp.status == 200, resp
    got = backend.find("/echo-cl")
    assert got.framing == "length" and got.head.get("content-length") == str(len(body)).encode()
    assert got.body_sha256 == hashlib.sha256(body).hexdigest(), "request body corrupted"
    assert len(resp.body) == len(body) and resp.body == body, "response body corrupted"


def test_chunked_request_body_reframed_correctly(streaming):
    proxy, backend, _ = streaming
    body = os.urandom(300_001)
    # Irregular chunks, upper- and lower-case hex, a chunk extension and a trailer section.
    pieces = [body[:1], body[1:4097], body[4097:4098], body[4098:200_000], body[200_000:]]
    framed = b"1;name=value\r\n" + pieces[0] + b"\r\n"
    framed += b"%X\r\n" % len(pieces[1]) + pieces[1] + b"\r\n"
    framed += b"%x\r\n" % len(pieces[2]) + pieces[2] + b"\r\n"
    framed += b"%X\r\n" % len(pieces[3]) + pieces[3] + b"\r\n"
    framed += b"%x\r\n" % len(pieces[4]) + pieces[4] + b"\r\n"
    framed += b"0\r\nX-Trailer: t\r\n\r\n"
    with Client(proxy.port, timeout=20) as c:
        c.send(b"POST /chunked-up HTTP/1.1\r\nHost: test.local\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + framed)
        resp = c.read_response()
        assert resp.status == 200, resp
        # the connection is still in sync: a second request works
        resp2 = c.request("POST", "/after-chunked", body=b"next")
        assert resp2.status == 200 and resp2.body == b"next", resp2
    got = backend.find("/chunked-up")
    # The backend's strict parser decoded the framing the proxy sent (chunked or length).
    assert got.framing in ("chunked", "length"), got.raw_head
    assert got.body_length == len(body), (got.body_length, len(body))
    assert got.body == body, "chunked request body corrupted"
    assert resp.body == body


def test_chunked_response_forwarded_intact(streaming):
    proxy, _, _ = streaming
    body = CHUNKED_BODY
    with Client(proxy.port, timeout=20) as c:
        resp = c.request("GET", "/chunked-down")
        assert resp.status == 200, resp
        assert len(resp.body) == len(body) and resp.body == body, "chunked body corrupted"
        resp2 = c.request("GET", "/chunked-down-2")
        assert resp2.body == body


def test_close_delimited_response_forwarded_intact(streaming):
    """A response framed by the backend closing the connection arrives whole."""
    proxy, _, _ = streaming
    body = CLOSE_BODY
    with Client(proxy.port, timeout=20) as c:
        resp = c.request("GET", "/close-delimited")
    assert resp.status == 200, resp
    assert resp.body == body, f"got {len(resp.body)} of {len(body)} bytes"
