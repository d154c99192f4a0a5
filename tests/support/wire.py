"""HTTP/1.1 on raw sockets for the test peers: a deadline-bound reader and strict parsing.

Shared by the scripted backends (tests/support/backends.py) and the raw client
(tests/support/client.py). Nothing here imports veloxy: the suite is black-box.

Every read takes a deadline and raises `PeerTimeout` (carrying the bytes read so far) when it
passes, so that a test never hangs on a peer that says nothing.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

CRLF = b"\r\n"
DEFAULT_TIMEOUT = 5.0

# RFC 9110 §5.6.2 token characters, for a strict header-name check.
_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CHUNK_SIZE_RE = re.compile(rb"^([0-9A-Fa-f]+)(;.*)?$")


class PeerTimeout(TimeoutError):
    """A read did not complete before its deadline. `.data` holds what had arrived."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(f"{message} (got {len(data)} bytes: {data[:200]!r})")
        self.data = data


class PeerClosed(ConnectionError):
    """The peer closed (EOF or reset) before a complete message. `.data`: what had arrived."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(f"{message} (got {len(data)} bytes: {data[:200]!r})")
        self.data = data


class FramingError(ValueError):
    """Bytes that do not follow HTTP/1.1 framing (bad chunk size, missing CRLF...)."""


class Reader:
    """Buffered reads from a blocking socket, each bounded by a deadline.

    `log`, when given, receives every byte read (the backends record what they got).
    """

    def __init__(self, sock: socket.socket, log: bytearray | None = None) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.log = log
        self.eof = False

    # -- low level -------------------------------------------------------------------------
    def _fill(self, deadline: float, what: str) -> bool:
        """Read once into the buffer. Returns False at EOF. Raises PeerTimeout at deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerTimeout(f"timed out waiting for {what}", bytes(self.buf))
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except TimeoutError:  # socket.timeout is TimeoutError since 3.10
            raise PeerTimeout(f"timed out waiting for {what}", bytes(self.buf)) from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        if self.log is not None:
            self.log += data
        self.buf += data
        return True

    def read_until(self, delim: bytes, timeout: float = DEFAULT_TIMEOUT,
                   limit: int = 1 << 20, what: str = "data") -> bytes:
        """Bytes up to and including `delim`."""
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            idx = self.buf.find(delim, start)
            if idx >= 0:
                end = idx + len(delim)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise FramingError(f"no {delim!r} within {limit} bytes while reading {what}")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self._fill(deadline, what):
                raise PeerClosed(f"connection closed while reading {what}", bytes(self.buf))

    def read_exact(self, n: int, timeout: float = DEFAULT_TIMEOUT, what: str = "body") -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not self._fill(deadline, what):
                raise PeerClosed(f"connection closed after {len(self.buf)} of {n} bytes of {what}",
                                 bytes(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_some(self, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = 262144) -> bytes:
        """Whatever is buffered or arrives next; b'' at EOF."""
        if not self.buf:
            self._fill(time.monotonic() + timeout, "any data")
        out = bytes(self.buf[:max_bytes])
        del self.buf[:max_bytes]
        return out

    def read_to_eof(self, timeout: float = DEFAULT_TIMEOUT, what: str = "EOF") -> bytes:
        deadline = time.monotonic() + timeout
        while self._fill(deadline, what):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def at_eof(self, timeout: float) -> bool:
        """True if the peer closes (EOF or reset) within `timeout` with nothing more to read.

        Raises AssertionError if data arrives instead; False if still open at the deadline.
        """
        if self.buf:
            raise AssertionError(f"expected EOF, but data is buffered: {bytes(self.buf[:200])!r}")
        try:
            more = self._fill(time.monotonic() + timeout, "EOF")
        except PeerTimeout:
            return False
        if more:
            raise AssertionError(f"expected EOF, got data: {bytes(self.buf[:200])!r}")
        return True


# -- heads -----------------------------------------------------------------------------------
@dataclass
class Head:
    start_line: bytes
    headers: list[tuple[bytes, bytes]]
    raw: bytes

    def get_all(self, name: str | bytes) -> list[bytes]:
        key = name.encode() if isinstance(name, str) else name
        key = key.lower()
        return [v for k, v in self.headers if k.lower() == key]

    def get(self, name: str | bytes) -> bytes | None:
        """All values of a field joined with ', ' (RFC 9110 §5.3), or None if absent."""
        values = self.get_all(name)
        return b", ".join(values) if values else None

    def has(self, name: str | bytes) -> bool:
        return bool(self.get_all(name))

    def names(self) -> list[str]:
        return [k.decode("latin-1").lower() for k, _ in self.headers]

    def tokens(self, name: str | bytes) -> list[str]:
        """Comma-separated tokens of all lines of a field, lowercased."""
        value = self.get(name)
        if value is None:
            return []
        return [t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip()]


def parse_head(raw: bytes, strict: bool = True) -> Head:
    """Parse a head ending in CRLFCRLF. With `strict`, refuse anything a proxy must not send:
    bare LF line ends, obs-fold, non-token names, whitespace before the colon, CTLs in values.
    """
    if not raw.endswith(b"\r\n\r\n"):
        raise FramingError(f"head does not end with CRLFCRLF: {raw[-20:]!r}")
    body = raw[:-4]
    lines = body.split(b"\r\n")
    if strict:
        for line in lines:
            if b"\n" in line or b"\r" in line:
                raise FramingError(f"bare CR or LF in head line {line!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if strict and line[:1] in (b" ", b"\t"):
            raise FramingError(f"obs-fold line {line!r}")
        name, sep, value = line.partition(b":")
        if not sep:
            raise FramingError(f"header line without colon {line!r}")
        if strict and not _TOKEN_RE.match(name):
            raise FramingError(f"invalid header name {name!r}")
        value = value.strip(b" \t")
        if strict and any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise FramingError(f"control character in value of {name!r}: {value!r}")
        headers.append((name, value))
    return Head(lines[0], headers, raw)


def read_head(reader: Reader, timeout: float = DEFAULT_TIMEOUT, what: str = "head",
              strict: bool = True) -> Head:
    raw = reader.read_until(b"\r\n\r\n", timeout=timeout, what=what)
    return parse_head(raw, strict=strict)


@dataclass
class Chunked:
    body: bytes
    raw: bytes  # the exact framing bytes, chunk lines included
    chunk_sizes: list[int] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


def read_chunked(reader: Reader, timeout: float = DEFAULT_TIMEOUT,
                 on_data=None) -> Chunked:
    """Decode a chunked body strictly (RFC 9112 §7.1). `on_data(bytes)` sees each chunk's data
    as it arrives (then the returned body is empty, to keep memory flat for big bodies)."""
    deadline = time.monotonic() + timeout
    raw = bytearray()
    body = bytearray()
    sizes: list[int] = []

    def left() -> float:
        return max(0.001, deadline - time.monotonic())

    while True:
        line = reader.read_until(CRLF, timeout=left(), limit=4096, what="chunk size line")
        raw += line
        m = _CHUNK_SIZE_RE.match(line[:-2])
        if not m:
            raise FramingError(f"invalid chunk size line {line!r}")
        size = int(m.group(1), 16)
        sizes.append(size)
        if size == 0:
            break
        remaining = size
        while remaining:
            piece = reader.read_exact(min(remaining, 1 << 20), timeout=left(), what="chunk data")
            remaining -= len(piece)
            if on_data is not None:
                on_data(piece)
            else:
                body += piece
            raw += b"<%d data bytes>" % len(piece) if on_data else piece
        crlf = reader.read_exact(2, timeout=left(), what="CRLF after chunk data")
        raw += crlf
        if crlf != CRLF:
            raise FramingError(f"chunk data not followed by CRLF: {crlf!r}")
    trailers = []
    while True:
        line = reader.read_until(CRLF, timeout=left(), limit=65536, what="trailer section")
        raw += line
        if line == CRLF:
            break
        name, sep, value = line[:-2].partition(b":")
        if not sep or not _TOKEN_RE.match(name):
            raise FramingError(f"invalid trailer line {line!r}")
        trailers.append((name, value.strip()))
    return Chunked(bytes(body), bytes(raw), sizes, trailers)


def encode_chunked(body: bytes, chunk_size: int = 4096, trailers: bytes = b"") -> bytes:
    out = bytearray()
    for i in range(0, len(body), chunk_size):
        piece = body[i:i + chunk_size]
        out += b"%x\r\n" % len(piece) + piece + CRLF
    out += b"0\r\n" + trailers + CRLF
    return bytes(out)


def body_framing(head: Head) -> tuple[str, int | None]:
    """('chunked', None), ('length', n) or ('none', None) for a request head.

    Raises FramingError for what a proxy must never send on: both framings at once, a
    Transfer-Encoding other than exactly 'chunked', several or invalid Content-Length values.
    """
    te = head.get_all("transfer-encoding")
    cl = head.get_all("content-length")
    if te and cl:
        raise FramingError(f"both Transfer-Encoding {te!r} and Content-Length {cl!r}")
    if te:
        if len(te) != 1 or te[0].strip().lower() != b"chunked":
            raise FramingError(f"Transfer-Encoding must be exactly one 'chunked', got {te!r}")
        return "chunked", None
    if cl:
        if len(cl) != 1 or not cl[0].isdigit():
            raise FramingError(f"Content-Length must be exactly one number, got {cl!r}")
        return "length", int(cl[0])
    return "none", None
