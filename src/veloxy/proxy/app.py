"""The proxy as an Application of net.server: one per worker, holding the router, the
upstream groups, the observers (access log, tracing, span export) and the builder of
upstream requests (proxy/forwarding.py), and choosing the exchange kind of each request.

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
from typing import TYPE_CHECKING

from veloxy import __version__
from veloxy.config import Config, RateLimit
from veloxy.h1.head import RequestHead
from veloxy.net.server_connection import ServerConnection
from veloxy.net.timers import DeadlineSweeper
from veloxy.observe.accesslog import AccessLog
from veloxy.observe.metrics import MetricsRegistry
from veloxy.observe.otel import SpanExport
from veloxy.observe.tracing import Tracer
from veloxy.proxy.admission import Admission
from veloxy.proxy.exchange import BaseExchange
from veloxy.proxy.forward import ProxyExchange
from veloxy.proxy.forwarding import Forwarding
from veloxy.proxy.h2c_exchange import H2cExchange
from veloxy.proxy.h2exchange import H2ProxyExchange
from veloxy.proxy.router import Router
from veloxy.upstream.group import Group

if TYPE_CHECKING:
    from veloxy.http2.stream import H2Stream


class ProxyApp:
    #: The access log and the trace-context propagation, when the config asks for them.
    access_log: AccessLog | None = None
    tracer: Tracer | None = None
    #: The OpenTelemetry span export (`tracing.otel`; observe/otel.py), else None.
    otel: SpanExport | None = None

    def __init__(self, config: Config, sweeper: DeadlineSweeper, *,
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
        #: Load shedding as configured at start-up (limits need a restart), and the routes'
        #: admissions (proxy/admission.py) by label and settings: a reload that keeps a
        #: route's settings keeps its buckets and in-flight count.
        self._shed = config.limits.shed
        self._admissions: dict[tuple[str, RateLimit | None, int | None], Admission] = {}
        self.router = self._router(config, self.groups)
        self.h2c_groups = _speaks_h2c(self.groups)
        self.access_log, self.tracer = self._observers(config)
        self.otel = self._span_export(config)
        #: The forwarding fields of the upstream requests (written once, cached).
        self.forwarding = Forwarding()
        #: Called after each successful reload (serving.py: the TLS certificates).
        self.reload_hooks: list[Callable[[], object]] = []
        # start_exchange, bound without a Python frame of its own (it runs per request),
        # unless a subclass has its own
        if type(self).start_exchange is ProxyApp.start_exchange:
            self.start_exchange = partial(ProxyExchange, self)  # type: ignore[method-assign]  # bound without a frame of its own: it runs per request

    def _router(self, config: Config, groups: dict[str, Group]) -> Router:
        router = Router(config.routes, groups)
        admissions = {}
        for route, route_config in zip(router.routes, config.routes, strict=True):
            route.metrics = self.metrics.route(route.label)
            rate_limit, max_concurrent = route_config.rate_limit, route_config.max_concurrent
            if rate_limit is None and max_concurrent is None and self._shed is None:
                continue
            key = (route.label, rate_limit, max_concurrent)
            admission = self._admissions.get(key)
            if admission is None:
                admission = Admission(rate_limit, max_concurrent, self._shed, self._sweeper)
            route.admission = admissions[key] = admission
        self._admissions = admissions
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
        self.h2c_groups = _speaks_h2c(groups)
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

    def start_stream_exchange(self, stream: H2Stream, head: RequestHead) -> BaseExchange:
        """An HTTP/2 stream's request (http2/connection.py): HTTP/2 end to end when its
        route's group speaks h2c (gRPC, proxy/h2c_exchange.py), else forwarded as HTTP/1.1
        requests are, the response turned into HTTP/2 (proxy/h2exchange.py)."""
        if self.h2c_groups:
            route = self.router.match(head)
            if route is not None and route.group.config.protocol != "http1":
                return H2cExchange(self, stream, head)
        return H2ProxyExchange(self, stream, head)

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
        if self.access_log is not None:
            self.access_log.close(timeout=2.0)
        if self.otel is not None:
            self.otel.close()  # pending spans: sent within otel.FLUSH_TIMEOUT


def _speaks_h2c(groups: dict[str, Group]) -> bool:
    """Some group speaks h2c (ProxyApp.h2c_groups: set with the groups, read per HTTP/2
    request, when an HTTP/2 stream's exchange is chosen)."""
    return any(group.config.protocol != "http1" for group in groups.values())
