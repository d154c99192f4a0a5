"""What one `veloxy bench` run is asked to do, checked once, and the request bytes it sends.

Why a module of its own: the command line, the demo and the tests all describe a run, and every
one of them must get the same checks and the same one-line messages ("bad header ...", "only
http:// URLs ...") before any process is started. Everything here is pure: no sockets, no event
loop. Name resolution and the reachability check happen in the runner's pre-flight.

Requests without a script are built once into bytes here, so the hot path only writes them.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

__all__ = [
    "BenchInputError",
    "BenchSettings",
    "build_request",
    "parse_header",
    "parse_start_time",
    "parse_url",
]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2 (field names, methods)
_BAD_VALUE = re.compile(r"[\x00\r\n]")
# Framing is the generator's business: these would make it send something it cannot parse
# the answer to, or lie about the body it sends.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
# Connection-specific fields, which HTTP/2 forbids (RFC 9113 §8.2.2).
_NOT_IN_HTTP2 = frozenset({"connection", "keep-alive", "proxy-connection", "upgrade", "te"})


class BenchInputError(ValueError):
    """Something the user gave cannot be run; the message is one line naming it (exit 2)."""


@dataclass(frozen=True)
class Target:
    """Where requests go: the connect address and what the request line and Host say."""

    host: str  # as written in the URL, without IPv6 brackets
    port: int
    path: str  # request target: path and query, at least "/"
    host_header: str  # Host header value: host[:port], brackets kept for IPv6
    url: str
    secure: bool = False  # https://: TLS (loadgen/tls.py)


def parse_url(url: str) -> Target:
    """An http:// or https:// URL -> Target, or BenchInputError naming what is wrong."""
    text = url.strip()
    if "://" not in text:
        raise BenchInputError(f"expected a URL like http://127.0.0.1:8080/, got {url!r}")
    scheme = text.partition("://")[0].lower()
    if scheme not in ("http", "https"):
        raise BenchInputError(f"only http:// and https:// URLs are supported, got {url!r}")
    default_port = 443 if scheme == "https" else 80
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise BenchInputError(f"bad port in URL {url!r}") from None
    host = parts.hostname or ""
    if not host:
        raise BenchInputError(f"no host in URL {url!r}")
    if port is None:
        port = default_port
    if port == 0:
        raise BenchInputError(f"bad port in URL {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(ord(ch) <= 32 or ord(ch) >= 127 for ch in path):
        raise BenchInputError(f"the URL path must be percent-encoded ASCII, got {path!r}")
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    return Target(host=host, port=port, path=path, host_header=host_header,
                  url=f"{scheme}://{host_header}{path}", secure=scheme == "https")


def parse_header(text: str) -> tuple[str, str]:
    """ "Name: value" -> (name, value), or BenchInputError."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _TOKEN.fullmatch(name):
        raise BenchInputError(f'bad header {text!r}: expected "Name: value"')
    value = value.strip()
    if _BAD_VALUE.search(value):
        raise BenchInputError(f"bad header {text!r}: CR, LF and NUL are not allowed in values")
    if name.lower() in _FRAMING_HEADERS:
        raise BenchInputError(f"bad header {text!r}: {name} is set from --body")
    return name, value


#: How far ahead --start-at may be: further is almost surely a typo in the date.
START_AT_HORIZON_S = 24 * 3600.0


def parse_start_time(text: str, now: float | None = None) -> float:
    """--start-at TIME -> epoch seconds. TIME is ISO 8601 with its zone
    (2026-12-07T08:00:00Z, 2026-12-07T09:00:00+01:00) or seconds since the epoch
    (1796630400, 1796630400.5), the forms `date -u +%FT%TZ` and `date +%s` print.

    Why a zone is required: the generators of one run sit on machines (or pods) whose local
    zones may differ; a time without a zone would start them hours apart."""
    value = text.strip()
    try:
        epoch = float(value)
    except ValueError:
        epoch = _iso_time(text)
    if not math.isfinite(epoch):
        raise BenchInputError(f"--start-at {text!r}: not a time")
    now = time.time() if now is None else now
    if epoch - now > START_AT_HORIZON_S:
        raise BenchInputError(f"--start-at {text!r} is more than a day ahead")
    return epoch


def _iso_time(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BenchInputError(f"--start-at {text!r}: expected an ISO 8601 time with its "
                              "zone (e.g. 2026-12-07T08:00:00Z) or epoch seconds") from None
    if moment.tzinfo is None:
        raise BenchInputError(f"--start-at {text!r}: give the time zone (a trailing Z for "
                              "UTC), so that every generator reads the same moment")
    return moment.timestamp()


def format_start_time(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds, as the result document writes times."""
    return (datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


def check_method(method: str) -> str:
    if not _TOKEN.fullmatch(method):
        raise BenchInputError(f"bad method {method!r}")
    return method


def build_request(method: str, path: str, host_header: str,
                  headers: list[tuple[str, str]] | tuple[tuple[str, str], ...],
                  body: bytes | None, close: bool) -> bytes:
    """One HTTP/1.1 request as bytes. Host first unless a header gives its own Host;
    Content-Length when there is a body (or the method usually carries one)."""
    lines = [f"{method} {path} HTTP/1.1"]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(f"Host: {host_header}")
    has_connection = False
    for name, value in headers:
        if name.lower() == "connection":
            has_connection = True
            if close:
                continue
        lines.append(f"{name}: {value}")
    if close:
        lines.append("Connection: close")
    elif not has_connection:
        pass  # HTTP/1.1 is keep-alive by default: nothing to say (wrk sends nothing either)
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


@dataclass(frozen=True)
class BenchSettings:
    """One run. Durations in seconds; `rate` None means closed loop."""

    url: str
    connections: int = 64
    duration: float = 10.0
    processes: int = 1
    rate: float | None = None
    close: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    body: bytes | None = None
    body_file: str | None = None
    script: str | None = None
    timeout: float = 2.0
    warmup: float = 0.0
    latency: bool = False
    json_out: str | None = None
    hdr_log: str | None = None
    baseline: str | None = None
    fail_on_regression: float | None = None
    #: Epoch seconds when the load begins (warm-up first, then the measured window), shared by
    #: several generators so that their windows line up; None: as soon as connected.
    start_at: float | None = None
    #: https:// only: skip certificate verification; the CA file to verify with; the name
    #: SNI sends and the certificate must carry (default: the URL's host).
    insecure: bool = False
    ca: str | None = None
    server_name: str | None = None
    #: https:// only: --tls-resume offers each new connection the TLS session of the
    #: previous one of its process (abbreviated handshakes); None: not said (off).
    tls_resume: bool | None = None
    #: --h2: HTTP/2 (h2c with prior knowledge for http://, ALPN h2 for https://) with
    #: `streams` requests in flight on each connection (h2load's -m).
    http2: bool = False
    streams: int = 1
    target: Target = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", parse_url(self.url))
        check_method(self.method)
        if self.connections < 1:
            raise BenchInputError(f"-c must be at least 1, got {self.connections}")
        if self.processes < 1:
            raise BenchInputError(f"-p must be at least 1, got {self.processes}")
        if self.processes > self.connections:
            raise BenchInputError(f"-p {self.processes} is more processes than connections "
                                  f"(-c {self.connections}): each process needs one")
        if self.duration <= 0:
            raise BenchInputError("-d must be longer than 0s")
        if self.rate is not None and not self.rate > 0:
            raise BenchInputError(f"-R must be a positive rate, got {self.rate:g}")
        if self.timeout <= 0:
            raise BenchInputError("--timeout must be longer than 0s")
        if self.fail_on_regression is not None:
            if self.baseline is None:
                raise BenchInputError("--fail-on-regression needs --baseline FILE")
            if self.fail_on_regression < 0:
                raise BenchInputError("--fail-on-regression must be a percentage >= 0")
        for name, value in self.headers:
            parse_header(f"{name}: {value}")
        if not self.target.secure and (self.insecure or self.ca or self.server_name):
            raise BenchInputError("--insecure, --ca and --sni are for https:// URLs")
        if not self.target.secure and self.tls_resume is not None:
            raise BenchInputError("--tls-resume / --no-tls-resume are for https:// URLs: "
                                  "drop it, or give an https:// URL")
        if self.insecure and self.ca:
            raise BenchInputError("--insecure skips the verification --ca is for: give one")
        self._check_http2()

    def _check_http2(self) -> None:
        if self.streams < 1:
            raise BenchInputError(f"-m (streams per connection) must be at least 1, got "
                                  f"{self.streams}")
        if not self.http2:
            if self.streams > 1:
                raise BenchInputError(f"-m {self.streams} streams per connection is HTTP/2: "
                                      "add --h2 (HTTP/1.1 has one request in flight)")
            return
        if self.closes:
            raise BenchInputError("--h2 keeps its connections open (many streams each): drop "
                                  "--close / Connection: close")
        if self.script:
            raise BenchInputError("--script drives HTTP/1.1 requests only: drop --h2 or "
                                  "--script")
        for name, _ in self.headers:
            if name.lower() in _NOT_IN_HTTP2:
                raise BenchInputError(f"header {name} is connection-specific, not allowed in "
                                      "HTTP/2 (RFC 9113 §8.2.2): drop it with --h2")

    @property
    def closes(self) -> bool:
        """A new connection per request: --close, or a Connection: close header."""
        return self.close or any(n.lower() == "connection" and "close" in v.lower()
                                 for n, v in self.headers)

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def request_bytes(self) -> bytes:
        t = self.target
        return build_request(self.method, t.path, t.host_header, self.headers, self.body,
                             self.closes)

    def h2_headers(self) -> list[tuple[bytes, bytes]]:
        """The HTTP/2 request's header list, built once (a Host header becomes :authority)."""
        t = self.target
        authority = next((v for n, v in self.headers if n.lower() == "host"), t.host_header)
        fields = [(b":method", self.method.encode()),
                  (b":scheme", b"https" if t.secure else b"http"),
                  (b":authority", authority.encode("latin-1")),
                  (b":path", t.path.encode("latin-1"))]
        fields += [(n.lower().encode("latin-1"), v.encode("latin-1"))
                   for n, v in self.headers if n.lower() != "host"]
        if self.body is not None or self.method in ("POST", "PUT", "PATCH"):
            fields.append((b"content-length", str(len(self.body or b"")).encode()))
        return fields

    def share(self, index: int) -> tuple[int, int]:
        """(first global connection index, connection count) of process `index`."""
        base, extra = divmod(self.connections, self.processes)
        first = index * base + min(index, extra)
        return first, base + (1 if index < extra else 0)

    def with_(self, **changes: object) -> BenchSettings:
        return replace(self, **changes)  # type: ignore[arg-type]  # field names checked by dataclasses.replace at run time

    def describe(self) -> dict[str, object]:
        """The settings as JSON data (the "settings" object of the result document)."""
        return {
            "url": self.target.url,
            "method": self.method,
            "connections": self.connections,
            "processes": self.processes,
            "duration_s": self.duration,
            "rate": self.rate,
            "mode": "open" if self.open_loop else "closed",
            "keep_alive": not self.closes,
            "headers": [[n, v] for n, v in self.headers],
            "body_bytes": len(self.body) if self.body is not None else 0,
            "script": self.script,
            "timeout_s": self.timeout,
            "warmup_s": self.warmup,
            "start_at": format_start_time(self.start_at) if self.start_at is not None else None,
            "http2": self.http2,
            "streams": self.streams,
            "tls_resume": bool(self.tls_resume) if self.target.secure else None,
        }
