"""Forwarding one HTTP/2 stream to an upstream group that speaks h2c (gRPC backends): the
phases every exchange shares (proxy/exchange.py: routing, balancing with in-flight counts
and latency, passive health, retries, the logging phase), with HTTP/2 on both sides.

The request goes upstream as an HTTP/2 stream on the server's shared connection
(upstream/h2c_pool.py): the client's method, path (rewritten by the route), authority and
end-to-end fields, `te: trailers` (gRPC servers require it), and our forwarding fields
(proxy/forwarding.py). The response comes back with its trailers (grpc-status,
grpc-message), which the client stream sends as a final HEADERS frame.

Retries follow proxy/retry.py as for HTTP/1.1: a stream the upstream refused
(REFUSED_STREAM, or beyond its GOAWAY) never reached the application and is tried again
for any method; a stream reset or a connection lost before the response head only for an
idempotent request whose body is held whole; nothing once the response head arrived.

Backpressure: request bodies are queued per upstream stream and sent as the upstream's
windows allow; past REQUEST_QUEUE_LIMIT queued, the client stream stops being acknowledged
(its window closes) until the queue drains. Response bodies: the client stream pauses the
upstream stream (its DATA is no longer acknowledged) past its high-water mark.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import TYPE_CHECKING

from veloxy.errors import UpstreamError
from veloxy.http2.headers import CONNECTION_SPECIFIC
from veloxy.proxy.exchange import BaseExchange
from veloxy.proxy.forwarding import h2_request_headers
from veloxy.proxy.logging_phase import log_exchange

if TYPE_CHECKING:
    from veloxy.h1.head import RequestHead
    from veloxy.http2.client import H2ClientConnection, UpstreamStream
    from veloxy.http2.stream import H2Stream
    from veloxy.proxy.app import ProxyApp
    from veloxy.proxy.router import CompiledRoute
    from veloxy.upstream.endpoint import Endpoint
    from veloxy.upstream.h2c_pool import H2cPool

Header = tuple[bytes, bytes]

REQUEST_QUEUE_LIMIT = 1024 * 1024


class H2cExchange(BaseExchange):
    down: H2Stream
    protocol_version = "2"
    _up: UpstreamStream | None = None
    _conn: H2ClientConnection | None = None
    _task: asyncio.Task[None] | None = None
    _paused_client = False
    _headers: list[Header] = []

    def __init__(self, app: ProxyApp, down: H2Stream, head: RequestHead) -> None:
        super().__init__(app, down, head)
        if head.chunked or head.content_length:
            # Kept whatever the method: a stream the upstream refused is sent again even
            # for a POST (it never reached the application), which needs the body.
            self._replay = []

    def start(self) -> None:
        if self.head.upgrade is not None:  # extended CONNECT (http2/headers.py)
            self.started = monotonic()
            self._respond_error(501, "WebSocket over HTTP/2 is not supported toward an "
                                     "HTTP/2 upstream group (protocol: h2c or h2)",
                                keep_alive=True)
            return
        super().start()

    # -- the upstream side of the phases --------------------------------------------------

    def _prepare(self, route: CompiledRoute) -> None:
        head, down = self.head, self.down
        self._headers = h2_request_headers(
            head, route.rewrite(head.target) if route.strip_prefix else head.target,
            head.host or route.group.name.encode(), down.client_ip, down.scheme, self.trace,
            b"https" if route.group.config.protocol == "h2" else b"http")

    def _attempt(self, server: Endpoint, fresh: bool) -> None:
        pool: H2cPool = server.pool  # type: ignore[assignment]  # an h2c group's servers
        conn = None if fresh else pool.ready()
        if conn is not None:
            self._begin(conn)
        else:
            self._task = asyncio.get_running_loop().create_task(self._open(pool))

    async def _open(self, pool: H2cPool) -> None:
        try:
            conn = await pool.connection()
        except UpstreamError as exc:
            self._task = None
            self.on_upstream_error(exc, False)
            return
        self._task = None
        if self.down.connected:
            self._begin(conn)
            conn.flush()

    def _begin(self, conn: H2ClientConnection) -> None:
        self._conn = conn
        pending, self._to_upstream = self._to_upstream, []
        end = self._request_complete and not pending
        self._up = conn.start(self._headers, self, end)
        if pending or (self._request_complete and not end):
            conn.send(self._up, b"".join(pending), end=self._request_complete)

    def _drop_upstream(self, exc: UpstreamError | None) -> bool:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        up, self._up = self._up, None
        if up is not None and self._conn is not None and exc is None:
            self._conn.cancel(up)  # the client went away: reset the upstream stream
        return False  # streams have no keep-alive race: a refused one says so

    def _rewind(self) -> None:
        # Everything received so far goes out again on the new stream; the replay keeps it
        # (and what arrives later) for a further retry.
        replay = self._replay
        self._to_upstream = [b"".join(replay)] if replay else []

    def _body_resendable(self) -> bool:
        return self._replay is not None

    # -- the client's side (the Exchange calls of an H2Stream) ----------------------------

    def request_body(self, data: bytes) -> None:
        if self._replay is not None:
            self._keep_for_replay(data)
        up = self._up
        if up is None:
            self._to_upstream.append(data)
            size = sum(len(piece) for piece in self._to_upstream)
        else:
            conn: H2ClientConnection = self._conn  # type: ignore[assignment]  # with _up
            conn.send(up, data)
            size = conn.queued(up)
        if size > REQUEST_QUEUE_LIMIT and not self._paused_client:
            self._paused_client = True
            self.down.pause_reading()

    def request_end(self) -> None:
        self._request_complete = True
        if self._up is not None and self._conn is not None:
            self._conn.send(self._up, b"", end=True)

    def flush(self) -> None:
        if self._conn is not None:
            self._conn.flush()

    def downstream_paused(self) -> None:
        if self._up is not None and self._conn is not None:
            self._conn.pause(self._up)

    def downstream_resumed(self) -> None:
        if self._up is not None and self._conn is not None:
            self._conn.resume(self._up)

    def tunnel_data(self, data: bytes) -> None:  # pragma: no cover - no tunnels on HTTP/2
        pass

    # -- the upstream's side (http2.client.StreamSink) ------------------------------------

    def on_h2_informational(self, headers: list[Header]) -> None:
        # 100 Continue, 103 Early Hints: relayed as they came (RFC 9110 §15.2)
        self.down.send_informational(_response_headers(headers)[1])

    def on_h2_head(self, headers: list[Header]) -> None:
        status, out = _response_headers(headers)
        self._answered(status)
        self.down.send_head(out)

    def on_h2_data(self, data: bytes) -> None:
        self.down.send_body(data)

    def on_h2_trailers(self, headers: list[Header]) -> None:
        self.down.send_trailers([(n, v) for n, v in headers if n not in CONNECTION_SPECIFIC])

    def on_h2_end(self) -> None:
        self.down.send_end()
        self._response_done = True
        self._up = None

    def on_h2_drained(self) -> None:
        if self._paused_client:
            self._paused_client = False
            self.down.resume_reading()

    def on_h2_error(self, exc: UpstreamError, received: bool) -> None:
        self.on_upstream_error(exc, received)

    def on_read_done(self) -> None:
        self.down.push_soon()
        if self._response_done:
            self._complete()

    def _complete(self) -> None:
        log_exchange(self, self.status)
        self.down.finish()


def _response_headers(headers: list[Header]) -> tuple[int, list[Header]]:
    """The status and the header list for the client: :status first, connection-specific
    fields left out."""
    out: list[Header] = []
    status = 0
    for name, value in headers:
        if name == b":status":
            status = int(value)
            out.insert(0, (name, value))
        elif name[:1] != b":" and name not in CONNECTION_SPECIFIC:
            out.append((name, value))
    return status, out
