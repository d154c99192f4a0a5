"""Forwarding one HTTP/2 stream to an upstream group that speaks h2c (gRPC backends).

The request goes upstream as an HTTP/2 stream on the server's shared connection
(upstream/h2c_pool.py): the client's method, path (rewritten by the route), authority and
end-to-end fields, `te: trailers` (gRPC servers require it), and our X-Forwarded-* fields.
The response comes back with its trailers (grpc-status, grpc-message), which the client
stream sends as a final HEADERS frame.

Backpressure: request bodies are queued per upstream stream and sent as the upstream's
windows allow; past REQUEST_QUEUE_LIMIT queued, the client stream stops being acknowledged
(its window closes) until the queue drains. Response bodies: the client stream pauses the
upstream stream (its DATA is no longer acknowledged) past its high-water mark.

Errors: before the response head, 502/503/504 as for HTTP/1.1 (no retry: an HTTP/2 request
may have reached the application); after it, RST_STREAM to the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from veloxy.errors import UpstreamError
from veloxy.http2.headers import CONNECTION_SPECIFIC

if TYPE_CHECKING:
    from veloxy.h1.head import RequestHead

log = logging.getLogger("veloxy.proxy")

REQUEST_QUEUE_LIMIT = 1024 * 1024


class H2cExchange:
    response_started = False
    status = 0
    _up: Any = None
    _conn: Any = None
    _task: asyncio.Task[None] | None = None
    _request_complete = False
    _response_done = False
    _lost = False
    _paused_client = False

    def __init__(self, app: Any, down: Any, head: RequestHead, route: Any) -> None:
        self._app = app
        self.down = down
        self.head = head
        self.route = route
        self._pending: list[bytes] = []
        self.server: Any = None

    # -- the client's side (the Exchange calls of an H2Stream) ----------------------------

    def start(self) -> None:
        group = self.route.group
        server = group.balancer.pick(self.head, self.down.client_ip)
        if server is None:
            self._respond_error(503, group.unavailable_reason())
            return
        self.server = server
        self._headers = self._upstream_headers()
        conn = server.pool.ready()
        if conn is not None:
            self._begin(conn)
        else:
            self._task = asyncio.get_running_loop().create_task(self._connect())

    def request_body(self, data: bytes) -> None:
        up = self._up
        if up is None:
            self._pending.append(data)
            size = sum(len(piece) for piece in self._pending)
        else:
            self._conn.send(up, data)
            size = self._conn.queued(up)
        if size > REQUEST_QUEUE_LIMIT and not self._paused_client:
            self._paused_client = True
            self.down.pause_reading()

    def request_end(self) -> None:
        self._request_complete = True
        if self._up is not None:
            self._conn.send(self._up, b"", end=True)

    def flush(self) -> None:
        if self._conn is not None:
            self._conn.flush()

    def downstream_paused(self) -> None:
        if self._up is not None:
            self._conn.pause(self._up)

    def downstream_resumed(self) -> None:
        if self._up is not None:
            self._conn.resume(self._up)

    def downstream_lost(self) -> None:
        self._lost = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        up, self._up = self._up, None
        if up is not None:
            self._conn.cancel(up)

    def tunnel_data(self, data: bytes) -> None:  # pragma: no cover - no tunnels on HTTP/2
        pass

    # -- the upstream's side (StreamSink) ------------------------------------------------

    def on_h2_head(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.response_started = True
        out = []
        for name, value in headers:
            if name == b":status":
                self.status = int(value)
                out.insert(0, (name, value))
            elif name[:1] != b":" and name not in CONNECTION_SPECIFIC:
                out.append((name, value))
        server = self.server
        if server.watch or self.status >= 500:
            server.answered(self.status, 0.0)
        self.down.send_head(out)

    def on_h2_data(self, data: bytes) -> None:
        self.down.send_body(data)

    def on_h2_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.down.send_trailers([(n, v) for n, v in headers if n not in CONNECTION_SPECIFIC])

    def on_h2_end(self) -> None:
        self.down.send_end()
        self._response_done = True
        self._up = None

    def on_h2_drained(self) -> None:
        if self._paused_client:
            self._paused_client = False
            self.down.resume_reading()

    def on_read_done(self) -> None:
        down = self.down
        down.push()
        down.conn.flush_soon()
        if self._response_done:
            down.finish()

    def on_h2_error(self, exc: UpstreamError, received: bool) -> None:
        self._up = None
        server = self.server
        if server is not None:
            server.failed()
        if self.response_started:
            log.info("upstream %s failed mid-response: %s", server and server.url, exc)
            self.down.abort()
            return
        log.info("upstream %s: %s", server and server.url, exc)
        self._respond_error(exc.status, str(exc))

    # -- internals -------------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            conn = await self.server.pool.connection()
        except UpstreamError as exc:
            self._task = None
            self.on_h2_error(exc, False)
            return
        self._task = None
        if not self._lost:
            self._begin(conn)
            conn.flush()

    def _begin(self, conn: Any) -> None:
        self._conn = conn
        pending, self._pending = self._pending, []
        end = self._request_complete and not pending
        self._up = conn.start(self._headers, self, end)
        if pending or (self._request_complete and not end):
            conn.send(self._up, b"".join(pending), end=self._request_complete)

    def _upstream_headers(self) -> list[tuple[bytes, bytes]]:
        head = self.head
        authority = head.host or self.server.name.encode()
        headers = [(b":method", head.method), (b":scheme", b"http"),
                   (b":authority", authority),
                   (b":path", self.route.rewrite(head.target))]
        fields = head.fields
        for i in range(0, len(fields), 4):
            name = fields[i].lower()
            if name != b"host" and name not in CONNECTION_SPECIFIC:
                headers.append((name, fields[i + 2]))
        client_ip = self.down.client_ip
        chain = client_ip if head.forwarded_for is None else head.forwarded_for + b", " + client_ip
        headers += [(b"te", b"trailers"), (b"x-forwarded-for", chain),
                    (b"x-real-ip", client_ip),
                    (b"x-forwarded-proto", getattr(self._app, "_scheme", b"http"))]
        if head.host is not None:
            headers.append((b"x-forwarded-host", head.host))
        return headers

    def _respond_error(self, status: int, message: str) -> None:
        self.response_started = True
        self.status = status
        self.down.respond(status, f"{status} {message}\n".encode())
        self.down.finish()
