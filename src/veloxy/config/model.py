"""The config as frozen, documented types: what every other package of veloxy reads.

Why types and not dicts: the proxy reads these values on start-up and on reload, never per
request, but a wrong one costs a lot (a 0 s connect timeout, a route to a group that does not
exist). So the file is checked in one pass here, and everything downstream can trust a
`Config`: durations are float seconds, sizes are ints, names are normalized, cross-references
resolve. The models are frozen (a config is replaced on reload, never edited) and refuse unknown
keys, so a typo ("max_body: 1m") is an error rather than a silently ignored line.

Each field carries a docstring with its default and the trade-off of moving it (pydantic copies
it into `Model.model_fields[name].description`, see `use_attribute_docstrings`), in the spirit of
Caddy's reverse-proxy handler docs. Keep it that way when adding a field: a test checks it.

Building by hand works too, for tests of other packages:
`UpstreamServer(url="http://127.0.0.1:9001")` derives host and port, durations accept "2s" or
seconds. Validation of a YAML file goes through `load.parse_config`, which passes a validation
context so that only keys a person may write are accepted (an upstream group's `name` comes from
its key, a server's `host`/`port` from its URL).

Errors: validators raise `ValueError("expected X, got Y")`, or a `ValidationError` with several
located problems when one value has several parts (a list of methods, a mapping of headers);
`load.py` turns them into "key.path: message" lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapSerializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from veloxy.config.values import (
    check_bind_host,
    check_port,
    format_address,
    format_duration,
    is_token,
    parse_bind_address,
    parse_duration,
    parse_hash_key,
    parse_route_host,
    parse_size,
    parse_upstream_url,
    parse_workers,
    show,
)

__all__ = [
    "BALANCE_POLICIES",
    "AccessLog",
    "Config",
    "FrozenMap",
    "GcSettings",
    "HealthCheck",
    "Http2Settings",
    "Limits",
    "ListenAddress",
    "ListenTLS",
    "OtelExport",
    "PassiveHealth",
    "PoolSettings",
    "RateLimit",
    "Route",
    "RouteMatch",
    "Shed",
    "SocketOptions",
    "TLSCertificate",
    "Timeouts",
    "Tracing",
    "Tuning",
    "UpstreamGroup",
    "UpstreamServer",
    "UpstreamTLS",
]

#: Load-balancing policies, in the order they are listed in error messages.
BALANCE_POLICIES: tuple[str, ...] = (
    "round_robin", "least_conn", "random", "p2c_ewma", "hash", "adaptive")
BalancePolicy = Literal["round_robin", "least_conn", "random", "p2c_ewma", "hash", "adaptive"]

#: Validation context key set by `parse_config`: the input is a file a person wrote.
FILE_CONTEXT = "veloxy_file"
#: Prefix given to a key a person may not write although the model has a field of that name
#: (`source`, an upstream group's `name`, a server's `host`/`port`). pydantic then reports it as
#: an unknown key, and the error renderer strips the prefix again.
FOREIGN = "\x00"


# --- validator helpers -----------------------------------------------------------------------


def _from_file(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(FILE_CONTEXT))


def problem(message: str) -> PydanticCustomError:
    """A pydantic error whose message is exactly `message` (no "Value error, " prefix)."""
    return PydanticCustomError("veloxy", "{message}", {"message": message})


def located(title: str, problems: list[tuple[tuple[str | int, ...], str, object]]
            ) -> ValidationError:
    """One ValidationError holding several (location, message, input) problems.

    Raised from inside a validator, pydantic prefixes each location with the position of the
    value being validated, so the renderer still gets the full key path.
    """
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=problem(message), loc=loc, input=value)
        for loc, message, value in problems
    ])


def unknown_key_message(key: object, known: tuple[str, ...]) -> str:
    """ "unknown key", with a suggestion when the key is a likely typo of a known one."""
    import difflib

    if isinstance(key, str):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or [
            name for name in known if len(key) >= 3 and name.startswith(key)]  # "strip"
        if close:
            return f"unknown key (did you mean {close[0]}?)"
    return "unknown key"


def unknown_upstream_message(name: str, defined: list[str]) -> str:
    return f"unknown upstream {show(name)} (defined: {', '.join(defined) or 'none'})"


def _int_in(lowest: int, highest: int | None = None) -> BeforeValidator:
    def check(value: object) -> int:
        if (isinstance(value, int) and not isinstance(value, bool) and value >= lowest
                and (highest is None or value <= highest)):
            return value
        want = (f"an integer from {lowest} to {highest}" if highest is not None
                else f"an integer >= {lowest}")
        raise ValueError(f"expected {want}, got {show(value)}")
    return BeforeValidator(check)


def _optional_int_in(lowest: int) -> BeforeValidator:
    check = _int_in(lowest).func

    def optional(value: object) -> object:
        return None if value is None else check(value)  # type: ignore[call-arg]  # a plain (value) validator
    return BeforeValidator(optional)


def _strict_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {show(value)}")


def _duration(value: object) -> float:
    return parse_duration(value)


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds == 0:
        raise ValueError(f"expected a duration > 0, got {show(value)}")
    return seconds


def _limit_size(value: object) -> int:
    try:
        size = parse_size(value)
    except ValueError:
        raise ValueError(f'expected a size in bytes like 65536 or "64k", got {show(value)}'
                         ) from None
    if size < 1:
        raise ValueError(f"expected a size >= 1, got {show(value)}")
    return size


def _optional_limit_size(value: object) -> int | None:
    return None if value is None else _limit_size(value)


def _optional_mmap_threshold(value: object) -> int | None:
    if value is None:
        return None
    size = _limit_size(value)
    if not 4096 <= size <= 32 * 1024 * 1024:  # glibc caps it at HEAP_MAX_SIZE / 2
        raise ValueError(f"expected a size from 4096 to 33554432 bytes, got {show(value)}")
    return size


def _path(value: object) -> str:
    if isinstance(value, str) and value.startswith("/") and not any(
            c.isspace() or not c.isprintable() for c in value):
        return value
    raise ValueError(f'expected a path starting with "/", got {show(value)}')


def _path_prefix(value: object) -> str:
    path = _path(value)
    if "?" in path or "#" in path:
        raise ValueError(f"expected a path without query or fragment, got {show(value)}")
    if not path.isascii() or not path.isprintable():
        raise ValueError(f"expected an ASCII path (percent-encode other characters, as "
                         f"they arrive on the wire), got {show(value)}")
    return path


Duration = Annotated[float, BeforeValidator(_duration)]
"""Seconds >= 0; accepts "250ms", "2s", "1m", "1h", "1.5s" or a number of seconds."""
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
"""Seconds > 0 (a zero timeout would fail every attempt)."""


class FrozenMap(Mapping[str, Any]):
    """A read-only mapping that pickles (MappingProxyType does not, and the worker
    supervisor may send a Config to a spawned process)."""

    __slots__ = ("_data",)
    _data: dict[str, Any]

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("FrozenMap is read-only")

    def __getstate__(self) -> dict[str, Any]:
        return self._data

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_data", state)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    #: Fields filled in by veloxy, never written in the file.
    _derived: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def file_keys(cls) -> tuple[str, ...]:
        """The keys a person may write for this model in the YAML file."""
        return tuple(name for name in cls.model_fields if name not in cls._derived)


# --- TLS and HTTP/2 ---------------------------------------------------------------------------


def _readable_file(value: object) -> str:
    """A path to a file that exists now (certificates, keys, CA bundles): a missing file is
    a config error at start-up (and in `veloxy check`), not a failed handshake later."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path, got {show(value)}")
    import os

    if not os.path.isfile(value):
        raise ValueError(f"no such file: {value}")
    if not os.access(value, os.R_OK):
        raise ValueError(f"cannot read file: {value}")
    return value


FilePath = Annotated[str, BeforeValidator(_readable_file)]
"""A readable file, checked when the config is loaded."""


def _server_names(value: object) -> tuple[str, ...]:
    if isinstance(value, list | tuple) and not value:
        raise ValueError("expected at least one server name")
    if not isinstance(value, list | tuple):
        raise ValueError(f'expected a list of server names like ["api.example.com", '
                         f'"*.example.com"], got {show(value)}')
    names: list[str] = []
    problems: list[tuple[tuple[str | int, ...], str, object]] = []
    for index, name in enumerate(value):
        try:
            names.append(parse_route_host(name))
        except ValueError as exc:
            problems.append(((index,), str(exc), name))
    if problems:
        raise located("names", problems)
    return tuple(names)


def _tls_version(value: object) -> str:
    text = value
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)  # YAML reads 1.2 as a number
    if text in ("1.2", "1.3"):
        return text
    raise ValueError(f'expected "1.2" or "1.3", got {show(value)}')


class TLSCertificate(_Model):
    """One more certificate of a TLS listener, presented to clients whose SNI names one of
    `names`."""

    names: Annotated[tuple[str, ...], BeforeValidator(_server_names)]
    """Server names this certificate answers for: exact ("api.example.com") or one-label
    wildcards ("*.example.com"), lowercased. An exact name wins over a wildcard. Required."""
    cert: FilePath
    """PEM file with the certificate chain, leaf first. Required."""
    key: FilePath
    """PEM file with the certificate's private key (unencrypted). Required."""


class ListenTLS(_Model):
    """TLS termination on one listener. Defaults follow Mozilla's "intermediate" profile:
    TLS 1.2 and 1.3 only, ECDHE key exchange with AES-GCM or ChaCha20-Poly1305, session
    tickets on. Certificates are read again on SIGHUP; handshakes after the reload get them,
    established connections are untouched. Session tickets (valid 2 hours, OpenSSL's
    default) are sealed with a key made at start-up and never rotated while the process runs:
    a SIGHUP reload keeps it, so tickets issued before a certificate change still resume
    (those sessions were authenticated by the previous certificate); a restart makes a new
    key and every client does a full handshake once. With `workers` > 1 the workers share
    the key, so a ticket resumes on any worker (see `workers_mode` for spawn)."""

    cert: FilePath
    """PEM file with the default certificate chain, leaf first: presented when the client
    sends no SNI or one that no entry of `certificates` names. Required."""
    key: FilePath
    """PEM file with the default certificate's private key (unencrypted). Required."""
    certificates: tuple[TLSCertificate, ...] = ()
    """More certificates, chosen by the client's SNI server name; default: none."""
    client_ca: FilePath | None = None
    """PEM bundle of the CAs that sign client certificates. When set, every client must
    present a certificate signed by one of them (mutual TLS) or the handshake fails. Default
    null = no client certificates asked for."""
    min_version: Annotated[Literal["1.2", "1.3"], BeforeValidator(_tls_version)] = "1.2"
    """Lowest TLS version accepted: "1.2" (default; every client of the last decade) or
    "1.3" (smaller handshake, fewer clients)."""
    http2: Annotated[bool, BeforeValidator(_strict_bool)] = True
    """Offer HTTP/2 by ALPN ("h2", then "http/1.1"). Default true; false serves HTTP/1.1
    only."""


class Http2Settings(_Model):
    """HTTP/2 on the client side (ALPN h2 on TLS listeners, h2c on cleartext ones that ask
    for it). Each stream becomes one HTTP/1.1 request to the upstream, through the same pools
    as HTTP/1.1 clients."""

    max_concurrent_streams: Annotated[int, _int_in(1, 10000)] = 100
    """Streams one client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);
    a stream beyond it is refused. Default 100, as nginx and Go. Each open stream may hold an
    upstream connection, so this times the client connections bounds upstream load."""
    stream_window: Annotated[int, BeforeValidator(_limit_size)] = 262144
    """Flow-control window of each stream for request bodies (SETTINGS_INITIAL_WINDOW_SIZE):
    how much a client may send on a stream before veloxy has passed it upstream. Default
    256 KiB; larger speeds uploads over long links, at that much memory per stream."""
    connection_window: Annotated[int, BeforeValidator(_limit_size)] = 4194304
    """Flow-control window of a whole connection for request bodies; at least stream_window.
    Default 4 MiB, so that one stalled upload does not stop the others."""
    send_timeout: PositiveDuration = 60.0
    """Write-stall timeout: a response that has bytes waiting for the client's flow-control
    window, and gets no window to send any of them for this long, has its stream reset
    (RST_STREAM CANCEL) and its upstream connection let go; when it is the connection's
    window that stays shut, the connection is closed (GOAWAY ENHANCE_YOUR_CALM), and so is a
    connection whose client does not read the socket for this long. Counted in
    veloxy_http2_send_timeouts_total. Default 60s, as nginx's send_timeout. Shorter frees
    upstream connections held by clients that stopped reading sooner; too short cuts off
    clients that pause a download on purpose."""

    @model_validator(mode="after")
    def _windows(self) -> Http2Settings:
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        for name in ("stream_window", "connection_window"):
            value = getattr(self, name)
            if not 65535 <= value <= 2**31 - 1:
                problems.append(((name,), f"expected a size from 65535 to 2147483647 bytes, "
                                          f"got {value}", value))
        if not problems and self.connection_window < self.stream_window:
            problems.append((("connection_window",), f"connection_window "
                             f"({self.connection_window}) is smaller than stream_window "
                             f"({self.stream_window})", self.connection_window))
        if problems:
            raise located("http2", problems)
        return self


# --- listen addresses ------------------------------------------------------------------------


class ListenAddress(_Model):
    """A socket address to listen on, written "HOST:PORT" ("[::1]:8080", ":8080").

    `str()` gives it back in that form, with brackets for IPv6.
    """

    host: Annotated[str, BeforeValidator(check_bind_host)]
    """Interface to bind: an IP address or a name. "0.0.0.0" (written ":PORT") is every IPv4
    interface, "::" every IPv6 one. Binding 127.0.0.1 keeps the proxy private to the machine."""
    port: Annotated[int, BeforeValidator(check_port)]
    """TCP port, 0..65535. 0 lets the kernel choose a free port (tests; read it back from the
    bound socket)."""
    tls: ListenTLS | None = None
    """TLS termination: {cert: FILE, key: FILE, ...} (see ListenTLS). Default null =
    cleartext. X-Forwarded-Proto then says https to the upstream."""
    h2c: Annotated[bool, BeforeValidator(_strict_bool)] = False
    """Also accept HTTP/2 without TLS from clients that start with the HTTP/2 preface ("prior
    knowledge", as `curl --http2-prior-knowledge` and gRPC clients do) on this cleartext
    listener. Default false: the listener speaks HTTP/1.1 only, with no cost per connection
    for telling the two apart. Not with tls (ALPN chooses there)."""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: object, info: ValidationInfo) -> object:
        if isinstance(data, str):
            host, port = parse_bind_address(data)
            return {"host": host, "port": port}
        if isinstance(data, Mapping) and _from_file(info):
            return cls._from_mapping(data)
        if not isinstance(data, Mapping | ListenAddress):
            parse_bind_address(data)  # raises the "expected HOST:PORT" message
        return data

    @classmethod
    def _from_mapping(cls, data: Mapping[Any, Any]) -> dict[str, object]:
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        extra: dict[str, object] = {}
        for key, value in data.items():
            if key in ("tls", "h2c"):
                extra[key] = value
            elif key != "address":
                problems.append(((str(key),), unknown_key_message(
                    key, ("address", "tls", "h2c")), value))
        host, port = "", 0
        if "address" not in data:
            problems.append((("address",), "missing required key", data))
        else:
            try:
                host, port = parse_bind_address(data["address"])
            except ValueError as exc:
                problems.append((("address",), str(exc), data["address"]))
        if problems:
            raise located("ListenAddress", problems)
        return {"host": host, "port": port, **extra}

    @model_validator(mode="after")
    def _h2c_cleartext(self) -> ListenAddress:
        if self.h2c and self.tls is not None:
            raise located("ListenAddress", [(("h2c",), "h2c is for cleartext listeners; with "
                                            "tls, HTTP/2 is chosen by ALPN (tls.http2)", True)])
        return self

    @property
    def socket_address(self) -> tuple[str, int]:
        return self.host, self.port

    def __str__(self) -> str:
        return format_address(self.host, self.port)


DEFAULT_LISTEN = ListenAddress(host="127.0.0.1", port=8080)


def _listen_list(value: object) -> object:
    if isinstance(value, str | Mapping):
        return [value]  # one address needs no list around it
    if isinstance(value, list | tuple) and not value:
        raise ValueError("expected at least one address to listen on")
    if not isinstance(value, list | tuple):
        raise ValueError(f'expected a list of "HOST:PORT" addresses, got {show(value)}')
    return value


def _no_duplicate_addresses(addresses: tuple[ListenAddress, ...]) -> tuple[ListenAddress, ...]:
    seen: dict[tuple[str, int], int] = {}
    problems: list[tuple[tuple[str | int, ...], str, object]] = []
    for index, address in enumerate(addresses):
        key = address.socket_address
        if address.port != 0 and key in seen:
            problems.append(((index,), f"same address as listen.{seen[key]} ({address})",
                             str(address)))
        seen.setdefault(key, index)
    if problems:
        raise located("listen", problems)
    return addresses


# --- limits ----------------------------------------------------------------------------------


def _optional_positive_duration(value: object) -> float | None:
    return None if value is None else _positive_duration(value)


def _optional_count(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"expected an integer >= 1 or null, got {show(value)}")


class Shed(_Model):
    """Load shedding (Envoy's overload manager): while the worker is overloaded, a new
    request gets 503 with Retry-After at once, before it is sent upstream or queued for a
    connection, so the requests already taken in finish in time instead of all of them
    waiting (proxy/admission.py). Each trigger is off when null; give at least one. Counted
    in veloxy_requests_refused_total{reason="loop_lag"|"queue"}."""

    loop_lag: Annotated[float | None, BeforeValidator(_optional_positive_duration)] = None
    """Shed while the event loop runs this late or later: the lateness of the worker's
    100 ms deadline tick (net/timers.py), taken at each tick, so a loop that stalled sheds
    for the next 100 ms after the stall shows. Default null = off. 200ms suits most; below
    ~50ms a garbage collection or a burst of TLS handshakes trips it."""
    queue: Annotated[int | None, BeforeValidator(_optional_count)] = None
    """Shed a route's new requests while this many requests or more wait for a connection to
    its upstream group (summed over the group's servers: the waiters beyond each pool's
    max_connections). Default null = off. The pool's own max_waiting refuses per server once
    its queue is full; this refuses earlier, by group, and before the request is built."""

    @model_validator(mode="after")
    def _some_trigger(self) -> Shed:
        if self.loop_lag is None and self.queue is None:
            raise ValueError("expected loop_lag or queue (or leave shed out)")
        return self


class Limits(_Model):
    """Per-connection limits on what a client may send, and the server's timeouts.

    They bound the memory and time one client can take; the error each one produces is the
    one in errors.py (414, 431, 413, 408).
    """

    max_request_line: Annotated[int, BeforeValidator(_limit_size)] = 8192
    """Longest request line (method, target, version) in bytes; longer gets 414 URI Too Long.
    Default 8192, as nginx and Node. Raise it for APIs with huge query strings; every byte is
    buffered per connection before the request is routed."""
    max_header_bytes: Annotated[int, BeforeValidator(_limit_size)] = 65536
    """Largest request head (request line and all header fields) in bytes; larger gets 431.
    Default 64 KiB: room for big cookies and tracing headers, while 10 000 idle clients still
    cost at most 640 MB of head buffers in the worst case."""
    max_body_bytes: Annotated[int | None, BeforeValidator(_optional_limit_size)] = None
    """Largest request body in bytes; larger gets 413 (up front when Content-Length says so,
    otherwise when the streamed body crosses it). Default null = unlimited: bodies are streamed
    to the upstream, not buffered, so the proxy's memory does not grow with them; set a limit
    to protect upstreams that do buffer."""
    header_timeout: PositiveDuration = 10.0
    """The whole request head must arrive within this time after the first byte (or after the
    previous response on a kept-alive connection), else 408 and close. Default 10s. Shorter
    sheds slowloris clients sooner; too short cuts off clients on slow mobile links."""
    idle_timeout: PositiveDuration = 60.0
    """An idle kept-alive client connection is closed after this long. Default 60s. Longer
    saves handshakes for returning clients; each idle connection holds a file descriptor and a
    little memory. Keep it above any load balancer's idle timeout in front of veloxy, so that
    the balancer, not veloxy, closes first (otherwise its next request may hit a closed
    socket)."""
    shutdown_timeout: Duration = 30.0
    """On shutdown or reload, requests in flight get this long to finish before their
    connections are closed. Default 30s; 0 closes at once. Longer is kinder to long
    downloads; shorter makes restarts quicker."""
    shutdown_delay: Duration = 0.0
    """On SIGTERM, keep accepting and serving this long before the shutdown proper (which
    then takes up to shutdown_timeout), while /healthz answers 503 and every response says
    Connection: close: a load balancer that health-checks /healthz takes the instance out
    and keep-alive clients move to other instances, so no request meets a closed listener
    or a connection closed under it (Traefik's requestAcceptGraceTimeout, Envoy's drain
    time). Default 0s: stop accepting at once. Set it to the balancer's time to notice
    (check interval x fall count, plus a margin); with a Kubernetes preStop sleep doing the
    endpoint part, a few seconds move the kept-alive clients off."""
    max_connections: Annotated[int | None, _optional_int_in(1)] = None
    """Most client connections open at once, per worker. At the cap veloxy stops accepting:
    new connections wait in the kernel's accept queue (tuning.backlog), as with HAProxy's
    maxconn, and are taken as soon as one closes; while some wait, veloxy asks kept-alive
    connections to leave (Connection: close on their next response; closed at once when
    idle between requests), as nginx closes idle ones. Default null: sized from the
    descriptor limit (`ulimit -n`) at start, leaving one descriptor per client connection for
    its upstream connection and 64 for the rest: (nofile - 64) // 2, e.g. 480 under
    `ulimit -n 1024`. Set it lower to protect the upstreams, or raise `ulimit -n`
    (`veloxy doctor` relates the two). Should accept() still fail for want of descriptors,
    veloxy stops accepting for 0.1 s (doubling to 1 s) and logs it once. Not on Windows,
    where the event loop's own server accepts (no cap, no back-off)."""
    shed: Shed | None = None
    """Load shedding: 503 at once for new requests while the event loop lags or an upstream
    group's wait queue is long (see limits.shed). Default null = off, and then it costs
    nothing per request; on, one Python call per request (docs/BENCHMARKS.md, "Rate limits
    and load shedding"). A reload does not change it (limits need a restart)."""


# --- routes ----------------------------------------------------------------------------------


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_name(value: object, what: str = "a name") -> str:
    """An upstream group name: used in routes, logs and metric labels."""
    if isinstance(value, str) and value and set(value) <= _NAME_CHARS:
        return value
    raise ValueError(f'expected {what} of letters, digits, "_", "-" or ".", got {show(value)}')


def _optional_route_host(value: object) -> str | None:
    return None if value is None else parse_route_host(value)


def _methods(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of methods like [GET, POST], got {show(value)}")
    if not value:
        raise ValueError("expected at least one method (leave methods out to match every "
                         "method)")
    methods: list[str] = []
    problems: list[tuple[tuple[str | int, ...], str, object]] = []
    for index, method in enumerate(value):
        if isinstance(method, str) and is_token(method):
            if method.upper() not in methods:
                methods.append(method.upper())
        else:
            problems.append(((index,), f"expected a method name like GET, got {show(method)}",
                             method))
    if problems:
        raise located("methods", problems)
    return tuple(methods)


def _is_field_value(text: str) -> bool:
    """RFC 9110 section 5.5: visible characters, space and tab; obs-text (Latin-1) allowed."""
    return all(char == "\t" or " " <= char <= "~" or "\x80" <= char <= "\xff" for char in text)


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list | tuple) and all(
            isinstance(pair, list | tuple) and len(pair) == 2 for pair in value):
        items = [tuple(pair) for pair in value]  # already normalized, built in code
    else:
        raise ValueError(f'expected a mapping of header names to values like '
                         f'{{X-Canary: "1"}}, got {show(value)}')
    headers: dict[str, str] = {}
    seen: set[str] = set()
    problems: list[tuple[tuple[str | int, ...], str, object]] = []
    for name, header_value in items:
        where = (str(name),)
        if not isinstance(name, str) or not is_token(name):
            problems.append((where, f"expected a header name, got {show(name)}", name))
            continue
        if name.lower() in seen:
            problems.append((where, "duplicate header name (names are case-insensitive)",
                             name))
        elif not isinstance(header_value, str):
            hint = " (quote it in YAML)" if isinstance(header_value, int | float | bool) else ""
            problems.append((where, f"expected a string, got {show(header_value)}{hint}",
                             header_value))
        elif not _is_field_value(header_value):
            problems.append((where, f"expected a header value of printable Latin-1 "
                                    f"characters, got {show(header_value)}", header_value))
        else:
            headers[name.lower()] = header_value
        seen.add(name.lower())
    if problems:
        raise located("headers", problems)
    return tuple(headers.items())


class RouteMatch(_Model):
    """What a request must look like to take a route. Every given condition must hold."""

    host: Annotated[str | None, BeforeValidator(_optional_route_host)] = None
    """Host header to match, without its port: exact ("api.example.com") or a wildcard for any
    subdomain ("*.example.com" matches a.example.com and a.b.example.com, not example.com).
    Lowercased. Default null = any host."""
    path_prefix: Annotated[str, BeforeValidator(_path_prefix)] = "/"
    """The request path must start with this string (a plain string comparison: "/api" also
    matches "/apix"; write "/api/" to match a segment). Default "/" = every path."""
    methods: Annotated[tuple[str, ...] | None, BeforeValidator(_methods)] = None
    """Request methods to match, uppercased. Default null = every method."""
    headers: Annotated[tuple[tuple[str, str], ...], BeforeValidator(_headers)] = ()
    """Request headers that must be present with exactly this value, as (lowercased name,
    value) pairs; written as a mapping {X-Canary: "1"}. Default: none. Each adds a lookup per
    request, so prefer host and path where they suffice."""



_RATE_UNITS = {"s": 1, "m": 60, "h": 3600}


def _rate(value: object) -> str:
    """ "100/s", "6000/m", "10/h": requests per second, minute or hour, normalized."""
    if isinstance(value, str):
        count, sep, unit = value.replace(" ", "").partition("/")
        if sep and count.isdigit() and int(count) >= 1 and unit in _RATE_UNITS:
            return f"{int(count)}/{unit}"
    raise ValueError(f'expected a rate like "100/s", "6000/m" or "10/h", got {show(value)}')


def _rate_key(value: object) -> str:
    """ "client_ip", "route" or "header:NAME" (the name lowercased)."""
    if isinstance(value, str):
        kind, sep, name = value.strip().partition(":")
        if not sep and kind in ("client_ip", "route"):
            return kind
        if sep and kind == "header" and is_token(name):
            return f"header:{name.lower()}"
    raise ValueError(f'expected client_ip, route or "header:NAME", got {show(value)}')


class RateLimit(_Model):
    """A token bucket per key (client address, a header's value, or the whole route): a
    request takes a token or gets 429 Too Many Requests, with Retry-After and the IETF
    RateLimit-Policy and RateLimit fields. Buckets are per worker: with `workers: N` a key
    may get up to N times the rate (and N bursts), as a client's connections spread over
    the workers by the kernel (SO_REUSEPORT)."""

    rate: Annotated[str, BeforeValidator(_rate)]
    """Requests allowed per second, minute or hour once the burst is spent: "100/s",
    "6000/m", "10/h". Required. Tokens come back continuously ("6000/m" is one every 10 ms),
    not all at once at the start of a minute."""
    burst: Annotated[int | None, BeforeValidator(_optional_count)] = None
    """Most requests a key may send at once after being quiet (the bucket's size). Default
    null = the rate's count ("100/s": 100). 1 spaces requests out evenly; a larger burst
    lets clients that open a page fetch its parts together."""
    key: Annotated[str, BeforeValidator(_rate_key)] = "client_ip"
    """Whose bucket a request takes from: client_ip (the connection's peer address: behind
    another proxy or a NAT, many clients share it), "header:NAME" (an API key, say; requests
    without the header share one bucket), or route (one bucket for everyone). Default
    client_ip."""
    max_keys: Annotated[int, _int_in(1)] = 10000
    """Most keys whose buckets are remembered per route and worker (least recently seen
    forgotten first): the memory bound under a flood of distinct addresses or header values
    (docs/BENCHMARKS.md gives the bytes per key). Exact while fewer keys than this are active
    within the time a bucket takes to refill (burst / rate); beyond, a forgotten key starts
    again with a full bucket. Default 10000."""

    @property
    def quota(self) -> tuple[int, int]:
        """(requests, window in seconds) as written: "6000/m" is (6000, 60)."""
        count, unit = self.rate.split("/")
        return int(count), _RATE_UNITS[unit]

    @property
    def per_second(self) -> float:
        count, window = self.quota
        return count / window

    @property
    def bucket(self) -> int:
        """The bucket's size: `burst`, or the rate's count."""
        return self.burst if self.burst is not None else self.quota[0]


class Route(_Model):
    """Send matching requests to an upstream group. Routes are tried in order; the first whose
    match holds wins, so put the most specific first."""

    match: RouteMatch = Field(default_factory=RouteMatch)
    """The conditions; default: every request."""
    upstream: Annotated[str, BeforeValidator(lambda value: check_name(value, "an upstream name"))]
    """Name of the upstream group (a key of `upstreams`). Required."""
    strip_prefix: Annotated[bool, BeforeValidator(_strict_bool)] = False
    """Remove `match.path_prefix` from the path before forwarding, keeping a leading "/"
    (prefix "/api/", request "/api/users" -> "/users"). Default false: the upstream sees the
    client's path unchanged, which keeps absolute links in its responses right."""
    rate_limit: RateLimit | None = None
    """Token buckets by client address, header or route; beyond them 429 with Retry-After
    (see routes[].rate_limit). Default null = no limit, at no cost per request."""
    max_concurrent: Annotated[int | None, BeforeValidator(_optional_count)] = None
    """Most requests of this route in flight at once per worker (from the complete request
    head to the end of the response; a WebSocket counts until its 101); beyond, 503 with
    Retry-After: 1 at once. Protects an upstream that slows down under concurrency. Default
    null = no cap, at no cost per request."""


def _route_list(value: object) -> object:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of routes, got {show(value)}")
    if not value:
        raise ValueError("expected at least one route")
    return value


# --- upstreams -------------------------------------------------------------------------------


def _upstream_url(value: object) -> str:
    return parse_upstream_url(value)[0]


class UpstreamServer(_Model):
    """One origin server of a group, written as a URL or {url: ..., weight: N}."""

    _derived = ("host", "port")

    url: Annotated[str, BeforeValidator(_upstream_url)]
    """ "http://HOST[:PORT]" or "https://HOST[:PORT]", normalized (lowercased host, the
    scheme's default port left out). No path: the client's path is forwarded as it is.
    https:// connects with TLS, verifying the server's certificate (see the group's tls)."""
    host: str = ""
    """Host name or IP address from the URL (IPv6 without brackets); what is connected to."""
    port: int = 80
    """Port from the URL; 80 when absent (443 for https)."""
    weight: Annotated[int, _int_in(1)] = 1
    """Share of the traffic relative to the group's other servers (weight 3 gets three times
    the requests of weight 1) under round_robin, random and hash; least_conn, p2c_ewma and
    adaptive divide a server's load by it. Default 1."""

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, data: object, info: ValidationInfo) -> object:
        if isinstance(data, str):
            url, host, port = parse_upstream_url(data)  # error located at the list item
            return {"url": url, "host": host, "port": port}
        if not isinstance(data, Mapping):
            if not isinstance(data, UpstreamServer):
                parse_upstream_url(data)  # raises "expected a URL like ..."
            return data
        if _from_file(info):
            data = {FOREIGN + key if key in cls._derived else key: value
                    for key, value in data.items()}
        if "url" in data and not ("host" in data and "port" in data):
            try:
                url, host, port = parse_upstream_url(data["url"])
            except ValueError:
                return data  # the url field reports it
            return {**data, "url": url, "host": host, "port": port}
        return data

    @property
    def secure(self) -> bool:
        """An https:// server: connections to it use TLS."""
        return self.url.startswith("https://")

    @property
    def authority(self) -> str:
        """host[:port] as it goes in a Host header (port left out when the scheme's)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.secure else 80) else f"{host}:{self.port}"


def _server_list(value: object) -> object:
    if not isinstance(value, list | tuple):
        raise ValueError(f'expected a list of server URLs like ["http://127.0.0.1:9001"], '
                         f"got {show(value)}")
    if not value:
        raise ValueError("expected at least one server")
    return value


def _no_duplicate_servers(servers: tuple[UpstreamServer, ...]) -> tuple[UpstreamServer, ...]:
    seen: dict[tuple[str, int], int] = {}
    problems: list[tuple[tuple[str | int, ...], str, object]] = []
    for index, server in enumerate(servers):
        key = (server.host, server.port)
        if key in seen:
            problems.append(((index,), f"same server as servers.{seen[key]} (use weight to "
                                       "send it more traffic)", server.url))
        seen.setdefault(key, index)
    if problems:
        raise located("servers", problems)
    return servers


def _upstream_protocol(value: object) -> str:
    if value in ("http1", "h2c", "h2"):
        return value
    raise ValueError(f'expected "http1", "h2c" or "h2", got {show(value)}')


def _balance(value: object) -> str:
    if isinstance(value, str) and value in BALANCE_POLICIES:
        return value
    raise ValueError(f"unknown policy {show(value)} "
                     f"(choose one of {', '.join(BALANCE_POLICIES)})")


class Timeouts(_Model):
    """How long to wait on an upstream server at each step of a request."""

    connect: PositiveDuration = 2.0
    """TCP connect to the upstream; on timeout the request may be retried on another server
    (502 if none succeeds). Default 2s: a healthy server on a LAN answers in well under a
    millisecond, so waiting longer mostly delays failing over."""
    response_header: PositiveDuration = 30.0
    """From the end of sending the request to the complete response head; else 504. Default
    30s. This bounds how long the application may think: raise it for slow reports, lower it
    to free connections from a stuck upstream sooner."""
    read: PositiveDuration = 60.0
    """Longest silence between two reads while the response body streams (not the total
    time); on timeout the client connection is closed, as the head was already sent. Default
    60s. Long-polling or server-sent events need more."""


class UpstreamTLS(_Model):
    """How veloxy checks the https:// servers of a group. The certificate is always
    verified unless insecure_skip_verify says otherwise."""

    ca: FilePath | None = None
    """PEM bundle of the CAs trusted for this group's servers. Default null = the system's
    trust store (what a browser would accept); set it for a private CA."""
    server_name: Annotated[str | None, BeforeValidator(
        lambda value: None if value is None else parse_route_host(value))] = None
    """Name sent by SNI and checked against the certificate. Default null = the host of each
    server's URL. Set it when servers are written as IP addresses, or behind a name that
    differs from the certificate's."""
    insecure_skip_verify: Annotated[bool, BeforeValidator(_strict_bool)] = False
    """Accept any certificate, unchecked. Default false. Only for tests and self-signed
    development servers: the traffic is encrypted but anyone in the path can read it."""


class PoolSettings(_Model):
    """The connection pool to each server of the group (one pool per server, per worker)."""

    max_connections: Annotated[int, _int_in(1)] = 1024
    """Most connections open to one server, busy or idle. Default 1024. The cap protects the
    upstream from a flood; requests beyond it wait (see max_waiting)."""
    max_idle: Annotated[int, _int_in(0)] = 1024
    """Most idle keep-alive connections kept per server; at most max_connections. Default:
    max_connections (1024), so that every connection a burst opened is reused: with fewer,
    a steady load of more concurrent clients than max_idle made veloxy close and reopen
    upstream connections all the time (docs/BENCHMARKS.md, "veloxy vs Go"). Lower it for
    upstreams that cannot hold many idle sockets (thread-per-connection servers). 0 disables
    reuse."""
    idle_timeout: PositiveDuration = 60.0
    """An idle pooled connection is closed after this long. Default 60s. Keep it below the
    upstream's own keep-alive timeout (Node's is 5s, nginx 75s): when the upstream closes
    first, a request can race the close and see a reset."""
    max_lifetime: PositiveDuration = 300.0
    """A connection is retired (not reused) after this age. Default 300s. It spreads load
    again after servers are added and lets DNS changes take effect; shorter costs more
    handshakes."""
    max_waiting: Annotated[int, _int_in(0)] = 1024
    """Requests that may queue for a connection when max_connections are busy; beyond that
    they fail at once with 503. Default 1024. 0 = fail fast; a long queue hides overload at
    the cost of latency."""
    wait_timeout: Duration = 5.0
    """Longest wait in that queue before 503. Default 5s; 0 = no waiting."""

    @model_validator(mode="after")
    def _idle_within_total(self) -> PoolSettings:
        if "max_idle" not in self.model_fields_set and self.max_idle > self.max_connections:
            object.__setattr__(self, "max_idle", self.max_connections)  # the default follows
        if self.max_idle > self.max_connections:
            raise located("pool", [(("max_idle",), f"max_idle ({self.max_idle}) is larger "
                                   f"than max_connections ({self.max_connections})",
                                   self.max_idle)])
        return self


class HealthCheck(_Model):
    """Active health checking: GET `path` on every server each `interval`.

    A server is taken out after `unhealthy_threshold` failures in a row (no answer within
    `timeout`, or a status other than 2xx/3xx) and put back after `healthy_threshold`
    successes. Leave the whole section out to rely on passive checks only (failed requests).
    """

    path: Annotated[str, BeforeValidator(_path)] = "/healthz"
    """Path requested on each server. Default "/healthz"."""
    interval: PositiveDuration = 5.0
    """Time between two checks of one server; at least `timeout`. Default 5s. Shorter notices
    a dead server sooner at the cost of more check requests (servers x workers / interval)."""
    timeout: PositiveDuration = 1.0
    """A check not answered within this counts as a failure. Default 1s."""
    healthy_threshold: Annotated[int, _int_in(1)] = 2
    """Successes in a row that bring a server back. Default 2; 1 reacts fastest but lets a
    flapping server in and out."""
    unhealthy_threshold: Annotated[int, _int_in(1)] = 3
    """Failures in a row that take a server out. Default 3; lower fails over sooner, higher
    tolerates a single slow answer."""

    @model_validator(mode="after")
    def _interval_covers_timeout(self) -> HealthCheck:
        if self.interval < self.timeout:
            raise located("health_check", [(
                ("interval",), f"interval ({format_duration(self.interval)}) is shorter than "
                f"timeout ({format_duration(self.timeout)})", self.interval)])
        return self


class PassiveHealth(_Model):
    """Passive health checking (outlier detection): watch the answers to real requests.

    A server whose requests fail `failures` times in a row (connect failure, reset or
    timeout before a complete answer, or a 5xx status) is ejected: it gets no new requests
    for `ejection`, doubled on each ejection that follows without a success in between, up
    to `max_ejection`. The last server of a group still taking traffic is never ejected, so a
    group that is entirely failing keeps trying (and answers 503 once every server is known
    to fail). Costs nothing on a successful request beyond one comparison.
    """

    failures: Annotated[int, _int_in(1)] = 5
    """Failures in a row that eject a server. Default 5 (Envoy's consecutive_5xx). Lower
    fails over sooner but lets a short burst of application errors (a 500 for one bad
    input, repeated) take a healthy server out."""
    ejection: PositiveDuration = 10.0
    """How long the first ejection lasts. Default 10s: long enough to stop hammering a
    restarting server, short enough that a server back from a crash is used again soon."""
    max_ejection: PositiveDuration = 300.0
    """Ceiling of the doubling ejection time. Default 5m; at least `ejection`."""

    @model_validator(mode="after")
    def _max_covers_base(self) -> PassiveHealth:
        if self.max_ejection < self.ejection:
            raise located("passive_health", [(
                ("max_ejection",), f"max_ejection ({format_duration(self.max_ejection)}) is "
                f"shorter than ejection ({format_duration(self.ejection)})", self.max_ejection)])
        return self


class UpstreamGroup(_Model):
    """A named set of servers that share a balancing policy, timeouts and a pool shape."""

    _derived = ("name",)

    name: Annotated[str, BeforeValidator(lambda value: check_name(value, "a group name"))]
    """The group's key under `upstreams` (filled in by the loader); used by routes, logs and
    metric labels, hence letters, digits, "_", "-" and "." only."""
    servers: Annotated[tuple[UpstreamServer, ...], BeforeValidator(_server_list),
                       AfterValidator(_no_duplicate_servers)]
    """The origin servers, at least one. Required."""
    balance: Annotated[BalancePolicy, BeforeValidator(_balance)] = "round_robin"
    """How a server is picked: round_robin (default: even spread, nothing to tune),
    least_conn (fewest requests in flight; better when request costs vary), random, p2c_ewma
    (two random choices, take the lower moving-average latency times requests in flight;
    best tail latency with uneven servers), hash (same key -> same server, see hash_key;
    for caches and sticky sessions, uneven if keys are skewed), adaptive (veloxy adapts the
    choice to observed latencies, load and errors; see veloxy/upstream/balance.py)."""
    hash_key: Annotated[str, BeforeValidator(parse_hash_key)] = "client_ip"
    """What `balance: hash` hashes: client_ip (default), "header:NAME" or "cookie:NAME"
    (requests without it fall back to client_ip). Ignored by the other policies, so that
    switching balance back and forth needs no other edit."""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    """Connect, response-head and read timeouts; default: 2s, 30s, 60s (see Timeouts)."""
    pool: PoolSettings = Field(default_factory=PoolSettings)
    """Connection pool limits; default: each field of PoolSettings at its own default."""
    tls: UpstreamTLS | None = None
    """TLS settings for the group's https:// servers (CA, server name, verification).
    Default null = verify against the system's trust store with each URL's host. Only with
    https:// servers."""
    protocol: Annotated[Literal["http1", "h2c", "h2"],
                        BeforeValidator(_upstream_protocol)] = "http1"
    """What the servers speak: "http1" (default: HTTP/1.1, keep-alive pools; every client
    protocol maps onto it), "h2c" (HTTP/2 without TLS, prior knowledge: gRPC backends) or
    "h2" (HTTP/2 over TLS, agreed by ALPN: https:// servers, verified as `tls` says).
    With h2c or h2, requests from HTTP/2 clients go upstream as HTTP/2 streams on one shared
    connection per server, trailers included (grpc-status); HTTP/1.1 clients get 503, since
    gRPC needs HTTP/2 end to end. h2c servers are http:// URLs, h2 ones https:// URLs (a
    server that does not choose h2 by ALPN is a failed connect); balancing, retries and
    passive and active health (probes as HTTP/2 streams) work as for HTTP/1.1 groups."""
    retries: Annotated[int, _int_in(0, 10)] = 1
    """How many times a failed attempt is tried again on another server, only when nothing
    reached the application (connect failure, reset before any byte) or the method is
    idempotent and the body can be replayed. Default 1; 0..10. Each retry can multiply load
    on an already failing group, so keep it small."""
    health_check: HealthCheck | None = None
    """Active health checks; default null = none (passive checks only)."""
    passive_health: PassiveHealth | None = Field(default_factory=PassiveHealth)
    """Ejection of servers whose requests keep failing; default: each field of PassiveHealth
    at its own default. null turns it off (every server keeps its share whatever happens;
    retries still avoid a server that just failed)."""
    dns_ttl: Duration = 30.0
    """How long the addresses of a server written with a host name are used before the
    name is resolved again (servers are added and removed as the answer changes, so a group
    can follow a Kubernetes headless service or Consul DNS). Default 30s; 0 = resolve once at
    start-up. The system resolver (getaddrinfo) does not report the records' own TTL, hence
    this setting. IPv4 addresses are used when the name has any, else IPv6 (Envoy's
    V4_PREFERRED). Servers written as IP addresses are never resolved."""

    @property
    def hash_source(self) -> tuple[str, str | None]:
        """hash_key split: ("client_ip", None), ("header", "x-user") or ("cookie", "sid")."""
        kind, _, name = self.hash_key.partition(":")
        return kind, name or None

    @model_validator(mode="after")
    def _tls_needs_https(self) -> UpstreamGroup:
        if self.tls is not None and not any(server.secure for server in self.servers):
            raise located("UpstreamGroup", [(("tls",), "tls applies to https:// servers, and "
                                            "this group has none", "tls")])
        if self.protocol in ("h2c", "h2"):
            h2 = self.protocol == "h2"
            problems: list[tuple[tuple[str | int, ...], str, object]] = [
                (("servers", index),
                 "h2 is HTTP/2 over TLS: use an https:// URL (protocol: h2c for cleartext)"
                 if h2 else "h2c is HTTP/2 without TLS: use an http:// URL "
                            "(protocol: h2 for TLS)",
                 server.url)
                for index, server in enumerate(self.servers) if server.secure != h2]
            if problems:
                raise located("UpstreamGroup", problems)
        return self


def _name_groups(value: object, info: ValidationInfo) -> object:
    """Give each group the name of its key; in a file, `name:` inside a group is unknown.

    A key that is not a valid name is still passed on as the group's name, so that the name
    field reports it (at upstreams.KEY.name, which the renderer shortens to upstreams.KEY)
    while the rest of every group is still checked.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of group names to upstream groups, "
                         f"got {show(value)}")
    if not value:
        raise ValueError("expected at least one upstream group")
    groups: dict[str, object] = {}
    problems: list[tuple[tuple[str | int, ...], str, object]] = []
    for key, group in value.items():
        if isinstance(group, Mapping):
            if _from_file(info):
                group = {FOREIGN + k if k == "name" else k: v for k, v in group.items()}
            group = {"name": key, **group}
        elif isinstance(group, UpstreamGroup) and group.name != key:
            problems.append(((str(key),), f"group named {show(group.name)} under key "
                                          f"{show(key)}", group.name))
        groups[str(key)] = group
    if problems:
        raise located("upstreams", problems)
    return groups


def _serialize_map(value: Mapping[str, Any], handler: Any) -> Any:
    return handler(dict(value))


# --- tuning ----------------------------------------------------------------------------------

#: Socket buffer sizes accepted by `tuning.*.recv_buffer` / `send_buffer`.
_BUFFER_MIN, _BUFFER_MAX = 4096, 1 << 30


def _socket_buffer(value: object) -> int | None:
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ValueError:
        raise ValueError(f'expected a size in bytes like 262144 or "256k", or null, '
                         f"got {show(value)}") from None
    if not _BUFFER_MIN <= size <= _BUFFER_MAX:
        raise ValueError(f'expected a size from 4k to 1g, got {show(value)}')
    return size


SocketBuffer = Annotated[int | None, BeforeValidator(_socket_buffer)]


class SocketOptions(_Model):
    """TCP socket options for one side of the proxy. Every default leaves the socket as the
    event loop and the kernel make it, at no cost per connection; a value set here costs a
    setsockopt() per connection (downstream buffers: none, they are set once on the
    listening socket and inherited by every accepted connection)."""

    tcp_nodelay: Annotated[bool, BeforeValidator(_strict_bool)] = True
    """TCP_NODELAY: send small segments at once instead of holding them until the previous
    one is acknowledged (Nagle's algorithm). Default true, which is what uvloop and asyncio
    already set on every TCP connection (so true costs nothing). false turns Nagle back on:
    fewer, fuller packets for a client that writes in many small pieces, but a response
    written in several writes can wait up to one delayed-ACK interval (40 ms on Linux)."""
    recv_buffer: SocketBuffer = None
    """SO_RCVBUF in bytes ("256k"), 4k..1g. Default null = the kernel's autotuning
    (net.ipv4.tcp_rmem, which grows the buffer with the connection's bandwidth-delay
    product). A fixed size turns autotuning off for the socket: smaller bounds the memory of
    many slow connections, larger helps only on links with a large bandwidth-delay product.
    Linux caps it at net.core.rmem_max (see `veloxy doctor`) and reserves twice the value
    for bookkeeping."""
    send_buffer: SocketBuffer = None
    """SO_SNDBUF in bytes ("256k"), 4k..1g. Default null = the kernel's autotuning
    (net.ipv4.tcp_wmem). A smaller buffer makes the transport's write-side flow control
    (and so veloxy's backpressure between client and upstream) engage sooner. Linux caps it
    at net.core.wmem_max (see `veloxy doctor`)."""

    @property
    def is_default(self) -> bool:
        """True when nothing is to be set on the socket (the zero-cost path)."""
        return self.tcp_nodelay and self.recv_buffer is None and self.send_buffer is None


def _optional_threshold(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10_000_000:
        return value
    raise ValueError(f"expected an integer from 1 to 10000000, or null, got {show(value)}")


class GcSettings(_Model):
    """CPython's cyclic garbage collector in each serving process (the Python analogue of a
    Go proxy's GOGC). Applied once per process when its listeners and upstream pools are
    built, before it accepts connections (in each worker, and in the supervisor before it
    forks them). Reference counting frees almost every object of a request at once; the
    collector only looks for cycles, but it runs every `gen0_threshold` net allocations."""

    freeze_after_start: Annotated[bool, BeforeValidator(_strict_bool)] = False
    """Run gc.collect() then gc.freeze() once start-up is done: every object alive then
    (modules, config, routes, pools) moves to a permanent generation that later collections
    never scan. In the supervisor, before the fork, this also keeps the collector from
    writing to (and so copying) the parent's pages in every worker. Default false. Measured
    on this project's 2-core box it made no difference to CPU per request (docs/BENCHMARKS.md,
    "Tuning: GC"): the collector's time goes to young objects."""
    # The default is 50000, not CPython's 700: every client connection allocates a few dozen
    # tracked objects (protocol, transport, parser, exchange), so with 700 the young
    # collections ran every few short connections. What it saves and the memory it costs:
    # docs/BENCHMARKS.md,
    # "Short connections and 1000 connections (issue 12, the close path)". It does not
    # lengthen the fixed-rate tail: at c=1000, 10k req/s, 700 gave 30-40 ms full collections
    # every few seconds and 50000 no collection at all in steady state (docs/BENCHMARKS.md,
    # "The GC threshold and the fixed-rate tail (issue 12)").
    gen0_threshold: Annotated[int | None, BeforeValidator(_optional_threshold)] = 50_000
    """Allocations (minus deallocations) that trigger a young-generation collection
    (gc.set_threshold's first value; the older generations' thresholds are kept). Default
    50000: fewer collections than CPython's own 700, so less CPU per connection and per
    request, for a few MiB more memory and a rarer, slightly longer pause. null = leave
    CPython's threshold as it is. 1..10000000."""


#: listen()'s backlog unless `tuning.backlog` says otherwise: the one default, read by the
#: serving processes (server.py, cli.py) and by `veloxy doctor`'s checks.
DEFAULT_BACKLOG = 4096


class Tuning(_Model):
    """Knobs of the serving processes that the proxy study names: the listen backlog, TCP
    options of client (downstream) and upstream sockets, and the garbage collector. The
    defaults are right for most deployments; docs/TUNING.md has the measurements. Applied
    when a serving process starts: changing them takes a restart, not a reload."""

    backlog: Annotated[int, _int_in(1, 65535)] = DEFAULT_BACKLOG
    """Length of each listening socket's queue of connections accepted by the kernel and
    not yet by veloxy (listen()'s backlog). Default 4096. The kernel caps it at
    net.core.somaxconn (`veloxy doctor` checks); a burst of connects beyond the queue is
    dropped and retried by clients after 1 s, which shows as max latency."""
    downstream: SocketOptions = Field(default_factory=SocketOptions)
    """Options of the sockets clients connect on; default: each field of SocketOptions at
    its own default (nothing set)."""
    upstream: SocketOptions = Field(default_factory=SocketOptions)
    """Options of the pooled connections to upstream servers (every group; not health
    checks); default: each field of SocketOptions at its own default (nothing set)."""
    gc: GcSettings = Field(default_factory=GcSettings)
    """Garbage-collector settings; default: CPython's (no freeze, threshold 700)."""
    malloc_mmap_threshold: Annotated[int | None,
                                     BeforeValidator(_optional_mmap_threshold)] = None
    """glibc only: allocations of at least this many bytes get their own mmap and go back to
    the system when freed (mallopt M_MMAP_THRESHOLD, applied in each serving process at
    start). Default null = glibc's own, which starts at 128 KiB and rises to the largest
    block freed so far: after uvloop frees one 256 KiB TLS read buffer (one per TLS
    connection), later ones come from the heap, whose high-water mark then creeps up with
    the number of TLS connections open at once. "128k" keeps them mmapped: flatter RSS over
    TLS, at a few system calls per TLS connection and per block of that size (large
    bodies). docs/TUNING.md, "Memory: glibc's allocator". 4096..33554432 (32 MiB)."""


# --- observability ---------------------------------------------------------------------------


def _log_path(value: object) -> str:
    if isinstance(value, str) and value.strip() and value.isprintable():
        return value
    raise ValueError(f'expected "-" (standard output) or a file path, got {show(value)}')


def _log_format(value: object) -> str:
    if value in ("combined", "json"):
        return value
    raise ValueError(f"expected combined or json, got {show(value)}")


class AccessLog(_Model):
    """One line per request, written by a background thread so that a slow disk or pipe
    never stalls the event loop (lines are dropped, and counted, rather than wait)."""

    path: Annotated[str, BeforeValidator(_log_path)] = "-"
    """Where the lines go: "-" = standard output (default), else a file, appended to and
    reopened on reload (so a reload after log rotation starts the new file)."""
    format: Annotated[Literal["combined", "json"], BeforeValidator(_log_format)] = "combined"
    """combined (default): Apache/nginx's combined format, for the tools that read it.
    json: one object per line with time, client, method, path, status, bytes, duration,
    route, upstream server, upstream duration and trace id (durations in seconds)."""


def _otlp_endpoint(value: object) -> str:
    from urllib.parse import urlsplit

    if isinstance(value, str) and value.isprintable() and " " not in value:
        try:
            parts = urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (
                parts.port is None or parts.port > 0)  # .port: ValueError when not a number
        except ValueError:
            valid = False
        if valid:
            return value
    raise ValueError(f'expected an http:// or https:// URL like '
                     f'"http://127.0.0.1:4318/v1/traces", got {show(value)}')


def _service_name(value: object) -> str:
    if isinstance(value, str) and value.strip() and value.isprintable():
        return value
    raise ValueError(f"expected a service name, got {show(value)}")


def _ratio(value: object) -> float:
    if (isinstance(value, int | float) and not isinstance(value, bool)
            and 0.0 <= value <= 1.0):
        return float(value)
    raise ValueError(f"expected a number from 0 to 1, got {show(value)}")


#: The packages of the otel extra (pyproject.toml), as (module, distribution).
OTEL_MODULES = (("opentelemetry.sdk.trace", "opentelemetry-sdk"),
                ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                 "opentelemetry-exporter-otlp-proto-http"))


def _otel_installed(value: OtelExport | None) -> OtelExport | None:
    """The export needs the otel extra: say so when the config is loaded (`veloxy check`
    too), not when the first span is due."""
    if value is None:
        return value
    from importlib.util import find_spec

    missing = []
    for module, distribution in OTEL_MODULES:
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing (or blocked)
            found = False
        if not found:
            missing.append(distribution)
    if missing:
        raise ValueError(f"OpenTelemetry export needs the otel extra, which is not installed "
                         f"(missing {', '.join(missing)}): pip install 'veloxy[otel]'")
    return value


class OtelExport(_Model):
    """OpenTelemetry export of one SERVER span per request over OTLP/HTTP (protobuf), with
    the attributes of the OpenTelemetry HTTP semantic conventions. Needs the otel extra
    (`pip install 'veloxy[otel]'`). The span's trace id and parent are the W3C context
    veloxy propagates, and its span id is the one sent upstream in traceparent, so the
    upstream's spans nest under it. Spans are batched and sent by the SDK's background
    thread (BatchSpanProcessor: the event loop never waits for the collector; when the
    queue is full, spans are dropped). The SDK's environment variables apply: OTEL_BSP_*
    (batch delay, sizes) and OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION. Pending
    spans are flushed on a graceful stop (for at most 2 s)."""

    endpoint: Annotated[str, BeforeValidator(_otlp_endpoint)] = (
        "http://localhost:4318/v1/traces")
    """The collector's OTLP/HTTP traces URL, path included. Default
    "http://localhost:4318/v1/traces" (an OpenTelemetry Collector on the same machine)."""
    service_name: Annotated[str, BeforeValidator(_service_name)] = "veloxy"
    """The service.name resource attribute of every span; default "veloxy". Name each
    proxy deployment apart when several report to the same backend."""
    sample_ratio: Annotated[float, BeforeValidator(_ratio)] = 1.0
    """Share of the traces veloxy starts that are sampled (exported, and sent upstream
    with the sampled flag), decided from the trace id as OpenTelemetry's TraceIdRatioBased
    sampler does; default 1.0 (every one). A client's traceparent decides for its own
    trace by its sampled flag (parent-based), whatever the ratio. Lower it to cut the
    export's CPU and traffic under heavy load."""


class Tracing(_Model):
    """W3C Trace Context propagation (https://www.w3.org/TR/trace-context/): each request
    sent upstream carries a traceparent with the client's trace id (a new one when the
    client sent none or an invalid one) and a new span id for the proxy's hop; tracestate
    passes unchanged. Leave the section out to forward the client's headers untouched."""

    sampled: Annotated[bool, BeforeValidator(_strict_bool)] = True
    """The sampled flag of a traceparent veloxy starts (requests that came without one):
    true (default) asks the services behind veloxy to record the trace; a client's own
    flag is always passed on."""
    otel: Annotated[OtelExport | None, AfterValidator(_otel_installed)] = None
    """OpenTelemetry span export (see OtelExport); default null = off: nothing of
    OpenTelemetry is imported and requests pay nothing for it."""


# --- the whole config ------------------------------------------------------------------------


class Config(_Model):
    """Everything `veloxy serve` needs, checked as a whole. Built by `parse_config`,
    `load_config` or `config_from_flags`; replaced, never changed, on reload."""

    _derived = ("source",)

    listen: Annotated[tuple[ListenAddress, ...], BeforeValidator(_listen_list),
                      AfterValidator(_no_duplicate_addresses)] = (DEFAULT_LISTEN,)
    """Addresses to accept client connections on: "HOST:PORT", "[::1]:PORT", ":PORT" (every
    IPv4 interface) or {address: "HOST:PORT", tls: {...}, h2c: BOOL}. With tls (see
    listen[].tls) the listener terminates TLS and offers HTTP/2 by ALPN; h2c: true lets a
    cleartext listener also take HTTP/2 with prior knowledge. Default ["127.0.0.1:8080"]:
    private to the machine until you say otherwise."""
    workers: Annotated[int | Literal["auto"], BeforeValidator(parse_workers)] = 1
    """Worker processes sharing the listening sockets (SO_REUSEPORT where available). "auto"
    = CPUs this process may use, cgroup quota included (see `resolve_workers`). Default 1:
    predictable and easiest to debug; each worker adds one core of throughput and its own
    upstream pools (so upstreams see workers x pool connections)."""
    workers_mode: Literal["auto", "fork", "spawn"] = "auto"
    """How worker processes start (workers > 1). "fork": copies of the supervisor, each with
    its own SO_REUSEPORT listening socket (POSIX). "spawn": fresh interpreters (`python -m
    veloxy` again) handed listening sockets the supervisor made (descriptor inheritance on
    POSIX, socket.share() on Windows): with SO_REUSEPORT one set per worker, kept across its
    restarts; on Windows one set all workers accept from. Default "auto": fork where the
    platform can fork, spawn on Windows. Spawn starts slower (a fresh interpreter per
    worker); throughput: docs/BENCHMARKS.md, "Worker modes". TLS session tickets: forked
    workers inherit the supervisor's ticket key; spawned ones are handed it and set it
    through libssl (Python's ssl has no call for it). Where that cannot be done (a Python
    other than CPython, or libssl out of ctypes' reach, e.g. Windows) a spawned worker
    logs a warning and keeps its own key: a client then resumes only on the worker that
    issued its ticket, and does a full handshake elsewhere."""
    admin: ListenAddress | None = None
    """Address of the admin listener (/metrics, /healthz, /status, /reload). Default null =
    off. Keep it on a private interface: /reload changes what the proxy does."""
    limits: Limits = Field(default_factory=Limits)
    """Client-side limits and timeouts; default: each field of Limits at its own default."""
    routes: Annotated[tuple[Route, ...], BeforeValidator(_route_list)]
    """Ordered routes; the first match wins; at least one. Required."""
    upstreams: Annotated[Mapping[str, UpstreamGroup], BeforeValidator(_name_groups),
                         AfterValidator(FrozenMap), WrapSerializer(_serialize_map)]
    """Upstream groups by name; at least one. Required."""
    http2: Http2Settings = Field(default_factory=Http2Settings)
    """HTTP/2 limits and flow-control windows for clients that speak it (TLS listeners with
    ALPN h2, cleartext ones with h2c); default: each field of Http2Settings at its own
    default."""
    tuning: Tuning = Field(default_factory=Tuning)
    """Listen backlog, socket options, garbage collector; default: each field of Tuning at
    its own default."""
    access_log: AccessLog | None = None
    """One line per request (see AccessLog); default null = off."""
    tracing: Tracing | None = None
    """W3C traceparent/tracestate propagation (see Tracing); default null = off (headers
    pass as the client sent them)."""
    source: str | None = None
    """Where this config came from (file path), for messages and /status; null when built
    from command-line flags. Not a key of the file."""

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        defined = list(self.upstreams)
        for index, route in enumerate(self.routes):
            if route.upstream not in self.upstreams:
                problems.append((("routes", index, "upstream"),
                                 unknown_upstream_message(route.upstream, defined),
                                 route.upstream))
        listening = [address.socket_address for address in self.listen]
        admin = self.admin
        if admin is not None and admin.port != 0 and admin.socket_address in listening:
            problems.append((("admin",), f"same address as "
                             f"listen.{listening.index(admin.socket_address)} ({admin})",
                             str(admin)))
        if admin is not None and (admin.tls is not None or admin.h2c):
            problems.append((("admin",), "the admin listener serves cleartext HTTP/1.1 only "
                                         "(no tls, no h2c)", str(admin)))
        if problems:
            raise located("Config", problems)
        return self
