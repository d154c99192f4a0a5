"""The proxy's exchange for one HTTP/2 stream to an HTTP/1.1 upstream: forward.py's
upstream side as it is (routing, the upstream head with the listener's X-Forwarded-Proto,
pooled connections, retries, passive health, request bodies re-chunked when the client
gave no content-length), with the response direction turned into HTTP/2.

What differs is the client side, an `H2Stream`: the response head becomes an HTTP/2 header
list, the body goes out in DATA frames as the stream's flow-control window allows
(http2/stream.py queues the rest and pauses the upstream connection past its high-water
mark), a 1xx goes out as a HEADERS frame of its own, and an upstream failure after the
head is a RST_STREAM instead of a closed connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from veloxy.h1.rules import status_has_no_body
from veloxy.http2.headers import response_headers
from veloxy.proxy.forward import ProxyExchange, UpstreamErrorUnexpected101

if TYPE_CHECKING:
    from veloxy.h1.head import ResponseHead
    from veloxy.http2.stream import H2Stream


class H2ProxyExchange(ProxyExchange):
    down: H2Stream
    protocol_version = "2"  # (the head the stream built says 1.1: it is sent upstream so)
    _no_body = False

    def on_informational(self, head: ResponseHead) -> None:
        # 100 Continue (what a client that sent `expect: 100-continue` waits for) and
        # 103 Early Hints are relayed, as to HTTP/1.1 clients (RFC 9110 §15.2)
        self.down.send_informational(response_headers(head.status, head.fields))

    def on_response_head(self, head: ResponseHead) -> None:
        self._answered(head.status)
        if head.status == 101:
            self.on_upstream_error(UpstreamErrorUnexpected101(), True)
            return
        self.down.send_head(response_headers(head.status, head.fields))
        if self.head.method == b"HEAD" or status_has_no_body(head.status):
            self._no_body = True

    def on_response_body(self, data: bytes) -> None:
        if not self._no_body:
            self.down.send_body(data)

    def on_response_end(self) -> None:
        self.down.send_end()
        self._response_done = True

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        self.on_response_head(head)
        if body and self.up is not None:
            self.on_response_body(body)
        if self.up is not None:
            self.on_response_end()

    def on_read_done(self) -> None:
        self.down.push_soon()
        if self._response_done:
            self._complete()
