"""The proxy's exchange for one HTTP/2 stream to an HTTP/1.1 upstream: forward.py's
upstream side as it is (routing, the upstream head with the listener's X-Forwarded-Proto,
pooled connections, retries, passive health, request bodies re-chunked when the client
gave no content-length), with the response direction turned into HTTP/2.

What differs is the client side, an `H2Stream`: the response head becomes an HTTP/2 header
list, the body goes out in DATA frames as the stream's flow-control window allows
(http2/stream.py queues the rest and pauses the upstream connection past its high-water
mark), a 1xx goes out as a HEADERS frame of its own, and an upstream failure after the
head is a RST_STREAM instead of a closed connection.

WebSocket over HTTP/2 (RFC 8441): the extended CONNECT went upstream as an HTTP/1.1
Upgrade GET (http2/headers.py); the upstream's 101 becomes `:status 200` (without its
Sec-WebSocket-Accept, which belongs to the HTTP/1.1 handshake) and the stream a tunnel,
forward.py's: the client's DATA is written upstream, the upstream's bytes go out as DATA
under the stream's flow control, END_STREAM and the upstream's EOF are each other's
half-close. Any other answer is relayed as it is, but a 2xx that did not switch
protocols is a 502: to the client, a 2xx would mean the WebSocket is open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from veloxy.errors import UpstreamProtocolError
from veloxy.h1.rules import status_has_no_body
from veloxy.http2.headers import response_headers, response_headers_of
from veloxy.proxy.forward import ProxyExchange, UpstreamErrorUnexpected101

if TYPE_CHECKING:
    from veloxy.h1.head import ResponseHead
    from veloxy.http2.stream import H2Stream


class H2ProxyExchange(ProxyExchange):
    tunnel_status = 200  # RFC 8441 §5: the upstream's 101 reaches the client as 200
    down: H2Stream
    protocol_version = "2"  # (the head the stream built says 1.1: it is sent upstream so)
    _no_body = False

    def on_informational(self, head: ResponseHead) -> None:
        # 100 Continue (what a client that sent `expect: 100-continue` waits for) and
        # 103 Early Hints are relayed, as to HTTP/1.1 clients (RFC 9110 §15.2)
        self.down.send_informational(response_headers(head.status, head.fields))

    def start(self) -> None:
        if self.head.upgrade is not None:
            # A WebSocket's handshake is a whole request upstream (the response-header
            # timeout runs from it), though the client's stream stays open for the tunnel.
            self._request_complete = True
        super().start()

    def request_end(self) -> None:
        if self._tunnel:  # END_STREAM: the client finished sending
            self.flush()  # (the DATA of the same read first)
            self.tunnel_data(b"")
        elif self.head.upgrade is None:
            super().request_end()

    def on_response_head(self, head: ResponseHead) -> None:
        self._answered(head.status)
        status = head.status
        if self.head.upgrade is not None:  # extended CONNECT (RFC 8441)
            if status == 101 and head.upgrade is not None:
                self._tunnel = True
                self.down.send_head([(b":status", b"200")] + [
                    field for field in response_headers(101, head.fields)[1:]
                    if field[0] != b"sec-websocket-accept"])
                return
            if 200 <= status < 300:
                self.response_started = False  # nothing went to the client: a 502 can
                self.on_upstream_error(UpstreamProtocolError(
                    f"upstream answered {status} to a WebSocket upgrade without switching "
                    "protocols"), True)
                return
        elif status == 101:
            self.on_upstream_error(UpstreamErrorUnexpected101(), True)
            return
        self.down.send_head(response_headers_of(head))
        if self.head.method == b"HEAD" or status_has_no_body(head.status):
            self._no_body = True

    def on_response_body(self, data: bytes) -> None:
        if not self._no_body:
            self.down.send_body(data)

    def on_response_end(self) -> None:
        self.down.send_end()
        self._response_done = True

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        # (a whole response in one read: on_response_body and on_response_end inlined)
        self.on_response_head(head)
        if self.up is not None:
            down = self.down
            if body and not self._no_body:
                down.send_body(body)
            down.send_end()
            self._response_done = True

    def on_read_done(self) -> None:
        self.down.push_soon()
        if self._response_done:
            self._complete()
        elif self._tunnel:
            self._start_tunnel()
