"""What every proxied exchange shares, whatever the protocols on its two sides: the request
phases and their bookkeeping, written once.

Phases (Pingora names the same steps request_filter, upstream_peer,
upstream_request_filter, response_filter, fail_to_proxy, logging)::

    start: route ──▶ admit ──▶ build the upstream request ──▶ pick a server ──▶ attempt
             │404      │429/503 (proxy/admission.py)   │503          │ (kind: connect, send)
             ▼         ▼                                ▼              ▼
    response head: passive health, latency ──▶ relay (kind) ──▶ complete ──▶ logging phase
    upstream error: before any response byte → retry (proxy/retry.py) or 502/503/504;
                    after it → abort the client's side, so the truncation shows
    client gone: abandon the upstream side, 499 ──────────────────────────▶ logging phase

The kinds fill in the protocol work (`_prepare`, `_attempt`, `_drop_upstream`,
`_release_upstream`, `_rewind` and the relay itself):

- proxy/forward.py `ProxyExchange`: an HTTP/1.1 client to an HTTP/1.1 upstream;
- proxy/h2exchange.py `H2ProxyExchange`: an HTTP/2 stream to an HTTP/1.1 upstream (the
  same upstream side, the response turned into HTTP/2);
- proxy/h2c_exchange.py `H2cExchange`: an HTTP/2 stream to an h2c upstream (gRPC).

The client side is a `net.server.Downstream` (an HTTP/1.1 connection or an HTTP/2 stream);
the logging phase (metrics, access log, span, in-flight counts) is proxy/logging_phase.py.

Per-request state with a common default lives on the class: an exchange stores only what
differs, and CPython keeps an instance's attributes in a compact array shared by the
class's instances only while the class has seen at most 29 distinct attribute names (3.11
to 3.13; one more turns every later instance's attributes into a dict of its own, a cost
on every attribute access: docs/BENCHMARKS.md, "The exchange redesign: one request path
for every protocol (issue 11)"). tests/proxy/test_hot_path_budget.py measures that limit
and holds the common path under it.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING

from veloxy.errors import UpstreamError
from veloxy.h1 import rules
from veloxy.proxy.logging_phase import log_exchange
from veloxy.proxy.retry import Retry, decide_retry

if TYPE_CHECKING:
    from veloxy.h1.head import RequestHead
    from veloxy.net.server_connection import Downstream
    from veloxy.observe.tracing import Trace
    from veloxy.proxy.app import ProxyApp
    from veloxy.proxy.router import CompiledRoute
    from veloxy.upstream.endpoint import Endpoint
    from veloxy.upstream.group import Group

log = logging.getLogger("veloxy.proxy")

#: A request body is kept for a possible retry while it stays under this size.
REPLAY_LIMIT = 64 * 1024


class BaseExchange:
    down: Downstream
    #: The route taken (None: none matched, or not routed yet), and the server of the
    #: current (or last) attempt.
    route: CompiledRoute | None = None
    server: Endpoint | None = None
    #: The upstream's status (0: no response head arrived), and whether any byte of the
    #: response went to the client (an error can no longer change it).
    status = 0
    response_started = False
    #: monotonic() when the request head was complete, and when the last attempt started.
    started = 0.0
    _attempt_started = 0.0
    _attempts = 0
    _request_complete = False
    _response_done = False
    #: Recorded by the logging phase other than by completing (which needs no flag).
    _recorded = False
    #: The server whose in-flight count (`active`) this attempt holds: only under the
    #: policies that read it (least_conn, p2c_ewma, adaptive).
    _in_flight: Endpoint | None = None
    #: When the attempt started by its server's clock: only for latency-aware policies.
    _attempt_clock = 0.0
    #: Servers that failed this request (a retry avoids them), and whether the one retry
    #: for the keep-alive race was used.
    _failed_servers: tuple[Endpoint, ...] = ()
    _race_retried = False
    _replay_size = 0
    #: Only with `tracing` and `access_log` configured: the trace context, and the client
    #: side's byte count when the request started.
    trace: Trace | None = None
    _bytes_mark = 0
    #: Only for the span: why an exchange did not complete, set on those rare paths, and
    #: the client's protocol when it is not the head's HTTP/1.x.
    _error: str | None = None
    protocol_version: str | None = None

    def __init__(self, app: ProxyApp, down: Downstream, head: RequestHead) -> None:
        self._app = app
        self.down = down
        self.head = head
        #: Request bytes not yet sent upstream (the head, or the stream's first part, then
        #: body pieces): kept while the upstream side is not ready, flushed once per read.
        self._to_upstream: list[bytes] = []
        #: Output for an HTTP/1.1 client gathered during one upstream read (forward.py),
        #: made on first use. Stored here rather than left to a class default: on 3.11 an
        #: attribute read that falls through to the class is not specialised and costs
        #: more than this store, and every response reads it.
        self._to_client: list[bytes] | None = None
        # An idempotent request may be replayed after a failure that may have reached the
        # application (RFC 9110 §9.2.2); its body, if any, is kept for that.
        idempotent = self._idempotent = head.method in rules.IDEMPOTENT_METHODS
        self._replay: list[bytes] | None = [] if idempotent and (
            head.chunked or head.content_length) else None  # head.has_body, inlined

    @property
    def group(self) -> Group | None:
        route = self.route
        return route.group if route is not None else None

    # -- phase 1: route, build, pick ------------------------------------------------------

    def start(self) -> None:
        self.started = monotonic()
        app = self._app
        head = self.head
        if app.tracer is not None:
            self.trace = app.tracer.start(head.fields)
        if app.access_log is not None:
            self._bytes_mark = self.down.bytes_out
        router = app.router
        route = router.catch_all or router.match(head)
        if route is None:
            self._respond_error(404, "no route matches this request", keep_alive=True)
            return
        self.route = route
        # Rate limit, in-flight cap, load shedding (proxy/admission.py): None, and no call,
        # on a route without them
        if route.admission is not None and not route.admission.admit(self, route.group):
            return
        self._prepare(route)
        server = route.group.balancer.pick(head, self.down.client_ip)
        if server is None:  # every server is down: say so at once rather than try
            self._respond_error(503, route.group.unavailable_reason(), keep_alive=True)
            return
        self._begin_attempt(server)

    def _begin_attempt(self, server: Endpoint, *, fresh: bool = False) -> None:
        self.server = server
        if server.tracks_in_flight:  # least_conn, p2c_ewma, adaptive read the requests in flight
            self._in_flight = server
            server.active += 1
            if server.tracks_latency:  # p2c_ewma, adaptive: time it up to the response head
                self._attempt_clock = server.clock()  # type: ignore[misc]  # set with tracks_latency
        self._attempts += 1
        self._attempt(server, fresh)

    # -- what each kind does with its upstream ----------------------------------------------

    def _prepare(self, route: CompiledRoute) -> None:
        """Build the upstream request (once: a retry sends the same)."""
        raise NotImplementedError

    def _attempt(self, server: Endpoint, fresh: bool) -> None:
        """Send the request to `server` (on a new connection when `fresh`)."""
        raise NotImplementedError

    def _drop_upstream(self, exc: UpstreamError | None) -> bool:
        """Let go of the upstream side after a failure (`exc`) or the client's going away
        (None). True when the failure is the keep-alive race (a pooled connection the
        server closed as we sent on it), which says nothing of the server's health."""
        raise NotImplementedError

    def _rewind(self) -> None:
        """Make the request ready to be sent again, from what was kept (a retry)."""
        raise NotImplementedError

    def _keep_for_replay(self, data: bytes) -> None:
        """Request bytes as sent, kept for a retry while they stay under REPLAY_LIMIT."""
        replay: list[bytes] = self._replay  # type: ignore[assignment]  # callers check
        replay.append(data)
        self._replay_size += len(data)
        if self._replay_size > REPLAY_LIMIT:
            self._replay = None

    def _body_resendable(self) -> bool:
        """The request body can be sent again whole (it was not sent, or it was kept)."""
        raise NotImplementedError

    def _abort_response(self) -> None:
        """The response cannot be completed: make the truncation visible to the client."""
        self.down.abort()

    # -- the response head: passive health and latency ---------------------------------------

    def _answered(self, status: int) -> None:
        """A response head arrived. The common case (a good answer from a server with
        nothing on record, under a policy that ignores latency) costs two tests."""
        self.response_started = True
        self.status = status
        server: Endpoint = self.server  # type: ignore[assignment]  # an attempt has one
        if server.reports_answers or status >= 500:
            server.answered(status, self._attempt_clock)

    # -- failures and the client's leaving ---------------------------------------------------

    def on_upstream_error(self, exc: UpstreamError, received: bool) -> None:
        """The attempt failed; `received`: some of the response had arrived."""
        race = self._drop_upstream(exc)
        self._leave()
        server = self.server
        if server is not None and not race and exc.server_at_fault:
            server.failed()  # passive health; a retry avoids it
            self._failed_servers += (server,)
        if self.response_started:
            # The head is out: the status cannot change. Closing without the rest of the
            # body (or the last chunk) is the only way the client can see the truncation.
            log.info("upstream %s failed mid-response: %s", server and server.url, exc)
            if not self._recorded:
                self._error = "upstream_failed"
                log_exchange(self, self.status)
            self._abort_response()
            return
        if not received and self._may_retry(exc, race):
            self._retry(exc)
            return
        log.info("upstream %s: %s", server and server.url, exc)
        status, message = exc.status, str(exc)
        group = self.group
        if status == 502 and group is not None and group.all_failing():
            status = 503  # not one bad answer: the whole group is known to be failing
            message = f"every server of upstream group {group.name!r} is failing; last: {exc}"
        self._respond_error(status, message, keep_alive=False)

    def downstream_lost(self) -> None:
        """The client went away (or broke framing): abandon the upstream side."""
        self._drop_upstream(None)
        self._leave()
        if not (self._recorded or self._response_done):
            # 499 (nginx's code): the client left before its response was complete.
            self._error = "client_closed"
            log_exchange(self, self.status if self.response_started and self.status else 499)

    def _leave(self) -> None:
        """The current attempt is over: its server has one request fewer in flight."""
        server = self._in_flight
        if server is not None:
            self._in_flight = None
            server.active -= 1

    def _may_retry(self, exc: UpstreamError, race: bool) -> bool:
        group = self.group
        if group is None:
            return False
        head = self.head
        decision = decide_retry(
            exc, attempts=self._attempts, retries=group.retries, idempotent=self._idempotent,
            resendable=not (head.chunked or head.content_length) or self._body_resendable(),
            race=race, race_retried=self._race_retried)
        if decision is Retry.RACE:
            self._race_retried = True
        return decision is not Retry.NO

    def _retry(self, exc: UpstreamError) -> None:
        log.debug("retrying after %s", exc)
        group = self.group
        assert group is not None  # _may_retry said yes
        self._attempt_started = monotonic()
        self.status = 0
        group.metrics.retries += 1
        self._rewind()
        failed = self.server
        # Another server when there is one (the failed ones may be down); else the same.
        server = group.pick_retry(self.head, self.down.client_ip, failed,
                                  self._failed_servers)
        if server is None:
            self._respond_error(503, group.unavailable_reason(), keep_alive=False)
            return
        # Back to the same server after a stale pooled connection: the others in its stack
        # may be just as stale (the server restarted), so the retry opens a fresh one.
        self._begin_attempt(server, fresh=server is failed and exc.request_sent)
        self.flush()  # what was kept goes out now if the attempt has its connection

    def flush(self) -> None:
        """End of one read from the client: send what it produced upstream."""
        raise NotImplementedError

    # -- endings ---------------------------------------------------------------------------

    def refuse(self, status: int, message: str, reason: str,
               fields: tuple[tuple[bytes, bytes], ...]) -> None:
        """Admission said no (proxy/admission.py): answer at once with `fields`
        (Retry-After, RateLimit), count the refusal on the route, and record the exchange."""
        self._error = reason
        route: CompiledRoute = self.route  # type: ignore[assignment]  # admitted after routing
        refused = route.metrics.refused
        refused[reason] = refused.get(reason, 0) + 1
        self.response_started = True
        self.down.answer(status, message, keep_alive=not self.head.close, fields=fields)
        log_exchange(self, status)

    def _respond_error(self, status: int, message: str, *, keep_alive: bool) -> None:
        """An answer of veloxy's own (404, 502, 503, 504) before any response byte."""
        self.response_started = True
        down = self.down
        down.answer(status, message, keep_alive=keep_alive and not self.head.close)
        log_exchange(self, status)
