"""The logging phase (Pingora's `logging`): the one place where an exchange of any kind,
HTTP/1.1, HTTP/2 to an HTTP/1.1 upstream or HTTP/2 end to end (h2c), is recorded once it
is over for the client: answered, failed or abandoned.

`log_exchange` gives back the attempt's in-flight count on its server (and, on a route with
max_concurrent, the place the request took there: proxy/admission.py), counts the request
on its route's metrics handle and the answer on its server's (handles bound at start-up or
reload, observe/metrics.py), and writes the access-log line and the OpenTelemetry span
when those are configured. It is one call on the common path: the counting is inlined here
rather than made through methods of the handles (two Python calls more per request, the
cost of counting: docs/BENCHMARKS.md, "Metrics"). tests/proxy/test_hot_path_budget.py holds
the inlined counting to its specification.
"""

from __future__ import annotations

from bisect import bisect_left
from time import monotonic, time_ns
from typing import TYPE_CHECKING

from veloxy.observe.metrics import BOUNDS_LIST

if TYPE_CHECKING:
    from veloxy.observe.accesslog import AccessLog
    from veloxy.observe.otel import SpanExport
    from veloxy.proxy.exchange import BaseExchange


def log_exchange(x: BaseExchange, status: int) -> None:
    """`x` is over for its client with `status` (499: the client left first)."""
    server = x.server
    if server is not None and server.tracks_in_flight:  # (x._leave(), inlined: the common path)
        held = x._in_flight  # the current attempt's in-flight count (least_conn & co.)
        if held is not None:
            x._in_flight = None
            held.active -= 1
    if not x._response_done:  # (a completed response needs no flag: spares a store)
        x._recorded = True
    now = monotonic()
    route = x.route
    if route is not None:
        handle = route.metrics
        admission = route.admission
        if admission is not None and admission.max_concurrent is not None:
            admission.in_flight -= 1  # (the place it took in Admission.admit, refused or not)
    else:
        handle = x._app.metrics.unrouted
    elapsed = now - x.started
    bucket = bisect_left(BOUNDS_LIST, elapsed)
    method = x.head.method
    try:
        handle.counts[method][status] += 1
    except (KeyError, IndexError):  # a method seen for the first time (or no status)
        handle.method(method)[status if 0 <= status < 1000 else 0] += 1
    handle.buckets[bucket] += 1
    handle.sum += elapsed
    answered = x.status
    if answered:
        counts = server.metrics  # type: ignore[union-attr]  # an answer has a server
        if x._attempts > 1:  # a retry: the answering attempt started later
            elapsed = now - x._attempt_started
            bucket = bisect_left(BOUNDS_LIST, elapsed)
        try:
            counts.codes[answered] += 1
        except IndexError:  # not a three-digit status (an HTTP/2 peer's, unchecked)
            counts.codes[0] += 1
        counts.buckets[bucket] += 1
        counts.sum += elapsed
    app = x._app
    if app.access_log is not None:
        _access_log(x, app.access_log, status, now)
    if app.otel is not None:  # all that the OpenTelemetry export costs when off
        _span(x, app.otel, status, now)


def _access_log(x: BaseExchange, log: AccessLog, status: int, now: float) -> None:
    head, server, route, trace, down = x.head, x.server, x.route, x.trace, x.down
    combined = log.format == "combined"
    log.write(
        client=down.client_ip, method=head.method, target=head.target,
        version=x.protocol_version or head.version, status=status,
        size=down.bytes_out - x._bytes_mark,
        duration=now - x.started, route=route.label if route is not None else None,
        upstream=server.metrics.address if server is not None else None,
        upstream_duration=now - (x._attempt_started or x.started) if x.status else None,
        trace_id=trace.trace_id if trace is not None else None,
        referer=head.header(b"referer") if combined else None,
        user_agent=head.header(b"user-agent") if combined else None)


def _span(x: BaseExchange, otel: SpanExport, status: int, now: float) -> None:
    """The exchange's OpenTelemetry span (observe/otel.py), when its trace is sampled."""
    trace = x.trace
    if trace is None or not trace.sampled:  # (None: started before a reload added it)
        return
    head, down, route, server = x.head, x.down, x.route, x.server
    end = time_ns()
    otel.span(
        trace, start_ns=end - int((now - x.started) * 1e9), end_ns=end,
        method=head.method, target=head.target, scheme=down.scheme.decode(),
        host=head.host, peer=down.peer, version=x.protocol_version or head.version,
        status=status, route=route.label if route is not None else None,
        upstream=server.metrics.address if server is not None else None,
        error=x._error, user_agent=head.header(b"user-agent"))
