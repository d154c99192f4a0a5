"""The pure parts, without sockets: merging and rendering snapshots, traceparent parsing."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from veloxy.h1.head import RequestHead
from veloxy.observe.metrics import BOUNDS, MetricsRegistry, RouteMetrics, merge, quantile, render
from veloxy.observe.tracing import Tracer, parse_traceparent
from veloxy.proxy import logging_phase
from veloxy.proxy.exchange import BaseExchange


class _App:
    """What the logging phase reads of the proxy app: no access log, no span export."""

    access_log = None
    otel = None


class _Route:
    admission = None  # (no rate limit, cap or shedding: proxy/admission.py)

    def __init__(self, handle: RouteMetrics) -> None:
        self.metrics = handle


@pytest.fixture
def answer(monkeypatch):
    """`answer(route_handle, seconds)`: one GET answered 200 on the route, counted by the
    proxy's logging phase (the only code that counts requests), `seconds` exactly after
    it started (the phase's clock is set for it)."""

    def count(handle: RouteMetrics, seconds: float) -> None:
        monkeypatch.setattr(logging_phase, "monotonic", lambda: seconds)
        head = RequestHead()
        head.method = b"GET"
        exchange = BaseExchange(_App(), None, head)  # type: ignore[arg-type]
        exchange.route = _Route(handle)  # type: ignore[assignment]
        exchange.started = 0.0
        logging_phase.log_exchange(exchange, 200)

    return count


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_merge_sums_counters_and_histograms_and_keeps_rules(answer) -> None:
    snapshots = []
    for worker, seconds in enumerate((0.0004, 0.2)):
        registry = MetricsRegistry()
        route = registry.route('a"b\\c\n')  # escaped in the label value
        for _ in range(worker + 1):
            answer(route, seconds)
        snapshot = registry.snapshot()
        snapshot["veloxy_event_loop_lag_seconds"] = [[[], 0.01 * (worker + 1)]]
        snapshot["veloxy_upstream_healthy"] = [[["g", "s"], worker]]
        snapshots.append(snapshot)
    samples = _samples(render(merge(snapshots)))
    route = (("route", 'a"b\\c\n'),)
    assert samples[("http_requests_total", (("code", "200"), ("method", "GET"), *route))] == 3
    assert samples[("http_request_duration_seconds_count", route)] == 3
    assert samples[("http_request_duration_seconds_bucket", (("le", "0.0005"), *route))] == 1
    assert samples[("http_request_duration_seconds_bucket", (("le", "0.1"), *route))] == 1
    assert samples[("http_request_duration_seconds_bucket", (("le", "0.25"), *route))] == 3
    assert abs(samples[("http_request_duration_seconds_sum", route)] - 0.4004) < 1e-9
    assert samples[("veloxy_event_loop_lag_seconds", ())] == 0.02  # max
    assert samples[("veloxy_upstream_healthy", (("server", "s"), ("upstream", "g")))] == 0
    assert samples[("veloxy_workers", ())] == 2


def test_bucket_edges_are_inclusive_and_quantiles_bounded(answer) -> None:
    registry = MetricsRegistry()
    route = registry.route("r")
    for bound in BOUNDS:
        answer(route, bound)  # exactly on a bound: counted in that bucket (le)
    answer(route, 99.0)
    assert route.buckets == [1] * len(BOUNDS) + [1]
    assert quantile(route.buckets, 0.5) == BOUNDS[7]
    assert quantile([0] * (len(BOUNDS) + 1), 0.5) is None


def test_traceparent_parsing() -> None:
    good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(good) == ("4bf92f3577b34da6a3ce929d0e0e4736",
                                       "00f067aa0ba902b7", "01")
    for bad in (b"", good.upper(), good[:-1], good + b"-x", b"ff" + good[2:],
                b"00-" + b"0" * 32 + good[35:], good[:36] + b"0" * 16 + good[52:]):
        assert parse_traceparent(bad) is None, bad
    assert parse_traceparent(b"01" + good[2:] + b"-future") is not None  # later version


def test_tracer_replaces_the_header_and_drops_orphan_tracestate() -> None:
    fields = [b"Host", b": ", b"h", b"\r\n", b"TraceState", b": ", b"x=1", b"\r\n"]
    trace = Tracer(sampled=False).start(fields)
    assert trace.parent_id is None and trace.flags == "00"
    assert trace.fields[:4] == fields[:4] and b"TraceState" not in trace.fields
    assert trace.fields[-4:] == [b"traceparent", b": ", trace.header, b"\r\n"]
    two = fields[:4] + [b"traceparent", b": ", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01",
                        b"\r\n"] * 2
    assert Tracer().start(two).parent_id is None  # sent twice: invalid, a new trace


def test_sample_ratio_decides_new_traces_by_their_id_as_opentelemetry_does() -> None:
    """tracing.otel.sample_ratio: a new trace is sampled when its id's low 64 bits fall
    under ratio x 2^64 (TraceIdRatioBased); a client's flag is kept whatever the ratio."""
    fields = [b"Host", b": ", b"h", b"\r\n"]
    half = Tracer(ratio=0.5)
    for trace in (half.start(fields) for _ in range(200)):
        assert trace.sampled == (int(trace.trace_id[16:], 16) < 2**63)
    sampled = sum(half.start(fields).sampled for _ in range(2000))
    assert 800 < sampled < 1200
    assert not any(Tracer(ratio=0.0).start(fields).sampled for _ in range(100))
    assert all(Tracer(ratio=1.0).start(fields).sampled for _ in range(100))
    client = [*fields, b"traceparent", b": ", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01",
              b"\r\n"]
    assert Tracer(ratio=0.0).start(client).sampled
