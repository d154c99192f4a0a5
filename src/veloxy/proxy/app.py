"""The proxy as an Application of net.server: one per worker, holding the router and the
upstream groups, and the per-request work that does not belong to one exchange (building
the upstream request head).

Reload (`reload`) builds the new router and groups aside, then swaps them in with plain
assignments: the loop runs one callback at a time, so no request sees half of each. An
exchange keeps the route, group and server it started with, so requests in flight finish
on the old config; the old groups are retired (no health checks, idle connections closed,
busy ones closed when released). A group whose config did not change is kept as it is,
pools and health state included.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from veloxy import __version__
from veloxy.config import Config
from veloxy.h1.head import RequestHead
from veloxy.net.server import ServerConnection
from veloxy.net.timers import DeadlineSweeper
from veloxy.observe.accesslog import AccessLog
from veloxy.observe.metrics import MetricsRegistry
from veloxy.observe.otel import SpanExport
from veloxy.observe.tracing import Trace, Tracer
from veloxy.proxy.forward import ProxyExchange
from veloxy.proxy.router import Router
from veloxy.upstream.group import Group


class ProxyApp:
    #: The access log and the trace-context propagation, when the config asks for them.
    access_log: AccessLog | None = None
    tracer: Tracer | None = None
    #: The OpenTelemetry span export (`tracing.otel`; observe/otel.py), else None.
    otel: SpanExport | None = None

    def __init__(self, config: Config, sweeper: DeadlineSweeper, *, scheme: bytes = b"http",
                 metrics: MetricsRegistry | None = None) -> None:
        self.config = config
        self._sweeper = sweeper
        #: This worker's metric handles (observe/metrics.py), bound to routes and servers.
        self.metrics = metrics if metrics is not None else MetricsRegistry()
        self.groups = {name: Group(group, sweeper, config.tuning.upstream,
                                   metrics=self.metrics)
                       for name, group in config.upstreams.items()}
        for group in self.groups.values():
            group.start()  # health checks and DNS refresh, where configured
        self.router = self._router(config, self.groups)
        self.access_log, self.tracer = self._observers(config)
        self.otel = self._span_export(config)
        self._scheme = scheme
        self._forwarding_cache: dict[bytes, bytes] = {}
        #: Called after each successful reload (server.py: the TLS certificates).
        self.reload_hooks: list[Callable[[], object]] = []
        # start_exchange, bound without a Python frame of its own (it runs per request),
        # unless a subclass has its own
        if type(self).start_exchange is ProxyApp.start_exchange:
            self.start_exchange = partial(ProxyExchange, self)  # type: ignore[method-assign]

    def _router(self, config: Config, groups: dict[str, Group]) -> Router:
        router = Router(config.routes, groups)
        for route in router.routes:
            route.metrics = self.metrics.route(route.label)
        return router

    @staticmethod
    def _observers(config: Config) -> tuple[AccessLog | None, Tracer | None]:
        log_config, tracing = config.access_log, config.tracing
        access_log = None if log_config is None else AccessLog(log_config.path,
                                                               log_config.format)
        return access_log, None if tracing is None else Tracer(
            tracing.sampled, tracing.otel.sample_ratio if tracing.otel is not None else 1.0)

    def _span_export(self, config: Config) -> SpanExport | None:
        """The span export `config` asks for: the running one when its section is
        unchanged (a reload keeps its queue and thread), else a new one (or None)."""
        wanted = config.tracing.otel if config.tracing is not None else None
        if wanted is None:
            return None
        running = self.otel
        if running is not None and self.config.tracing is not None \
                and self.config.tracing.otel == wanted:
            return running
        return SpanExport(wanted.endpoint, wanted.service_name, __version__)

    def reload(self, config: Config) -> None:
        """Use `config`'s routes and upstream groups from the next request on (see the
        module docstring). `config` must be valid (config.load has checked it)."""
        access_log, tracer = self._observers(config)  # may fail (the log file): nothing done
        old_log, old_otel = self.access_log, self.otel
        try:
            otel = self._span_export(config)
        except BaseException:
            if access_log is not None:
                access_log.close()
            raise
        old = self.groups
        groups: dict[str, Group] = {}
        try:
            for name, group_config in config.upstreams.items():
                group = old.get(name)
                if (group is None or group.closed or group.config != group_config
                        or self.config.tuning.upstream != config.tuning.upstream):
                    group = Group(group_config, self._sweeper, config.tuning.upstream,
                                  metrics=self.metrics)
                    group.start()
                groups[name] = group
            router = self._router(config, groups)
        except BaseException:  # undo what was built; the running config stays
            for name, group in groups.items():
                if old.get(name) is not group:
                    group.close()
            if access_log is not None:
                access_log.close()
            if otel is not None and otel is not old_otel:
                otel.close(timeout=0)
            raise
        self.config, self.groups, self.router = config, groups, router
        self.access_log, self.tracer, self.otel = access_log, tracer, otel
        if old_log is not None:
            old_log.close()  # its thread writes what is left, then closes the file
        if old_otel is not None and old_otel is not otel:
            old_otel.close(timeout=0)  # its thread sends what is pending, off the loop
        for name, group in old.items():
            if groups.get(name) is not group:
                group.retire()
        for hook in self.reload_hooks:
            hook()

    def start_exchange(self, conn: ServerConnection, head: RequestHead) -> ProxyExchange:
        return ProxyExchange(self, conn, head)

    def start_stream_exchange(self, stream: object, head: RequestHead) -> ProxyExchange:
        """An HTTP/2 stream's request (http2/connection.py): forwarded the same way, the
        response turned into HTTP/2 (proxy/h2exchange.py)."""
        from veloxy.proxy.h2exchange import H2ProxyExchange

        if self.h2c_groups:  # HTTP/2 end to end for groups that speak h2c (gRPC)
            route = self.router.match(head)
            if route is not None and route.group.config.protocol == "h2c":
                from veloxy.proxy.h2c_exchange import H2cExchange

                return H2cExchange(self, stream, head, route)  # type: ignore[return-value]
        return H2ProxyExchange(self, stream, head)  # type: ignore[arg-type]

    @property
    def h2c_groups(self) -> bool:
        return any(group.config.protocol == "h2c" for group in self.groups.values())

    def with_scheme(self, scheme: bytes) -> ProxyApp:
        """This proxy as the listeners of another scheme see it (TLS: X-Forwarded-Proto
        https): the same router and groups, reloads included; only the forwarding fields
        differ. The cleartext path keeps its plain ProxyApp, untouched."""
        return _SchemeView(self, scheme)  # type: ignore[return-value]

    def upstream_request_head(self, head: RequestHead, target: bytes, client_ip: bytes,
                              trace: Trace | None = None) -> bytes:
        """The head sent upstream: the client's end-to-end headers, then ours.

        X-Forwarded-For keeps what the client sent and appends the client's address;
        X-Real-IP, X-Forwarded-Proto and X-Forwarded-Host are ours alone (the client's
        were dropped by the parser). Framing is ours too: Content-Length passes through,
        a chunked body is re-chunked, and Connection is only sent to ask for an upgrade.
        """
        parts = [head.method, b" ", target, b" HTTP/1.1\r\n",
                 head.wire if trace is None else b"".join(trace.fields)]
        if head.forwarded_for is None:
            forwarding = self._forwarding_cache.get(client_ip)
            if forwarding is None:
                forwarding = self._forwarding_headers(None, client_ip)
                if len(self._forwarding_cache) > 4096:
                    self._forwarding_cache.clear()
                self._forwarding_cache[client_ip] = forwarding
        else:
            forwarding = self._forwarding_headers(head.forwarded_for, client_ip)
        parts.append(forwarding)
        if head.host is not None:
            parts.append(b"X-Forwarded-Host: " + head.host + b"\r\n")
        if head.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if head.upgrade is not None:
            parts.append(b"Connection: Upgrade\r\nUpgrade: " + head.upgrade + b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _forwarding_headers(self, forwarded_for: bytes | None, client_ip: bytes) -> bytes:
        chain = client_ip if forwarded_for is None else forwarded_for + b", " + client_ip
        return (b"X-Forwarded-For: " + chain + b"\r\nX-Real-IP: " + client_ip
                + b"\r\nX-Forwarded-Proto: " + self._scheme + b"\r\n")

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
        if self.access_log is not None:
            self.access_log.close(timeout=2.0)
        if self.otel is not None:
            self.otel.close()  # pending spans: sent within otel.FLUSH_TIMEOUT


class _SchemeView:
    """ProxyApp.with_scheme: its own scheme and forwarding cache, the rest read through."""

    def __init__(self, base: ProxyApp, scheme: bytes) -> None:
        self._base = base
        self._scheme = scheme
        self._forwarding_cache: dict[bytes, bytes] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(self._base, name)

    @property
    def otel(self) -> SpanExport | None:
        # Read by every exchange's _record: a property spares it __getattr__'s failed lookup.
        return self._base.otel

    start_exchange = ProxyApp.start_exchange
    start_stream_exchange = ProxyApp.start_stream_exchange
    upstream_request_head = ProxyApp.upstream_request_head
    _forwarding_headers = ProxyApp._forwarding_headers
