"""A raw-socket HTTP/1.1 client for black-box tests: exact bytes out, strict parsing in.

Every operation has a timeout (a test never hangs on a silent proxy). Responses are parsed
strictly (tests/support/wire.py): a proxy must never send a malformed head or framing.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from tests.support.wire import (
    DEFAULT_TIMEOUT,
    FramingError,
    Head,
    PeerClosed,
    PeerTimeout,
    Reader,
    read_chunked,
    read_head,
)


@dataclass
class Response:
    head: Head
    version: str
    status: int
    reason: str
    body: bytes = b""
    framing: str = "none"  # 'chunked', 'length', 'close' or 'none' (no body by rule)
    complete: bool = True  # False: the connection ended before the framing said it would
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    interim: list[Response] = field(default_factory=list)  # 1xx received before this one

    def header(self, name: str) -> str | None:
        value = self.head.get(name)
        return None if value is None else value.decode("latin-1")

    def headers_all(self, name: str) -> list[str]:
        return [v.decode("latin-1") for v in self.head.get_all(name)]

    def has(self, name: str) -> bool:
        return self.head.has(name)

    @property
    def raw_head(self) -> bytes:
        return self.head.raw

    def framing_of_body(self) -> str:
        """How the body after this head is framed: 'chunked', 'length' or 'close'."""
        if self.head.get_all("transfer-encoding"):
            return "chunked"
        if self.head.get_all("content-length"):
            return "length"
        return "close"

    def __repr__(self) -> str:
        return (f"<Response {self.status} framing={self.framing} body={len(self.body)}B "
                f"head={self.head.raw[:300]!r}>")


class Client:
    """One TCP connection to the proxy (or, made with `over`, a socket already connected:
    a TLS one, say)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT,
                 rcvbuf: int | None = None, sndbuf: int | None = None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # set before connect so the window never grows past it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError:
            sock.close()
            raise
        self._use(sock, timeout)

    @classmethod
    def over(cls, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> Client:
        """A client on `sock`, already connected; closing the client closes it."""
        client = cls.__new__(cls)
        client._use(sock, timeout)
        return client

    def _use(self, sock: socket.socket, timeout: float) -> None:
        self.timeout = timeout
        self.sock = sock
        self.reader = Reader(sock)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes, timeout: float | None = None) -> None:
        self.sock.settimeout(timeout or self.timeout)
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    # -- reading ---------------------------------------------------------------------------
    def read_message(self, method: str = "GET", timeout: float | None = None,
                     allow_incomplete: bool = False) -> Response:
        """The next response, 1xx included (as its own Response, without body)."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        head = read_head(self.reader, timeout=timeout, what="response head")
        parts = head.start_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise FramingError(f"bad status line {head.start_line!r}")
        status = int(parts[1])
        resp = Response(head, parts[0], status, parts[2] if len(parts) > 2 else "")
        left = lambda: max(0.001, deadline - time.monotonic())  # noqa: E731
        if status < 200 or status in (204, 304) or method == "HEAD":
            resp.framing = "none"
            return resp
        te = head.get_all("transfer-encoding")
        cl = head.get_all("content-length")
        if te and cl:
            raise FramingError(f"response with both Transfer-Encoding and Content-Length: "
                               f"{head.raw!r}")
        try:
            if te:
                if len(te) != 1 or te[0].strip().lower() != b"chunked":
                    raise FramingError(f"unexpected Transfer-Encoding {te!r}")
                resp.framing = "chunked"
                chunked = read_chunked(self.reader, timeout=left())
                resp.body, resp.trailers = chunked.body, chunked.trailers
            elif cl:
                if len(set(cl)) != 1 or not cl[0].isdigit():
                    raise FramingError(f"bad Content-Length {cl!r}")
                resp.framing = "length"
                resp.body = self.reader.read_exact(int(cl[0]), timeout=left())
            else:
                resp.framing = "close"
                resp.body = self.reader.read_to_eof(timeout=left(), what="close-delimited body")
        except PeerClosed as exc:
            if not allow_incomplete:
                raise
            resp.complete = False
            resp.body = exc.data  # what had arrived: all of it for Content-Length framing
            self.reader.buf.clear()
        return resp

    def read_response(self, method: str = "GET", timeout: float | None = None,
                      allow_incomplete: bool = False) -> Response:
        """The next final response; 1xx responses before it (but not 101) go to `.interim`."""
        interim = []
        while True:
            resp = self.read_message(method, timeout, allow_incomplete)
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp)
                continue
            resp.interim = interim
            return resp

    def request(self, method: str = "GET", target: str = "/", host: str = "test.local",
                headers: list[tuple[str, str]] | None = None, body: bytes | None = None,
                timeout: float | None = None) -> Response:
        self.send(build_request(method, target, host, headers, body))
        return self.read_response(method, timeout)

    def read_some(self, timeout: float | None = None) -> bytes:
        return self.reader.read_some(timeout=timeout or self.timeout)

    def read_exact(self, n: int, timeout: float | None = None) -> bytes:
        return self.reader.read_exact(n, timeout=timeout or self.timeout, what="data")

    def read_to_eof(self, timeout: float | None = None) -> bytes:
        return self.reader.read_to_eof(timeout=timeout or self.timeout)

    def wait_closed(self, timeout: float = 3.0) -> bool:
        """True if the proxy closes the connection (EOF or reset) within `timeout`."""
        return self.reader.at_eof(timeout)


def build_request(method: str = "GET", target: str = "/", host: str | None = "test.local",
                  headers: list[tuple[str, str]] | None = None, body: bytes | None = None,
                  version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    hdrs = list(headers or [])
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    lines += [f"{k}: {v}" for k, v in hdrs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def get(port: int, target: str = "/", host: str = "test.local",
        headers: list[tuple[str, str]] | None = None, timeout: float = DEFAULT_TIMEOUT,
        method: str = "GET", body: bytes | None = None) -> Response:
    """One request on a fresh connection, closed afterwards."""
    with Client(port, timeout=timeout) as c:
        return c.request(method, target, host, headers, body, timeout)


def wait_refused(port: int, timeout: float = 2.0) -> bool:
    """True once a connect to `port` is refused within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        except (TimeoutError, OSError):
            pass
        finally:
            s.close()
        time.sleep(0.02)
    return False


def refusing_port() -> socket.socket:
    """A socket bound on 127.0.0.1 without listening: connects to its port are refused, and
    no other process can take the port while the caller keeps the socket."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


__all__ = ["Client", "PeerClosed", "PeerTimeout", "Response", "build_request", "get",
           "refusing_port", "wait_refused"]
