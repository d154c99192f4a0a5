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
    "Config",
    "FrozenMap",
    "HealthCheck",
    "Limits",
    "ListenAddress",
    "PassiveHealth",
    "PoolSettings",
    "Route",
    "RouteMatch",
    "Timeouts",
    "UpstreamGroup",
    "UpstreamServer",
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
        for key, value in data.items():
            if key == "tls":
                problems.append(((key,), "TLS termination is not supported yet", value))
            elif key != "address":
                problems.append(((str(key),), unknown_key_message(key, ("address",)), value))
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
        return {"host": host, "port": port}

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
    seen: dict[ListenAddress, int] = {}
    problems: list[tuple[tuple[str | int, ...], str, object]] = []
    for index, address in enumerate(addresses):
        if address.port != 0 and address in seen:
            problems.append(((index,), f"same address as listen.{seen[address]} ({address})",
                             str(address)))
        seen.setdefault(address, index)
    if problems:
        raise located("listen", problems)
    return addresses


# --- limits ----------------------------------------------------------------------------------


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
    """ "http://HOST[:PORT]", normalized (lowercased host, ":80" left out). Only http:// for
    now, and no path: the client's path is forwarded as it is."""
    host: str = ""
    """Host name or IP address from the URL (IPv6 without brackets); what is connected to."""
    port: int = 80
    """Port from the URL, 80 when absent."""
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
    def authority(self) -> str:
        """host[:port] as it goes in a Host header (port left out when 80)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


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


class PoolSettings(_Model):
    """The connection pool to each server of the group (one pool per server, per worker)."""

    max_connections: Annotated[int, _int_in(1)] = 1024
    """Most connections open to one server, busy or idle. Default 1024. The cap protects the
    upstream from a flood; requests beyond it wait (see max_waiting)."""
    max_idle: Annotated[int, _int_in(0)] = 1024
    """Most idle keep-alive connections kept per server; at most max_connections. Default:
    max_connections (1024), so that every connection a burst opened is reused: with fewer,
    a steady 1000 concurrent clients made veloxy close and reopen ~1000 upstream connections
    a second (benchmarks/proxy_compare.py, c=1000). Lower it for upstreams that cannot hold
    many idle sockets (thread-per-connection servers). 0 disables reuse."""
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


# --- the whole config ------------------------------------------------------------------------


class Config(_Model):
    """Everything `veloxy serve` needs, checked as a whole. Built by `parse_config`,
    `load_config` or `config_from_flags`; replaced, never changed, on reload."""

    _derived = ("source",)

    listen: Annotated[tuple[ListenAddress, ...], BeforeValidator(_listen_list),
                      AfterValidator(_no_duplicate_addresses)] = (DEFAULT_LISTEN,)
    """Addresses to accept client connections on: "HOST:PORT", "[::1]:PORT", ":PORT" (every
    IPv4 interface) or {address: "HOST:PORT"}. Default ["127.0.0.1:8080"]: private to the
    machine until you say otherwise."""
    workers: Annotated[int | Literal["auto"], BeforeValidator(parse_workers)] = 1
    """Worker processes sharing the listening sockets (SO_REUSEPORT where available). "auto"
    = CPUs this process may use, cgroup quota included (see `resolve_workers`). Default 1:
    predictable and easiest to debug; each worker adds one core of throughput and its own
    upstream pools (so upstreams see workers x pool connections)."""
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
        if self.admin is not None and self.admin.port != 0 and self.admin in self.listen:
            problems.append((("admin",), f"same address as listen.{self.listen.index(self.admin)}"
                             f" ({self.admin})", str(self.admin)))
        if problems:
            raise located("Config", problems)
        return self
