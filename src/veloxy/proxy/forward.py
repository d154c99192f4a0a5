"""Forwarding one request to an HTTP/1.1 upstream: the state machine that joins a client
connection to an upstream one (the phases they all share: proxy/exchange.py).

    attempt: take a pooled connection (or open one) ──▶ send head (+ body as it arrives)
    relay response head ──▶ relay body ──▶ release the connection to the pool, complete
      (or a 101: both connections become a tunnel of raw bytes)

Both directions write once per read: the callbacks of one read from a socket gather their
output in a list, and `flush` / `on_read_done` write it in a single transport.write. On a
small request that puts the head and the body in one segment each way, the largest single
saving measured for this design (docs/BENCHMARKS.md, "One write per direction per read").

Backpressure is by the transports' watermarks, across the pair: when the client stops
reading, the upstream connection stops reading, and the other way round (Envoy's flow
control, uvicorn's flow_control.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from veloxy.errors import UpstreamError, UpstreamResetError
from veloxy.h1.framing import informational_head, response_framing, upgrade_head
from veloxy.h1.serialize import LAST_CHUNK, chunk
from veloxy.proxy.exchange import BaseExchange
from veloxy.proxy.forwarding import FORWARDED_HOST_PREFIX, NO_CACHE
from veloxy.proxy.logging_phase import log_exchange

if TYPE_CHECKING:
    from veloxy.h1.head import ResponseHead
    from veloxy.net.client import ClientConnection
    from veloxy.proxy.router import CompiledRoute
    from veloxy.upstream.endpoint import Endpoint

#: Request bytes held while the upstream connection is being made; beyond it, stop reading.
CONNECT_BUFFER_LIMIT = 256 * 1024


class ProxyExchange(BaseExchange):
    up: ClientConnection | None = None
    upstream_head = b""
    _head_sent = False
    _rechunk = False
    _close_after = False
    _tunnel = False
    _tunnel_eofs = 0
    # The status logged when a tunnel opens: what the client saw (an HTTP/1.1 client its 101;
    # H2ProxyExchange overrides it, since an extended CONNECT is answered 200)
    tunnel_status = 101
    _pending_size = 0
    _connect_task: asyncio.Task[None] | None = None

    # -- the upstream side of the phases --------------------------------------------------

    def _prepare(self, route: CompiledRoute) -> None:
        """The head sent upstream: the client's end-to-end fields (with the trace context's
        traceparent when tracing), then ours (proxy/forwarding.py). Framing is ours too:
        Content-Length passes through, a chunked body is re-chunked, and Connection is
        only sent to ask for an upgrade."""
        head = self.head
        target = head.target
        if route.strip_prefix:
            target = route.rewrite(target)
        trace = self.trace
        down = self.down
        forwarding = self._app.forwarding
        client_ip, scheme = down.client_ip, down.scheme
        fields = None if head.forwarded_for is not None else forwarding.cache.get(
            scheme, NO_CACHE).get(client_ip)
        if fields is None:
            fields = forwarding.h1_fields(head.forwarded_for, client_ip, scheme)
        wire = head.wire if trace is None else b"".join(trace.fields)
        host = head.host
        if host is None:
            parts = [head.method, b" ", target, b" HTTP/1.1\r\n", wire, fields, b"\r\n"]
        else:  # X-Forwarded-Host, which the cache leaves out
            parts = [head.method, b" ", target, b" HTTP/1.1\r\n", wire, fields,
                     FORWARDED_HOST_PREFIX, host, b"\r\n", b"\r\n"]
        # (the last part is the blank line that ends the head)
        if head.chunked:
            parts.insert(-1, b"Transfer-Encoding: chunked\r\n")
        if head.upgrade is not None:
            parts.insert(-1, b"Connection: Upgrade\r\nUpgrade: " + head.upgrade + b"\r\n")
        self.upstream_head = data = b"".join(parts)
        self._to_upstream.append(data)

    def _begin_attempt(self, server: Endpoint, *, fresh: bool = False) -> None:
        # BaseExchange._begin_attempt with _attempt inlined: the common path (one Python
        # call fewer per request; test_hot_path_budget.py checks the copy)
        self.server = server
        if server.tracks_in_flight:
            self._in_flight = server
            server.active += 1
            if server.tracks_latency:
                self._attempt_clock = server.clock()  # type: ignore[misc]  # set with tracks_latency
        self._attempts += 1
        conn = None if fresh else server.pool.acquire_idle()
        if conn is not None:
            self.up = conn
            return  # the head goes out in flush(), with any body bytes of the same read
        self._connect_task = asyncio.get_running_loop().create_task(self._open(server, fresh))

    def _attempt(self, server: Endpoint, fresh: bool) -> None:
        conn = None if fresh else server.pool.acquire_idle()
        if conn is not None:
            self.up = conn
            return  # the head goes out in flush(), with any body bytes of the same read
        self._connect_task = asyncio.get_running_loop().create_task(self._open(server, fresh))

    async def _open(self, server: Endpoint, fresh: bool) -> None:
        try:
            conn = await server.pool.acquire(fresh=fresh)
        except UpstreamError as exc:
            self._connect_task = None
            self.on_upstream_error(exc, False)
            return
        self._connect_task = None
        if not self.down.connected:
            server.pool.release(conn)  # the client left while we connected
            return
        self.up = conn
        self.flush()
        self.down.resume_reading()

    def _drop_upstream(self, exc: UpstreamError | None) -> bool:
        task = self._connect_task
        if task is not None:
            task.cancel()
            self._connect_task = None
        up, self.up = self.up, None
        if up is not None and self.server is not None:
            self.server.pool.discard(up, graceful=exc is None and self._tunnel)
        if self._to_client:
            self._to_client.clear()  # a response cut short is not written
        # The keep-alive race: a reused connection the server closed as we sent on it.
        return isinstance(exc, UpstreamResetError) and up is not None and up.requests > 1

    def _rewind(self) -> None:
        if self._head_sent:  # start over from what was kept; else all is still pending
            replay = self._replay
            self._to_upstream = [b"".join(replay)] if replay else [self.upstream_head]
            self._replay = [] if replay is not None else None
            self._replay_size = 0
            self._head_sent = False

    def _body_resendable(self) -> bool:
        return not self._head_sent or (self._request_complete and self._replay is not None)

    # -- request direction: from the client -------------------------------------------------

    def request_body(self, data: bytes) -> None:
        if self.head.chunked:
            data = chunk(data)
        self._to_upstream.append(data)
        if self.up is None:
            self._pending_size += len(data)
            if self._pending_size > CONNECT_BUFFER_LIMIT:
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
            self._pending_size = 0
            if self._replay is not None:
                self._keep_for_replay(data)
            if not self._head_sent:
                self._head_sent = True
                up.send(data, self, head_request=self.head.method == b"HEAD",
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

    def tunnel_data(self, data: bytes) -> None:
        """Client bytes after a 101 (WebSocket frames); b"" is the client's EOF."""
        up = self.up
        if up is None:
            return
        if data:
            up.write(data)
        else:
            up.write_eof()  # half-close travels on; the other direction keeps flowing
            self._tunnel_eof()

    # -- response direction: from the upstream (net.client.ResponseSink) ------------------

    def upstream_paused(self) -> None:
        self.down.pause_reading()

    def upstream_resumed(self) -> None:
        self.down.resume_reading()

    def on_informational(self, head: ResponseHead) -> None:
        # 1xx are forwarded to HTTP/1.1 clients (RFC 9110 §15.2); 100 Continue is what a
        # client waits for after `Expect: 100-continue`.
        if self.head.version == "1.1":
            self._emit(informational_head(head))

    def on_response_head(self, head: ResponseHead) -> None:
        self._answered(head.status)
        if head.status == 101:
            if self.head.upgrade is None or head.upgrade is None:
                self.on_upstream_error(UpstreamErrorUnexpected101(), True)
                return
            self._tunnel = True
            self._emit(upgrade_head(head))
            return
        data, self._rechunk, self._close_after = response_framing(
            head, self.head, self.down.keep_alive)
        self._emit(data)

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        """A whole response from one read (ClientConnection.on_response), written at once.

        What on_response_head, on_response_body and on_response_end do, for the responses
        the C fast lane serves: never a 1xx or a 101, always framed by Content-Length or
        without a body, so never re-chunked; and the first and only output of the read
        (once a connection's parser declined a message it never sends this event again),
        so it is written here rather than gathered for on_read_done, which completes.
        """
        # _answered, inlined (the common path; test_hot_path_budget.py checks the copy)
        self.response_started = True
        status = self.status = head.status
        server: Endpoint = self.server  # type: ignore[assignment]  # an attempt has one
        if server.reports_answers or status >= 500:
            server.answered(status, self._attempt_clock)
        data, _, self._close_after = response_framing(head, self.head, self.down.keep_alive,
                                                      body)
        self._response_done = True
        self.down.write(data)

    def on_response_body(self, data: bytes) -> None:
        self._emit(chunk(data) if self._rechunk else data)

    def on_response_end(self) -> None:
        if self._rechunk:
            self._emit(LAST_CHUNK)
        self._response_done = True

    def _emit(self, data: bytes) -> None:
        """Output for the client, written at the end of the read (on_read_done)."""
        out = self._to_client
        if out is None:
            self._to_client = [data]
        else:
            out.append(data)

    def on_read_done(self) -> None:
        """End of one read from the upstream: write what it produced to the client."""
        out = self._to_client
        if out:
            self.down.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self._response_done:  # (first: a tunnel never sets it, and it is an instance
            self._complete()      # attribute once a response ended, a cheaper read)
        elif self._tunnel:
            self._start_tunnel()

    def on_tunnel_data(self, data: bytes) -> None:
        """Upstream bytes after a 101; b"" is the upstream's EOF."""
        if data:
            self.down.write(data)
        else:
            self.down.write_eof()
            self._tunnel_eof()

    def on_tunnel_closed(self) -> None:
        """The upstream side of the tunnel is gone: close the client side once flushed."""
        self._leave()
        self.up = None
        self.down.close()

    # -- internals -------------------------------------------------------------------------

    def _complete(self) -> None:
        up, self.up = self.up, None
        server = self.server
        if up is not None and server is not None:
            if self._request_complete:
                server.pool.release(up)
            else:
                server.pool.discard(up)  # the upstream answered before reading it all
        log_exchange(self, self.status)
        self.down.finish(keep_alive=not self._close_after)

    def _start_tunnel(self) -> None:
        up = self.up
        if up is None:
            return
        # The request is answered (101), but a tunnel keeps its server's in-flight count
        # until it closes: least_conn weighs open WebSockets, as nginx's and HAProxy's
        # least-connections policies count upgraded connections.
        held, self._in_flight = self._in_flight, None
        log_exchange(self, self.tunnel_status)
        self._in_flight = held
        up.start_tunnel()
        self.down.start_tunnel(self)

    def _tunnel_eof(self) -> None:
        """One direction of the tunnel ended; after both, close it."""
        self._tunnel_eofs += 1
        if self._tunnel_eofs == 2:
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


__all__ = ["ProxyExchange", "UpstreamErrorUnexpected101"]
