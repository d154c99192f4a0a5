"""Forwarding one request: the state machine that joins a client connection to an upstream one.

Phases of a `ProxyExchange` (Pingora names the same steps request_filter, upstream_peer,
upstream_request_filter, response_filter, fail_to_proxy, logging)::

    route ──▶ pick server ──▶ acquire connection ──▶ send head (+ body as it arrives)
      │404        ▲                 │ connect error / stale reused connection
      │           └──── retry ◀─────┘ (only if nothing of a response arrived and the
      ▼                                request can be replayed)
    relay response head ──▶ relay body ──▶ release connection to the pool, finish
      │ error before the head: 502/503/504     │ error after the head: abort the client
      ▼                                        ▼ connection so the truncation shows

Both directions write once per read: the callbacks of one read from a socket gather their
output in a list, and `flush` / `on_read_done` write it in a single transport.write. On a
small request that puts the head and the body in one segment each way, the largest single
saving measured for this design (about 5 µs per request).

Backpressure is by the transports' watermarks, across the pair: when the client stops
reading, the upstream connection stops reading, and the other way round (Envoy's flow
control, uvicorn's flow_control.py).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from time import monotonic, time_ns
from typing import TYPE_CHECKING

from veloxy.errors import (
    HttpError,
    NoUpstreamAvailable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
)
from veloxy.h1 import rules
from veloxy.h1.serialize import LAST_CHUNK, STATUS_LINES, chunk, error_response, status_line
from veloxy.observe.metrics import BOUNDS_LIST

if TYPE_CHECKING:
    from veloxy.h1.head import RequestHead, ResponseHead
    from veloxy.net.client import ClientConnection
    from veloxy.net.server import ServerConnection
    from veloxy.observe.accesslog import AccessLog
    from veloxy.observe.otel import SpanExport
    from veloxy.observe.tracing import Trace
    from veloxy.proxy.app import ProxyApp
    from veloxy.proxy.router import CompiledRoute
    from veloxy.upstream.group import Group, Server

log = logging.getLogger("veloxy.proxy")

# A request body is kept for a possible retry while it stays under this size.
REPLAY_LIMIT = 64 * 1024
# Request bytes held while the upstream connection is being made; beyond it, stop reading.
CONNECT_BUFFER_LIMIT = 256 * 1024

_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CLOSE_END = _CLOSE + b"\r\n"
_KEEP_ALIVE_END = _KEEP_ALIVE + b"\r\n"


class ProxyExchange:
    # State with a common default lives on the class: an exchange stores only what differs,
    # which is most of the saving of a per-request object (docs/design.md, hot path).
    up: ClientConnection | None = None
    server: Server | None = None
    response_started = False
    upstream_head = b""
    _request_complete = False
    _response_done = False
    _response_close = False
    _rechunk = False
    _tunnel = False
    _tunnel_eofs = 0
    _sent = False
    _attempts = 0
    _to_upstream_size = 0
    _replay_size = 0
    _connect_task: asyncio.Task[None] | None = None
    # The server whose `active` count this exchange's current attempt holds (None between
    # attempts), and when the attempt started (only for latency-aware balancing).
    _in_flight: Server | None = None
    _started = 0.0
    # Servers that failed this request (a retry avoids them), and whether the one retry
    # allowed for the keep-alive race on top of `retries` was used.
    _avoid: tuple[Server, ...] = ()
    _race_retried = False
    # Metrics and the access log: the route taken, the upstream's status (0: no response
    # head arrived), when the request and its last attempt started (monotonic), and
    # whether the exchange was counted (`_record`, once) other than by completing
    # (`_response_done`), which spares the common path a store.
    route: CompiledRoute | None = None
    status = 0
    started = 0.0
    _attempt_started = 0.0
    _recorded = False
    # Only with `tracing` and `access_log` configured: the trace context, and the client
    # connection's byte count when the request started.
    trace: Trace | None = None
    _bytes_mark = 0
    # Only for the OpenTelemetry span (observe/otel.py): why an exchange did not complete,
    # set on those rare paths, and the protocol when it is not the head's HTTP/1.x.
    _error: str | None = None
    protocol_version: str | None = None

    # Why the exchange keeps `route` and derives `group` from it, rather than store both:
    # CPython keeps an instance's attributes in a small array shared in layout by the
    # class's instances while they number at most 21 (a 32-slot key table); the 22nd
    # turns the exchange's attributes into a dict of its own, about 1 µs per request. The
    # common path stores 21 (metrics took the last two); mind the count when adding one.
    @property
    def group(self) -> Group | None:
        route = self.route
        return route.group if route is not None else None

    def __init__(self, app: ProxyApp, down: ServerConnection, head: RequestHead) -> None:
        self._app = app
        self.down = down
        self.head = head
        self._head_request = head.method == b"HEAD"
        self._out: list[bytes] = []
        self._to_upstream: list[bytes] = []
        # An idempotent request may be replayed after a stale keep-alive connection failed
        # (RFC 9110 §9.2.2); its body, if any, is kept for that while under REPLAY_LIMIT.
        self._idempotent = head.method in rules.IDEMPOTENT_METHODS
        self._replay: list[bytes] | None = [] if self._idempotent and (
            head.chunked or head.content_length) else None  # head.has_body, inlined

    # -- phase 1: route and pick --------------------------------------------------------------

    def start(self) -> None:
        self.started = monotonic()
        app = self._app
        if app.tracer is not None:
            self.trace = app.tracer.start(self.head.fields)
        if app.access_log is not None:
            self._bytes_mark = getattr(self.down, "bytes_out", 0)
        router = app.router
        route = router.catch_all or router.match(self.head)
        if route is None:
            self._respond_error(404, "no route matches this request", keep_alive=True)
            return
        self.route = route
        target = self.head.target
        self.upstream_head = app.upstream_request_head(
            self.head, route.rewrite(target) if route.strip_prefix else target,
            self.down.client_ip, self.trace)
        self._to_upstream.append(self.upstream_head)
        server = route.group.balancer.pick(self.head, self.down.client_ip)
        if server is None:  # every server is down: say so at once rather than try
            self._respond_error(503, route.group.unavailable_reason(), keep_alive=True)
            return
        self._connect(server)

    def _connect(self, server: Server, *, fresh: bool = False) -> None:
        self.server = server
        if server.counted:  # least_conn, p2c_ewma, adaptive read the requests in flight
            self._in_flight = server
            server.active += 1
            if server.timed:  # p2c_ewma, adaptive: time the attempt up to the response head
                self._started = server.clock()  # type: ignore[misc]
        self._attempts += 1
        conn = None if fresh else server.pool.acquire_idle()
        if conn is not None:
            self.up = conn
            return  # the head goes out in flush(), with any body bytes of the same read
        self._connect_task = asyncio.get_running_loop().create_task(self._open(server, fresh))

    async def _open(self, server: Server, fresh: bool) -> None:
        try:
            conn = await server.pool.acquire(fresh=fresh)
        except UpstreamError as exc:
            self._connect_task = None
            self.on_upstream_error(exc, False)
            return
        self._connect_task = None
        if self.down.transport is None or self.down.transport.is_closing():
            server.pool.release(conn)  # the client left while we connected
            return
        self.up = conn
        self.flush()
        self.down.resume_reading()

    # -- request direction: from the client ---------------------------------------------------

    def request_body(self, data: bytes) -> None:
        if self.head.chunked:
            data = chunk(data)
        self._to_upstream.append(data)
        if self.up is None:
            self._to_upstream_size += len(data)
            if self._to_upstream_size > CONNECT_BUFFER_LIMIT:
                self.down.pause_reading()

    def request_end(self) -> None:
        if self.head.chunked:
            self._to_upstream.append(LAST_CHUNK)
        self._request_complete = True

    def flush(self) -> None:
        """End of one read from the client: send what it produced upstream in one write."""
        up = self.up
        if up is None:
            return
        pending = self._to_upstream
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._to_upstream_size = 0
            replay = self._replay
            if replay is not None:
                replay.append(data)
                self._replay_size += len(data)
                if self._replay_size > REPLAY_LIMIT:
                    self._replay = None
            if not self._sent:
                self._sent = True
                up.send(data, self, head_request=self._head_request,
                        complete=self._request_complete)
                return
            up.write(data)
        if self._request_complete:
            up.request_sent()

    def downstream_paused(self) -> None:
        if self.up is not None:
            self.up.pause_reading()

    def downstream_resumed(self) -> None:
        if self.up is not None:
            self.up.resume_reading()

    def downstream_lost(self) -> None:
        """The client went away (or broke framing): abandon the upstream side."""
        task = self._connect_task
        if task is not None:
            task.cancel()
            self._connect_task = None
        self._leave()
        up, self.up = self.up, None
        if up is not None and self.server is not None:
            self.server.pool.discard(up, graceful=self._tunnel)
        if not (self._recorded or self._response_done):
            # 499 (nginx's code): the client left before its response was complete.
            self._error = "client_closed"
            self._record(self.status if self.response_started and self.status else 499)

    def tunnel_data(self, data: bytes) -> None:
        """Client bytes after a 101 (WebSocket frames); b"" is the client's EOF."""
        up = self.up
        if up is None:
            return
        if data:
            up.write(data)
        else:
            up.write_eof()  # half-close travels on; the other direction keeps flowing
            self._tunnel_eofs += 1
            if self._tunnel_eofs == 2:
                self._close_tunnel()

    # -- response direction: from the upstream ------------------------------------------------

    def upstream_paused(self) -> None:
        self.down.pause_reading()

    def upstream_resumed(self) -> None:
        self.down.resume_reading()

    def on_informational(self, head: ResponseHead) -> None:
        # 1xx are forwarded to HTTP/1.1 clients (RFC 9110 §15.2); 100 Continue is what a
        # client waits for after `Expect: 100-continue`.
        if self.head.version == "1.1":
            self._out.append(status_line(head.status, head.reason) + head.wire + b"\r\n")

    def on_response_head(self, head: ResponseHead) -> None:
        self.response_started = True
        self.status = head.status
        # Passive health and latency, per server. The common case (a good answer from a
        # server with nothing on record, under a policy that ignores latency) costs two tests.
        server: Server = self.server  # type: ignore[assignment]
        if server.watch or head.status >= 500:
            server.answered(head.status, self._started)
        request = self.head
        if head.status == 101:
            if request.upgrade is None or head.upgrade is None:
                self.on_upstream_error(UpstreamErrorUnexpected101(), True)
                return
            self._tunnel = True
            self._out.append(
                status_line(101) + head.wire
                + b"Connection: Upgrade\r\nUpgrade: " + head.upgrade + b"\r\n\r\n"
            )
            return
        parts = [status_line(head.status, head.reason), head.wire]
        close = head.close and head.content_length is None and not head.chunked
        if (self._head_request or rules.status_has_no_body(head.status)
                or head.content_length is not None):
            pass  # framing carried by Content-Length (or no body at all)
        elif request.version == "1.1":
            parts.append(_CHUNKED)  # chunked or close-delimited upstream: chunked to the client
            self._rechunk = True
            close = False
        else:
            close = True  # an HTTP/1.0 client: the close delimits the body
        keep = not close and self.down.keep_alive and not request.close
        self._response_close = not keep
        if not keep:
            parts.append(_CLOSE)
        elif request.version == "1.0":
            parts.append(_KEEP_ALIVE)
        parts.append(b"\r\n")
        self._out.append(b"".join(parts))

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        """A whole response from one read (ClientConnection.on_response), written at once.

        What on_response_head, on_response_body and on_response_end do, for the responses
        the C fast lane serves: never a 1xx or a 101, always framed by Content-Length or
        without a body, so never re-chunked; and the first and only output of the read
        (once a connection's parser declined a message it never sends this event again),
        so it is written here rather than gathered for on_read_done, which completes.
        """
        self.response_started = True
        status = self.status = head.status
        server: Server = self.server  # type: ignore[assignment]
        if server.watch or status >= 500:
            server.answered(status, self._started)
        request = self.head
        if (head.close and head.content_length is None) or request.close \
                or not self.down.keep_alive:
            self._response_close = True
            end = _CLOSE_END
        else:
            end = _KEEP_ALIVE_END if request.version == "1.0" else b"\r\n"
        self._response_done = True
        self.down.write(b"".join((STATUS_LINES.get(status) or status_line(status), head.wire,
                                  end, body)))

    def on_response_body(self, data: bytes) -> None:
        self._out.append(chunk(data) if self._rechunk else data)

    def on_response_end(self) -> None:
        if self._rechunk:
            self._out.append(LAST_CHUNK)
        self._response_done = True

    def on_read_done(self) -> None:
        """End of one read from the upstream: write what it produced to the client."""
        out = self._out
        if out:
            self.down.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self._tunnel:
            self._start_tunnel()
        elif self._response_done:
            self._complete()

    def on_tunnel_data(self, data: bytes) -> None:
        """Upstream bytes after a 101; b"" is the upstream's EOF."""
        if data:
            self.down.write(data)
        else:
            self.down.write_eof()
            self._tunnel_eofs += 1
            if self._tunnel_eofs == 2:
                self._close_tunnel()

    def on_tunnel_closed(self) -> None:
        """The upstream side of the tunnel is gone: close the client side once flushed."""
        self._leave()
        self.up = None
        self.down.close()

    def on_upstream_error(self, exc: UpstreamError, received: bool) -> None:
        self._leave()
        up, self.up = self.up, None
        server = self.server
        if up is not None and server is not None:
            server.pool.discard(up)
        # The keep-alive race: a reused connection the server closed as we sent on it.
        race = isinstance(exc, UpstreamResetError) and up is not None and up.requests > 1
        if server is not None and not race and not isinstance(exc, NoUpstreamAvailable):
            # A failure of the server (passive health; a retry avoids it), unless it is our
            # own pool's limit or the race, which say nothing about the server's health.
            server.failed()
            self._avoid += (server,)
        if self.response_started:
            # The head is out: the status cannot change. Closing without the rest of the
            # body (or the last chunk) is the only way the client can see the truncation.
            log.info("upstream %s failed mid-response: %s", server and server.url, exc)
            self._out.clear()
            if not self._recorded:
                self._error = "upstream_failed"
                self._record(self.status)
            self.down.abort()
            return
        if not received and self._may_retry(exc, up, race):
            self._retry(exc)
            return
        log.info("upstream %s: %s", server and server.url, exc)
        status, message = exc.status, str(exc)
        group = self.group
        if status == 502 and group is not None and group.all_failing():
            status = 503  # not one bad answer: the whole group is known to be failing
            message = f"every server of upstream group {group.name!r} is failing; last: {exc}"
        self._respond_error(status, message, keep_alive=False)

    # -- internals -------------------------------------------------------------------------

    def _may_retry(self, exc: UpstreamError, up: ClientConnection | None, race: bool) -> bool:
        """Whether to try again; uses up the keep-alive race's extra retry if it says yes
        for that reason."""
        group = self.group
        if group is None or isinstance(exc, NoUpstreamAvailable):
            return False
        budget = group.retries + self._race_retried  # the race's retry is on top
        if isinstance(exc, UpstreamConnectError):
            # Nothing was sent: safe for any method.
            return self._attempts <= budget
        if isinstance(exc, UpstreamResetError) and up is not None:
            # Closed before any response byte: the server may have acted on the request, so
            # only an idempotent one that can be replayed whole is sent again (RFC 9110
            # §9.2.2). The keep-alive race gets one retry on top of `retries`, as in Go's
            # transport; a fresh connection closed means the server died mid-request (it
            # was stopped or crashed), which `retries` covers.
            replayable = self._idempotent and (
                not self.head.has_body or (self._request_complete and self._replay is not None)
            )
            if replayable and race and not self._race_retried:
                self._race_retried = True
                return True
            return replayable and self._attempts <= budget
        return False

    def _retry(self, exc: UpstreamError) -> None:
        log.debug("retrying after %s", exc)
        self._attempt_started = monotonic()
        self.status = 0
        if self.group is not None:
            self.group.metrics.retries += 1
        if self._sent:  # start over from what was kept; else all is still in _to_upstream
            replay = self._replay
            self._to_upstream = [b"".join(replay)] if replay else [self.upstream_head]
            self._replay = [] if replay is not None else None
            self._replay_size = 0
            self._sent = False
        group = self.group
        assert group is not None
        failed = self.server
        # Another server when there is one (the failed ones may be down); else the same.
        server = group.pick_retry(self.head, self.down.client_ip, failed, self._avoid)
        if server is None:
            self._respond_error(503, group.unavailable_reason(), keep_alive=False)
            return
        # Back to the same server after a stale pooled connection: the others in its stack
        # may be just as stale (the server restarted), so the retry opens a fresh one.
        self._connect(server, fresh=server is failed
                      and not isinstance(exc, UpstreamConnectError))
        if self.up is not None:
            self.flush()

    def _complete(self) -> None:
        up, self.up = self.up, None
        server = self.server
        if up is not None and server is not None:
            if server.counted:  # _leave(), inlined; it does nothing from now on (_response_done)
                server.active -= 1
            if self._request_complete:
                server.pool.release(up)
            else:
                server.pool.discard(up)  # the upstream answered before reading it all
        self._record(self.status)
        self.down.finish(keep_alive=not self._response_close)

    def _respond_error(self, status: int, message: str, *, keep_alive: bool) -> None:
        self.response_started = True
        down = self.down
        keep = keep_alive and down.keep_alive and not self.head.close
        body = error_response(status, message, close=not keep)
        down.write(body)
        self._record(status)
        down.finish(keep_alive=keep)

    def _record(self, status: int) -> None:
        """The exchange is over for the client (answered, failed or abandoned): count it
        on its route's handle and, when an upstream answered, on its server's (handles
        bound at start-up or reload, observe/metrics.py)."""
        # RouteMetrics.done and ServerMetrics.answered, inlined: two Python calls fewer
        # per request (the cost of counting: docs/BENCHMARKS.md, issue 5).
        if not self._response_done:  # (a completed response needs no flag: see above)
            self._recorded = True
        now = monotonic()
        route = self.route
        handle = route.metrics if route is not None else self._app.metrics.unrouted
        elapsed = now - self.started
        bucket = bisect_left(BOUNDS_LIST, elapsed)
        try:
            handle.counts[self.head.method][status] += 1
        except (KeyError, IndexError):  # a method seen for the first time (or no status)
            handle.method(self.head.method)[status if 0 <= status < 1000 else 0] += 1
        handle.buckets[bucket] += 1
        handle.sum += elapsed
        answered = self.status
        if answered:
            server = self.server.metrics  # type: ignore[union-attr]
            if self._attempts > 1:  # a retry: the answering attempt started later
                elapsed = now - self._attempt_started
                bucket = bisect_left(BOUNDS_LIST, elapsed)
            try:
                server.codes[answered] += 1
            except IndexError:  # not a three-digit status (an HTTP/2 peer's, unchecked)
                server.codes[0] += 1
            server.buckets[bucket] += 1
            server.sum += elapsed
        log = self._app.access_log
        if log is not None:
            self._log(log, status, now)
        if self._app.otel is not None:  # all that the OpenTelemetry export costs when off
            self._span(status, now)

    def _log(self, log: AccessLog, status: int, now: float) -> None:
        head, server, route, trace = self.head, self.server, self.route, self.trace
        log.write(
            client=self.down.client_ip, method=head.method, target=head.target,
            version=head.version, status=status,
            size=getattr(self.down, "bytes_out", 0) - self._bytes_mark,
            duration=now - self.started, route=route.label if route is not None else None,
            upstream=server.metrics.address if server is not None else None,
            upstream_duration=now - (self._attempt_started or self.started)
            if self.status else None,
            trace_id=trace.trace_id if trace is not None else None,
            referer=head.header(b"referer") if log.format == "combined" else None,
            user_agent=head.header(b"user-agent") if log.format == "combined" else None)

    def _span(self, status: int, now: float) -> None:
        """The exchange's OpenTelemetry span (observe/otel.py), when its trace is sampled."""
        otel: SpanExport = self._app.otel  # type: ignore[assignment]
        trace = self.trace
        if trace is None or not trace.sampled:  # (None: started before a reload added it)
            return
        head, down, route, server = self.head, self.down, self.route, self.server
        end = time_ns()
        peer = getattr(down, "peer", None) or getattr(getattr(down, "conn", None), "peer",
                                                        None)
        otel.span(
            trace, start_ns=end - int((now - self.started) * 1e9), end_ns=end,
            method=head.method, target=head.target,
            scheme=self._app._scheme.decode(), host=head.host, peer=peer,
            version=self.protocol_version or head.version, status=status,
            route=route.label if route is not None else None,
            upstream=server.metrics.address if server is not None else None,
            error=self._error, user_agent=head.header(b"user-agent"))

    def _start_tunnel(self) -> None:
        up = self.up
        if up is None:
            return
        self._record(101)
        up.start_tunnel()
        self.down.start_tunnel(self)

    def _leave(self) -> None:
        """The current attempt is over: its server has one request fewer in flight."""
        server = self._in_flight
        if server is not None and not self._response_done:
            self._in_flight = None
            server.active -= 1

    def _close_tunnel(self) -> None:
        self._leave()
        up, self.up = self.up, None
        if up is not None and self.server is not None:
            # close, not abort: bytes still buffered must reach the upstream
            self.server.pool.discard(up, graceful=True)
        self.down.close()


class UpstreamErrorUnexpected101(UpstreamError):
    """The upstream switched protocols though the client did not ask to."""

    def __init__(self) -> None:
        super().__init__("upstream answered 101 to a request that did not ask to upgrade")


__all__ = ["HttpError", "ProxyExchange"]
