"""Prometheus metrics as plain numbers: handles bound once, counted with an increment.

Why not prometheus_client on the hot path: its counters take a lock per `inc()` and a label
lookup (`labels(...)`) is a dict walk with string formatting, both per request. Here every
per-request number lives on a handle that the proxy binds when it builds a route or an
upstream server (start-up and reload), as Envoy binds its stat handles; counting is an
attribute or list-slot increment, a histogram observation one `bisect` over a precomputed
bound list. Everything else (pool gauges, health, connections, process numbers) is read
from the live objects when scraped, at no cost per request.

A scrape turns the handles into a *snapshot*: plain JSON-able data, `{family: [[labels,
value], ...]}`. Snapshots of several workers are merged (`merge`, by each family's rule:
sum, or min/max for the few gauges where a sum means nothing) and rendered to the text
exposition format (`render`). One worker's numbers are a merge of one.

Handles outlive reloads: `MetricsRegistry.route(label)` and `.server(group, address)` return
the same handle for the same labels, so a counter does not drop back to zero when a reload
rebuilds the route or the server it counts for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

#: Upper bounds of the latency histograms' buckets, seconds: 0.5 ms to 10 s (a proxy's
#: answers range from sub-millisecond cache hits to slow reports); +Inf is implicit.
BOUNDS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                             0.5, 1.0, 2.5, 5.0, 10.0)
#: BOUNDS as a list (bisect on a list is a little faster): what the hot path bisects.
BOUNDS_LIST = list(BOUNDS)

#: Reasons of the requests net.server refuses, by status.
BAD_REQUEST_REASONS = {400: "bad_request", 408: "timeout", 413: "body_too_large",
                       414: "uri_too_long", 431: "headers_too_large", 501: "not_implemented"}

Snapshot = dict[str, list[list[Any]]]

#: Status codes are three digits (the parsers refuse others): counts by status are lists
#: indexed by it, the cheapest increment there is (no hashing, no tuple key).
STATUS_SLOTS = 1000


def _count_list() -> list[int]:
    return [0] * STATUS_SLOTS


class RouteMetrics:
    """Requests answered on one route (or on none: the 404s), by method and status.

    Counted by the proxy's logging phase (proxy/logging_phase.py), inline: `counts[method]
    [status] += 1`, `buckets[bisect_left(BOUNDS_LIST, seconds)] += 1`, `sum += seconds`.
    ServerMetrics' `codes`, `buckets` and `sum` are counted the same way."""

    __slots__ = ("buckets", "counts", "label", "refused", "sum")

    def __init__(self, label: str) -> None:
        self.label = label
        #: Requests refused before going upstream, by reason (proxy/admission.py: rate
        #: limit, max_concurrent, load shedding); counted on those rare paths only.
        self.refused: dict[str, int] = {}
        #: method -> counts indexed by status. Methods are those llhttp accepts, a fixed
        #: list, so the label set stays bounded.
        self.counts: dict[bytes, list[int]] = {}
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0

    def method(self, method: bytes) -> list[int]:
        """The counts of a method seen for the first time (`counts[method]` after)."""
        return self.counts.setdefault(bytes(method), _count_list())


class ServerMetrics:
    """One upstream server (group, address): answers by status, their latency, and the
    pools and servers bound to these labels (read when scraped)."""

    __slots__ = ("_base", "_sources", "address", "buckets", "codes", "group", "recent", "sum")

    def __init__(self, group: str, address: str) -> None:
        self.group = group
        self.address = address
        #: Responses by status (indexed by it).
        self.codes = _count_list()
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0
        #: Live `upstream.Endpoint` objects with these labels (a reload or a DNS change may
        #: replace one; until its pool has closed both are counted).
        self._sources: list[Any] = []
        #: Pool counters of sources gone for good: created, reused, connect failures.
        self._base = [0, 0, 0]
        #: (time, histogram) as of the last two window ticks, for /status's recent latency.
        self.recent: list[tuple[float, list[float]]] = []

    def bind(self, server: Any) -> None:
        if server not in self._sources:
            self._sources.append(server)

    def pool_numbers(self) -> tuple[list[int], list[int], list[bool]]:
        """([open, idle, in_use, waiting], [created, reused, connect_failures], health of
        each live source). Sources whose pool closed and emptied are folded into the base."""
        gauges = [0, 0, 0, 0]
        counters = list(self._base)
        health: list[bool] = []
        kept = []
        for server in self._sources:
            pool = server.pool
            stats = pool.stats
            numbers = (stats.created, stats.reused, stats.connect_failures)
            if pool.closed and pool.open == 0:
                for i, n in enumerate(numbers):
                    self._base[i] += n
            else:
                kept.append(server)
                health.append(bool(server.available) and not pool.closed)
                gauges[0] += pool.open
                gauges[1] += pool.idle_count
                gauges[2] += pool.in_use
                gauges[3] += pool.waiting
            for i, n in enumerate(numbers):
                counters[i] += n
        self._sources = kept
        return gauges, counters, health

    def tick(self, now: float) -> None:
        """Window tick (every WINDOW seconds): keep the histogram of the last two ticks."""
        self.recent = [*self.recent[-1:], (now, [*self.buckets, self.sum])]

    def recent_histogram(self, now: float, started: float) -> tuple[float, list[float]]:
        """(seconds covered, histogram of the answers since the older kept tick), i.e. the
        last WINDOW to 2 x WINDOW seconds (or since `started`, before two ticks)."""
        current = [*self.buckets, self.sum]
        if not self.recent:
            return now - started, current
        since, old = self.recent[0]
        return now - since, [a - b for a, b in zip(current, old, strict=True)]


class GroupMetrics:
    """One upstream group: retries (a rare path: counted where they happen)."""

    __slots__ = ("name", "retries")

    def __init__(self, name: str) -> None:
        self.name = name
        self.retries = 0


#: Seconds between two window ticks: /status's "recent latency" covers the last 10-20 s.
WINDOW = 10.0


class MetricsRegistry:
    """One worker's handles, and the sources read at scrape time."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteMetrics] = {}
        self.servers: dict[tuple[str, str], ServerMetrics] = {}
        self.groups: dict[str, GroupMetrics] = {}
        #: Requests no route matched (404), counted under route="".
        self.unrouted = self.route("")
        #: Listener groups' connection registries (net.server.ConnectionRegistry).
        self.downstream: list[Any] = []
        #: Extra families computed when scraped (process numbers, loop lag, reloads).
        self.collectors: list[Callable[[], Snapshot]] = []

    def route(self, label: str) -> RouteMetrics:
        handle = self.routes.get(label)
        if handle is None:
            handle = self.routes[label] = RouteMetrics(label)
        return handle

    def server(self, group: str, address: str) -> ServerMetrics:
        handle = self.servers.get((group, address))
        if handle is None:
            handle = self.servers[group, address] = ServerMetrics(group, address)
        return handle

    def group(self, name: str) -> GroupMetrics:
        handle = self.groups.get(name)
        if handle is None:
            handle = self.groups[name] = GroupMetrics(name)
        return handle

    def tick(self, now: float) -> None:
        for handle in self.servers.values():
            handle.tick(now)

    # -- the snapshot --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        out: Snapshot = {name: [] for name in FAMILIES}
        for route in self.routes.values():
            for method, codes in route.counts.items():
                name = method.decode("latin-1")
                for status, n in enumerate(codes):
                    if n:
                        out["http_requests_total"].append([[route.label, name, str(status)], n])
            if route.counts:
                out["http_request_duration_seconds"].append(
                    [[route.label], [*route.buckets, route.sum]])
            for reason, n in route.refused.items():
                out["veloxy_requests_refused_total"].append([[route.label, reason], n])
        for handle in self.servers.values():
            labels = [handle.group, handle.address]
            answered = False
            for status, n in enumerate(handle.codes):
                if n:
                    answered = True
                    out["veloxy_upstream_requests_total"].append([[*labels, str(status)], n])
            if answered:
                out["veloxy_upstream_response_seconds"].append(
                    [labels, [*handle.buckets, handle.sum]])
            gauges, counters, health = handle.pool_numbers()
            out["veloxy_upstream_connect_failures_total"].append([labels, counters[2]])
            out["veloxy_upstream_pool_connections_created_total"].append([labels, counters[0]])
            out["veloxy_upstream_pool_connections_reused_total"].append([labels, counters[1]])
            if health:  # still configured
                out["veloxy_upstream_healthy"].append([labels, int(all(health))])
                for family, value in zip(_POOL_GAUGES, gauges, strict=True):
                    out[family].append([labels, value])
        for group in self.groups.values():
            out["veloxy_upstream_retries_total"].append([[group.name], group.retries])
        connections = accepted = bytes_in = bytes_out = send_timeouts = 0
        cap = pauses = backoffs = released = 0
        rejected: dict[int, int] = {}
        for registry in self.downstream:
            connections += len(registry.connections)
            accepted += registry.accepted
            cap += registry.max_connections
            pauses += registry.limit_pauses
            backoffs += registry.accept_backoffs
            released += registry.released
            send_timeouts += registry.send_timeouts
            bytes_in += registry.bytes_in
            bytes_out += registry.bytes_out
            for conn in registry.connections:
                bytes_in += conn.bytes_in
                bytes_out += conn.bytes_out
            for status, n in registry.rejected.items():
                rejected[status] = rejected.get(status, 0) + n
        out["veloxy_downstream_connections_open"].append([[], connections])
        out["veloxy_downstream_connections_accepted_total"].append([[], accepted])
        if cap:  # (0 where no Acceptor watches the listeners)
            out["veloxy_downstream_connections_max"].append([[], cap])
        out["veloxy_downstream_connection_limit_reached_total"].append([[], pauses])
        out["veloxy_downstream_accept_backoffs_total"].append([[], backoffs])
        out["veloxy_downstream_connections_released_total"].append([[], released])
        out["veloxy_downstream_received_bytes_total"].append([[], bytes_in])
        out["veloxy_downstream_sent_bytes_total"].append([[], bytes_out])
        out["veloxy_http2_send_timeouts_total"].append([[], send_timeouts])
        for status, n in sorted(rejected.items()):
            reason = BAD_REQUEST_REASONS.get(status, "other")
            out["veloxy_bad_requests_total"].append([[str(status), reason], n])
        for collect in self.collectors:
            for family, samples in collect().items():
                out[family].extend(samples)
        return out


# --- families: how to merge and render them ------------------------------------------------


class Family:
    __slots__ = ("help", "kind", "labels", "merge")

    def __init__(self, kind: str, labels: tuple[str, ...], help: str,
                 merge: str = "sum") -> None:
        self.kind = kind  # counter, gauge or histogram
        self.labels = labels
        self.help = help
        self.merge = merge  # sum, min or max across workers


_UP = ("upstream", "server")
FAMILIES: dict[str, Family] = {
    "http_requests_total": Family(
        "counter", ("route", "method", "code"),
        'Requests answered, by route (its match, "" when none matched), method and status.'),
    "http_request_duration_seconds": Family(
        "histogram", ("route",),
        "Time from the complete request head to the end of the response."),
    "veloxy_requests_refused_total": Family(
        "counter", ("route", "reason"),
        "Requests answered by veloxy before going upstream, by route and reason: "
        "rate_limited (429), max_concurrent, loop_lag and queue (503)."),
    "veloxy_upstream_requests_total": Family(
        "counter", (*_UP, "code"), "Responses received from upstream servers, by status."),
    "veloxy_upstream_response_seconds": Family(
        "histogram", _UP,
        "Time from the start of the attempt (connection taken or opened) to the end of "
        "the upstream's response."),
    "veloxy_upstream_connect_failures_total": Family(
        "counter", _UP, "Connections to the server that could not be opened."),
    "veloxy_upstream_retries_total": Family(
        "counter", ("upstream",), "Attempts made again after a failed one."),
    "veloxy_upstream_healthy": Family(
        "gauge", _UP, "1 when every worker sends the server traffic (health checks passing, "
        "not ejected), else 0.", merge="min"),
    "veloxy_upstream_pool_open_connections": Family(
        "gauge", _UP, "Connections to the server, connected or connecting."),
    "veloxy_upstream_pool_idle_connections": Family(
        "gauge", _UP, "Idle keep-alive connections in the pool."),
    "veloxy_upstream_pool_in_use_connections": Family(
        "gauge", _UP, "Connections carrying a request."),
    "veloxy_upstream_pool_waiting_requests": Family(
        "gauge", _UP, "Requests queued for a connection (max_connections busy)."),
    "veloxy_upstream_pool_connections_created_total": Family(
        "counter", _UP, "Connections opened to the server."),
    "veloxy_upstream_pool_connections_reused_total": Family(
        "counter", _UP, "Requests sent on a pooled keep-alive connection."),
    "veloxy_downstream_connections_open": Family(
        "gauge", (), "Client connections open."),
    "veloxy_downstream_connections_accepted_total": Family(
        "counter", (), "Client connections accepted."),
    "veloxy_downstream_connections_max": Family(
        "gauge", (), "limits.max_connections: the client connections accepted at most "
        "(per worker; summed over workers)."),
    "veloxy_downstream_connection_limit_reached_total": Family(
        "counter", (), "Times accepting stopped at limits.max_connections (new connections "
        "then wait in the listen queue)."),
    "veloxy_downstream_connections_released_total": Family(
        "counter", (), "Idle kept-alive client connections closed (or, idle for a moment "
        "only, closed after their next response) to make room for waiting ones at the cap."),
    "veloxy_downstream_accept_backoffs_total": Family(
        "counter", (), "accept() failures for want of descriptors (EMFILE/ENFILE), each "
        "followed by a pause in accepting."),
    "veloxy_downstream_received_bytes_total": Family(
        "counter", (), "Bytes received from clients."),
    "veloxy_downstream_sent_bytes_total": Family(
        "counter", (), "Bytes sent to clients."),
    "veloxy_http2_send_timeouts_total": Family(
        "counter", (), "HTTP/2 streams cut because the client took no response bytes "
                       "(flow-control window or socket) for http2.send_timeout."),
    "veloxy_bad_requests_total": Family(
        "counter", ("code", "reason"), "Requests refused before reaching a route, by status."),
    "process_cpu_seconds_total": Family(
        "counter", (), "User and system CPU time of the worker processes, seconds."),
    "process_resident_memory_bytes": Family(
        "gauge", (), "Resident memory of the worker processes, bytes."),
    "process_open_fds": Family(
        "gauge", (), "Open file descriptors of the worker processes."),
    "process_start_time_seconds": Family(
        "gauge", (), "Start of the oldest worker process, seconds since the epoch.",
        merge="min"),
    "veloxy_event_loop_lag_seconds": Family(
        "gauge", (), "How late the last periodic loop callback ran; the worst worker.",
        merge="max"),
    "veloxy_config_reloads_total": Family(
        "counter", ("result",), "Config reloads, by result (ok, error), summed over workers."),
    "veloxy_workers": Family(
        "gauge", (), "Worker processes whose numbers this scrape includes."),
}
_POOL_GAUGES = ("veloxy_upstream_pool_open_connections", "veloxy_upstream_pool_idle_connections",
                "veloxy_upstream_pool_in_use_connections",
                "veloxy_upstream_pool_waiting_requests")


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """Several workers' snapshots as one, each family by its rule (sum, min or max);
    histograms add bucket by bucket. Adds `veloxy_workers`."""
    merged: dict[str, dict[tuple[str, ...], Any]] = {name: {} for name in FAMILIES}
    workers = 0
    for snapshot in snapshots:
        workers += 1
        for name, samples in snapshot.items():
            family = FAMILIES.get(name)
            if family is None:
                continue  # a newer worker's family this one does not know
            into = merged[name]
            for labels, value in samples:
                key = tuple(labels)
                old = into.get(key)
                if old is None:
                    into[key] = list(value) if isinstance(value, list) else value
                elif family.kind == "histogram":
                    into[key] = [a + b for a, b in zip(old, value, strict=True)]
                elif family.merge == "min":
                    into[key] = min(old, value)
                elif family.merge == "max":
                    into[key] = max(old, value)
                else:
                    into[key] = old + value
    merged["veloxy_workers"][()] = workers
    return {name: [[list(k), v] for k, v in samples.items()] for name, samples in merged.items()}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Iterable[str], values: Iterable[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def render(snapshot: Snapshot) -> str:
    """The text exposition format (version 0.0.4) of a (merged) snapshot."""
    lines: list[str] = []
    for name, family in FAMILIES.items():
        samples = snapshot.get(name, [])
        if not samples and family.labels:
            continue
        lines.append(f"# HELP {name} {family.help}")
        lines.append(f"# TYPE {name} {family.kind}")
        for labels, value in sorted(samples, key=lambda s: s[0]):
            if family.kind != "histogram":
                lines.append(f"{name}{_labels(family.labels, labels)} {_number(value)}")
                continue
            cumulative = 0
            for bound, count in zip((*BOUNDS, None), value[:-1], strict=True):
                cumulative += count
                le = 'le="' + ("+Inf" if bound is None else repr(bound)) + '"'
                lines.append(f"{name}_bucket{_labels(family.labels, labels, le)} {cumulative}")
            lines.append(f"{name}_sum{_labels(family.labels, labels)} {_number(value[-1])}")
            lines.append(f"{name}_count{_labels(family.labels, labels)} {cumulative}")
    return "\n".join(lines) + "\n"


def quantile(buckets: list[float], q: float) -> float | None:
    """An upper estimate of quantile `q` from non-cumulative bucket counts (the bound of the
    bucket it falls in; the last finite bound for +Inf), None without observations."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0.0
    for bound, count in zip((*BOUNDS, BOUNDS[-1]), buckets, strict=True):
        seen += count
        if seen >= rank:
            return bound
    return BOUNDS[-1]
