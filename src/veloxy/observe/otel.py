"""OpenTelemetry export of the proxy's spans (config `tracing.otel`, the `otel` extra).

One SERVER span per request, made when the exchange is over (proxy/logging_phase.py) from
what the exchange already knows: no state is kept while the request is in flight, and with
`tracing.otel` unset nothing here is imported or called (the exchange tests one attribute
for None). The span's ids are the W3C context of observe/tracing.py: the trace id, the
client's span as parent (none when veloxy started the trace) and, as its own span id, the
one veloxy sent upstream in traceparent, so the upstream's spans nest under it.

The span is handed, already ended, to the SDK's BatchSpanProcessor as a ReadableSpan (the
SDK's own type for an ended span, which is what processors and exporters take) rather than
made through a TracerProvider's Tracer: the Tracer draws its own ids (veloxy's are fixed by
then) and validates every attribute under a lock, which measured several times the cost per
span on the loop's thread (docs/BENCHMARKS.md, "OpenTelemetry export"). The processor queues
the span (a deque append) and its own thread encodes and POSTs batches (OTLP/HTTP,
protobuf), so the event loop never waits for the collector; spans past the queue's size are
dropped. `close` flushes what is pending for a bounded time (graceful stop); a reload that
changes the section closes the old exporter without waiting.

Attributes (OpenTelemetry HTTP semantic conventions, stable since v1.23):
http.request.method (`_OTHER` and http.request.method_original for a non-standard
method), url.path, url.query (the values of the signature keys the conventions name
redacted), url.scheme, server.address/server.port (the Host the client asked for),
client.address/client.port and network.peer.address/network.peer.port (the client's
socket), network.protocol.version, user_agent.original, http.route (the route's label),
http.response.status_code, error.type (the status for a 5xx, `client_closed` when the
client left before its response was complete, `upstream_failed` when the upstream broke
off a response under way). The upstream server that answered is `veloxy.upstream.address`:
a SERVER span's server.address is the client's view, not the hop behind it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from veloxy.observe.tracing import Trace

log = logging.getLogger("veloxy.otel")

#: How long a graceful stop waits for pending spans to reach the collector.
FLUSH_TIMEOUT = 2.0

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                           "TRACE", "PATCH", "QUERY"})
#: Query keys whose values the conventions ask instrumentations to redact.
REDACTED_KEYS = frozenset({"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"})


def redact_query(query: str) -> str:
    if not any(key in query for key in REDACTED_KEYS):
        return query
    parts = []
    for part in query.split("&"):
        key, eq, _ = part.partition("=")
        parts.append(f"{key}=REDACTED" if eq and key in REDACTED_KEYS else part)
    return "&".join(parts)


def split_host(host: bytes) -> tuple[str, int | None]:
    """("example.com", 8080) of a Host value; IPv6 literals keep no brackets."""
    text = host.decode("latin-1").strip()
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    return address, int(port) if port.isdigit() else None


class SpanExport:
    """The SDK's batch processor and OTLP/HTTP exporter for one serving process (each
    worker has its own)."""

    def __init__(self, endpoint: str, service_name: str, version: str) -> None:
        # Imported here, not at the module's top: only a config with tracing.otel pays
        # for the SDK (and config validation has checked that it is installed).
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        self._processor = BatchSpanProcessor(OTLPSpanExporter(endpoint))
        self._resource = Resource.create({"service.name": service_name,
                                          "service.version": version})
        self._scope = InstrumentationScope("veloxy", version)
        self._readable = ReadableSpan
        self._span_context = SpanContext
        self._sampled = TraceFlags(TraceFlags.SAMPLED)
        self._server = SpanKind.SERVER
        self._ok = Status(StatusCode.UNSET)
        self._error = Status(StatusCode.ERROR)
        self.closed = False
        self._failed = False

    def span(self, trace: Trace, **fields: Any) -> None:
        """Export the span of one exchange that is over (fields: see `_span`). A failure
        of the SDK is logged once and never reaches the exchange."""
        try:
            self._span(trace, **fields)
        except Exception:
            if not self._failed:
                self._failed = True
                log.warning("OpenTelemetry span export failed (logged once)", exc_info=True)

    def _span(self, trace: Trace, *, start_ns: int, end_ns: int, method: bytes,
             target: bytes, scheme: str, host: bytes | None,
             peer: tuple[str, int] | None, version: str, status: int, route: str | None,
             upstream: str | None, error: str | None, user_agent: bytes | None) -> None:
        """Export the span of one exchange that is over. `status`: the status the client
        got (0 or 499: none, the client left); `error`: why it did not complete, if so."""
        trace_id = int(trace.trace_id, 16)
        name = method.decode("latin-1")
        attributes: dict[str, Any] = {}
        if name in KNOWN_METHODS:
            attributes["http.request.method"] = name
        else:
            attributes["http.request.method"] = "_OTHER"
            attributes["http.request.method_original"] = name
            name = "HTTP"
        path, question, query = target.decode("latin-1").partition("?")
        attributes["url.path"] = path
        if question:
            attributes["url.query"] = redact_query(query)
        attributes["url.scheme"] = scheme
        if host is not None:
            address, port = split_host(host)
            attributes["server.address"] = address
            if port is not None:
                attributes["server.port"] = port
        if peer is not None:
            attributes["client.address"] = attributes["network.peer.address"] = peer[0]
            attributes["client.port"] = attributes["network.peer.port"] = peer[1]
        attributes["network.protocol.version"] = version
        if user_agent is not None:
            attributes["user_agent.original"] = user_agent.decode("latin-1")
        if route is not None:
            attributes["http.route"] = route
            name = f"{name} {route}"
        if status and status != 499:  # 499: nginx's code for "the client left", never sent
            attributes["http.response.status_code"] = status
            if status >= 500 and error is None:
                error = str(status)
        if error is not None:
            attributes["error.type"] = error
        if upstream is not None:
            attributes["veloxy.upstream.address"] = upstream
        context = self._span_context(trace_id, int(trace.span_id, 16), False, self._sampled)
        parent = None if trace.parent_id is None else self._span_context(
            trace_id, int(trace.parent_id, 16), True, self._sampled)
        self._processor.on_end(self._readable(
            name, context, parent, self._resource, attributes, kind=self._server,
            status=self._ok if error is None else self._error, start_time=start_ns,
            end_time=end_ns, instrumentation_scope=self._scope))

    def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Send what is pending and stop the SDK's thread, waiting at most `timeout`
        seconds (the export goes on in a daemon thread after that, until the process
        exits)."""
        if self.closed:
            return
        self.closed = True
        done = threading.Thread(target=self._processor.shutdown, name="veloxy-otel-close",
                                daemon=True)
        done.start()
        if timeout > 0:
            done.join(timeout)
