"""Scripted upstream servers: raw sockets on 127.0.0.1 port 0, one thread per connection.

A `ScriptedBackend` accepts connections and runs a script (a function taking a `Conn`) on
each. It counts accepted connections and records, per connection, the exact bytes received
and every request parsed, so tests can assert on what veloxy sent upstream byte for byte.

Scripts are small functions; the `*_script` factories below build the misbehaving peers the
proxy tests need (slow, early close, garbage, silent, closing idle keep-alive connections,
100 Continue, 101 Switching Protocols). `serve(respond)` turns a per-request function into a
keep-alive script.

Every socket operation has a timeout; `close()` stops the accept loop, shuts every
connection and joins the threads.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.wire import (
    CRLF,
    FramingError,
    Head,
    PeerClosed,
    PeerTimeout,
    Reader,
    body_framing,
    read_chunked,
    read_head,
)

SCRIPT_TIMEOUT = 10.0


@dataclass
class Request:
    """One request as the backend received it."""

    head: Head
    method: str
    target: str
    version: str
    framing: str  # 'chunked', 'length' or 'none'
    body: bytes
    body_raw: bytes  # framing bytes as received (chunk lines included)
    body_sha256: str
    body_length: int
    conn_index: int

    @property
    def raw_head(self) -> bytes:
        return self.head.raw


class Conn:
    """One accepted connection, as seen by a script."""

    def __init__(self, backend: ScriptedBackend, sock: socket.socket, addr, index: int) -> None:
        self.backend = backend
        self.sock = sock
        self.addr = addr
        self.index = index
        self.received = bytearray()
        self.sent = 0
        self.reader = Reader(sock, log=self.received)
        self.closed = False
        self.requests: list[Request] = []
        self.current: Head | None = None

    # -- reading ---------------------------------------------------------------------------
    def read_request(self, timeout: float = SCRIPT_TIMEOUT, keep_body: bool = True,
                     body: bool = True, on_data=None,
                     expect_continue: bool = True) -> Request | None:
        """Next request, body included (unless body=False). None if the peer closed first.

        Like a real server, answers `Expect: 100-continue` with an interim 100 before
        reading the body (unless expect_continue=False). `self.current` is the head being
        read, so an `on_data` callback can tell which request its bytes belong to."""
        try:
            head = read_head(self.reader, timeout=timeout, what="request head")
        except PeerClosed as exc:
            if not exc.data:
                return None
            raise
        method, target, version = head.start_line.decode("latin-1").split(" ", 2)
        framing, length = body_framing(head)
        self.current = head
        if (body and expect_continue and framing != "none"
                and b"100-continue" in (head.get("expect") or b"").lower()):
            self.backend.event("expect-seen").set()
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        digest = hashlib.sha256()
        parts: list[bytes] = []
        total = 0
        raw = b""

        def consume(piece: bytes) -> None:
            nonlocal total
            digest.update(piece)
            total += len(piece)
            if keep_body:
                parts.append(piece)
            if on_data is not None:
                on_data(piece)

        if body and framing == "chunked":
            raw = read_chunked(self.reader, timeout=timeout, on_data=consume).raw
        elif body and framing == "length":
            remaining = length or 0
            while remaining:
                piece = self.reader.read_exact(min(remaining, 1 << 20), timeout=timeout)
                remaining -= len(piece)
                consume(piece)
            raw = b"".join(parts)
        req = Request(head, method, target, version, framing, b"".join(parts), raw,
                      digest.hexdigest(), total, self.index)
        self.requests.append(req)
        with self.backend.lock:
            self.backend.requests.append(req)
        return req

    def read_body_chunked(self, timeout: float = SCRIPT_TIMEOUT) -> bytes:
        return read_chunked(self.reader, timeout=timeout).body

    def read_some(self, timeout: float = SCRIPT_TIMEOUT) -> bytes:
        return self.reader.read_some(timeout=timeout)

    # -- writing ---------------------------------------------------------------------------
    def send(self, data: bytes, timeout: float = SCRIPT_TIMEOUT) -> None:
        self.sock.settimeout(timeout)
        self.sock.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def abort(self) -> None:
        """Close with a TCP reset (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                                 b"\x00\x00\x00\x00")
        except OSError:
            pass
        self.close()


Script = Callable[[Conn], None]


class ScriptedBackend:
    """A thread-based TCP server on 127.0.0.1, port 0, running `script` per connection."""

    def __init__(self, script: Script, name: str = "backend", sndbuf: int | None = None,
                 rcvbuf: int | None = None) -> None:
        self.script = script
        self.name = name
        self.sndbuf = sndbuf
        self.rcvbuf = rcvbuf
        self.lock = threading.Lock()
        self.connections: list[Conn] = []
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.events: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name=f"{name}-accept", daemon=True)
        self._accept_thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> int:
        with self.lock:
            return len(self.connections)

    @property
    def bytes_received(self) -> int:
        with self.lock:
            return sum(len(c.received) for c in self.connections)

    def received(self) -> bytes:
        """Every byte received, all connections in accept order."""
        with self.lock:
            return b"".join(bytes(c.received) for c in self.connections)

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def wait_requests(self, n: int, timeout: float = 5.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.005)
        raise AssertionError(f"{self.name}: expected {n} requests, got {len(self.requests)}; "
                             f"errors: {self.errors}")

    def find(self, target: str, timeout: float = 5.0) -> Request:
        """The (last) request received for `target`, waiting for it up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [r for r in self.requests if r.target == target]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                with self.lock:
                    seen = [r.target for r in self.requests]
                raise AssertionError(f"{self.name}: no request for {target!r}; got {seen}; "
                                     f"errors: {self.errors}")
            time.sleep(0.005)

    def requests_for(self, target: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.target == target]

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            if self.sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            with self.lock:
                conn = Conn(self, sock, addr, len(self.connections))
                self.connections.append(conn)
            t = threading.Thread(target=self._run, args=(conn,),
                                 name=f"{self.name}-conn{conn.index}", daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, conn: Conn) -> None:
        try:
            self.script(conn)
        except (PeerClosed, PeerTimeout, FramingError, OSError) as exc:
            if not self._stop.is_set():
                self.errors.append(f"conn{conn.index}: {type(exc).__name__}: {exc}")
        except Exception:
            self.errors.append(f"conn{conn.index}: {traceback.format_exc()}")
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._accept_thread.join(2)
        # Script threads are daemons; one still sleeping in a script is not waited for long.
        deadline = time.monotonic() + 0.3
        for t in self._threads:
            t.join(max(0.01, deadline - time.monotonic()))


# -- responses -------------------------------------------------------------------------------
class BackendStarter:
    """Starts scripted backends for one test (the `make_backend` and `backends` fixtures);
    `close()` closes them all."""

    def __init__(self) -> None:
        self.started: list[ScriptedBackend] = []

    def __call__(self, script: Script, name: str = "backend", **kw: Any) -> ScriptedBackend:
        backend = ScriptedBackend(script, name=name, **kw)
        self.started.append(backend)
        return backend

    def serving(self, respond: Responder, name: str = "backend") -> ScriptedBackend:
        """A backend that answers each request with `respond` (see `serve`), request
        bodies read and dropped."""
        return self(serve(respond, keep_body=False), name)

    def close(self) -> None:
        for backend in self.started:
            backend.close()


def response(status: int = 200, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
             reason: str | None = None, length: bool = True) -> bytes:
    """A response with Content-Length framing (unless length=False or headers give one)."""
    reasons = {100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
               304: "Not Modified", 404: "Not Found", 500: "Internal Server Error"}
    lines = [f"HTTP/1.1 {status} {reason or reasons.get(status, 'Status')}"]
    hdrs = list(headers or [])
    if length and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    lines += [f"{k}: {v}" for k, v in hdrs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def echo_headers(req: Request) -> list[tuple[str, str]]:
    return [("X-Got-Method", req.method), ("X-Got-Target", req.target),
            ("X-Got-Body-Length", str(req.body_length)), ("X-Got-Body-Sha256", req.body_sha256),
            ("X-Got-Framing", req.framing), ("X-Conn-Index", str(req.conn_index))]


Responder = Callable[[Request, Conn], bytes | None]


def serve(respond: Responder, keep_body: bool = True) -> Script:
    """A keep-alive script: read a request, send what `respond` returns (None: it already did
    everything itself), until the peer closes or `respond` closed the connection."""

    def script(conn: Conn) -> None:
        while not conn.closed:
            req = conn.read_request(keep_body=keep_body)
            if req is None:
                return
            out = respond(req, conn)
            if out is not None and not conn.closed:
                conn.send(out)

    return script


def ok_script(body: bytes = b"ok") -> Script:
    """200 with a fixed body and the request echoed in X-Got-* headers."""
    return serve(lambda req, conn: response(200, body, echo_headers(req)))


def echo_script() -> Script:
    """200 whose body is the request body (decoded), with X-Got-* headers."""
    return serve(lambda req, conn: response(200, req.body, echo_headers(req)))


def path_script() -> Script:
    """200 whose body names the backend and the request target: b'<name> <target>'."""

    def respond(req: Request, conn: Conn) -> bytes:
        return response(200, f"{conn.backend.name} {req.target}".encode(), echo_headers(req))

    return serve(respond)


def fixed_script(data: bytes, read_first: bool = True, then_close: bool = True) -> Script:
    """Read one request (unless read_first=False), send `data` verbatim, close."""

    def script(conn: Conn) -> None:
        if read_first and conn.read_request() is None:
            return
        conn.send(data)
        if then_close:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.reader.read_to_eof(timeout=2)

    return script


def silent_script(hold: float = 30.0) -> Script:
    """Read the request, never answer; keep the connection open until the peer closes."""

    def script(conn: Conn) -> None:
        if conn.read_request() is None:
            return
        try:
            conn.reader.read_to_eof(timeout=hold)
        except PeerTimeout:
            pass

    return script


def slow_script(head_delay: float = 0.0, chunks: int = 1, chunk_size: int = 1024,
                chunk_delay: float = 0.0) -> Script:
    """Wait `head_delay`, send a Content-Length head, then `chunks` pieces `chunk_delay` apart.
    Body bytes are b'abcdefghijklmnopqrstuvwxyz' repeated, so they can be checked."""
    total = chunks * chunk_size
    pattern = (b"abcdefghijklmnopqrstuvwxyz" * (total // 26 + 1))[:total]

    def respond(req: Request, conn: Conn) -> None:
        time.sleep(head_delay)
        conn.send(response(200, b"", [("Content-Length", str(total)), *echo_headers(req)]))
        for i in range(chunks):
            if i:
                time.sleep(chunk_delay)
            conn.send(pattern[i * chunk_size:(i + 1) * chunk_size])
        return None

    script = serve(respond)
    script.body = pattern  # type: ignore[attr-defined]
    return script


def early_close_length_script(declared: int = 1000, sent: int = 100,
                              pause: float = 0.2) -> Script:
    """Content-Length `declared`, send only `sent` body bytes, pause, close."""

    def script(conn: Conn) -> None:
        if conn.read_request() is None:
            return
        conn.send(response(200, b"", [("Content-Length", str(declared))]) + b"x" * sent)
        time.sleep(pause)
        conn.close()

    return script


def early_close_chunked_script(pause: float = 0.2) -> Script:
    """Chunked response: one 100-byte chunk, pause, close without the last chunk."""

    def script(conn: Conn) -> None:
        if conn.read_request() is None:
            return
        conn.send(response(200, b"", [("Transfer-Encoding", "chunked")], length=False)
                  + b"64\r\n" + b"y" * 100 + CRLF)
        time.sleep(pause)
        conn.close()

    return script


def close_idle_script(body: bytes = b"fresh", linger: float = 0.0) -> Script:
    """Answer one request with a keep-alive-looking response (no Connection: close), then
    close the connection silently after `linger` seconds."""

    def script(conn: Conn) -> None:
        req = conn.read_request()
        if req is None:
            return
        conn.send(response(200, body, echo_headers(req)))
        if linger:
            time.sleep(linger)
        conn.close()

    return script


def black_hole_post_script() -> Script:
    """GET: 200 keep-alive. POST: read the head, then close without answering."""

    def respond(req: Request, conn: Conn) -> bytes | None:
        if req.method == "POST":
            conn.close()
            return None
        return response(200, b"ok", echo_headers(req))

    def script(conn: Conn) -> None:
        while not conn.closed:
            # Read the POST's head only: the backend dies before reading any body.
            try:
                head = read_head(conn.reader, timeout=SCRIPT_TIMEOUT, what="request head")
            except PeerClosed:
                return
            method, target, version = head.start_line.decode("latin-1").split(" ", 2)
            req = Request(head, method, target, version, "none", b"", b"", "", 0, conn.index)
            conn.requests.append(req)
            with conn.backend.lock:
                conn.backend.requests.append(req)
            out = respond(req, conn)
            if out is not None:
                conn.send(out)

    return script


def continue_script() -> Script:
    """With `Expect: 100-continue`: send 100 Continue after the head, then read the body and
    send 200 echoing it. Without: just read the body and answer."""

    def script(conn: Conn) -> None:
        while True:
            try:
                head = read_head(conn.reader, timeout=SCRIPT_TIMEOUT, what="request head")
            except PeerClosed:
                return
            if b"100-continue" in (head.get("expect") or b"").lower():
                conn.backend.event("expect-seen").set()
                conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            framing, length = body_framing(head)
            if framing == "chunked":
                body = read_chunked(conn.reader).body
            else:
                body = conn.reader.read_exact(length or 0)
            method, target, version = head.start_line.decode("latin-1").split(" ", 2)
            req = Request(head, method, target, version, framing, body, body,
                          hashlib.sha256(body).hexdigest(), len(body), conn.index)
            conn.requests.append(req)
            with conn.backend.lock:
                conn.backend.requests.append(req)
            conn.send(response(200, body, echo_headers(req)))

    return script


def upgrade_script(greeting: bytes = b"hello-from-backend\n") -> Script:
    """WebSocket-like: answer an Upgrade request with 101 (plus `greeting` in the same send),
    then echo every byte back prefixed by b'echo:' until the peer half-closes, then close."""

    def script(conn: Conn) -> None:
        req = conn.read_request()
        if req is None:
            return
        if b"upgrade" not in [t.encode() for t in req.head.tokens("connection")]:
            conn.send(response(400, b"no upgrade"))
            return
        conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                  b"\r\n" + greeting)
        while True:
            data = conn.reader.read_some(timeout=SCRIPT_TIMEOUT)
            if not data:
                break
            conn.send(b"echo:" + data)
        conn.send(b"bye\n")
        conn.sock.shutdown(socket.SHUT_WR)

    return script


def garbage_script(data: bytes = b"this is not HTTP at all\r\n\r\n") -> Script:
    return fixed_script(data)


def streaming_download_script(total: int, piece: int = 65536) -> Script:
    """200 with Content-Length `total`, body from `pattern_block` repeated; records progress
    (bytes pushed into the socket) in `conn.sent`."""
    block = pattern_block(piece)

    def respond(req: Request, conn: Conn) -> None:
        conn.send(response(200, b"", [("Content-Length", str(total))]))
        left = total
        while left:
            n = min(left, piece)
            conn.send(block[:n], timeout=30)
            left -= n
        return None

    return serve(respond)


def pattern_block(size: int) -> bytes:
    """Deterministic non-repeating-looking bytes (a hash chain), cheap to build."""
    out = bytearray()
    seed = b"veloxy"
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


def pattern_sha256(total: int, piece: int = 65536) -> str:
    block = pattern_block(piece)
    h = hashlib.sha256()
    left = total
    while left:
        n = min(left, piece)
        h.update(block[:n])
        left -= n
    return h.hexdigest()


__all__ = [
    "Conn",
    "Request",
    "ScriptedBackend",
    "black_hole_post_script",
    "close_idle_script",
    "continue_script",
    "early_close_chunked_script",
    "early_close_length_script",
    "echo_headers",
    "echo_script",
    "fixed_script",
    "garbage_script",
    "ok_script",
    "path_script",
    "pattern_block",
    "pattern_sha256",
    "response",
    "serve",
    "silent_script",
    "slow_script",
    "streaming_download_script",
    "upgrade_script",
]
