"""The proxy's exchange for one HTTP/2 stream: the HTTP/1.1 forwarding state machine
(forward.py) with the response direction turned into HTTP/2.

Everything toward the upstream is inherited: routing, the upstream head (with
X-Forwarded-Proto of the listener), pooled connections, retries, passive health, request
bodies (chunked upstream when the client gave no content-length). What differs is the
client side: the response head becomes an HTTP/2 header list, the body goes out in DATA
frames as the stream's flow-control window allows (http2/stream.py queues the rest and
pauses the upstream connection past its high-water mark), 1xx answers are not relayed,
and an upstream failure after the head is a RST_STREAM instead of a closed connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from veloxy.h1.rules import status_has_no_body
from veloxy.http2.headers import response_headers
from veloxy.proxy.forward import ProxyExchange, UpstreamErrorUnexpected101

if TYPE_CHECKING:
    from veloxy.h1.head import ResponseHead
    from veloxy.upstream.group import Server


class H2ProxyExchange(ProxyExchange):
    protocol_version = "2"  # (the head the stream built says 1.1: it is sent upstream so)

    def on_informational(self, head: ResponseHead) -> None:
        pass  # 100 Continue and friends: an HTTP/2 client does not need them relayed

    def on_response_head(self, head: ResponseHead) -> None:
        self.response_started = True
        self.status = head.status
        server: Server = self.server  # type: ignore[assignment]
        if server.watch or head.status >= 500:
            server.answered(head.status, self._started)
        if head.status == 101:
            self.on_upstream_error(UpstreamErrorUnexpected101(), True)
            return
        stream = self.down
        stream.send_head(response_headers(head.status, head.fields))  # type: ignore[attr-defined]
        if self._head_request or status_has_no_body(head.status):
            self._no_body = True

    _no_body = False

    def on_response_body(self, data: bytes) -> None:
        if not self._no_body:
            self.down.send_body(data)  # type: ignore[attr-defined]

    def on_response_end(self) -> None:
        self.down.send_end()  # type: ignore[attr-defined]
        self._response_done = True

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        self.on_response_head(head)
        if body and self.up is not None:
            self.on_response_body(body)
        if self.up is not None:
            self.on_response_end()

    def on_read_done(self) -> None:
        stream = self.down
        stream.push()  # type: ignore[attr-defined]
        stream.conn.flush_soon()  # type: ignore[attr-defined]
        if self._response_done:
            self._complete()

    def _respond_error(self, status: int, message: str, *, keep_alive: bool) -> None:
        self.response_started = True
        record = getattr(self, "_record", None)
        if record is not None:
            record(status)
        self.down.respond(status, f"{status} {message}\n".encode())  # type: ignore[attr-defined]
        self.down.finish()
