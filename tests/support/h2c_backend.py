"""A small HTTP/2 (h2c, prior knowledge; or over TLS with `tls=` a server context offering
ALPN h2) server on the h2 package, on a real socket: the upstream of the gRPC-style
tests. Each request is answered with its body echoed and gRPC-like trailers, after `delay`
seconds; behaviour is set per backend:

- `refuse`: every stream is reset with REFUSED_STREAM (RFC 9113 §8.7: not processed);
- paths under /reset/ are reset with CANCEL once the request is complete (processed, or
  may have been);
- paths with /hints/ in them get a 103 Early Hints (a Link field) before the answer;
- `status`: the status of every answer (503 to play a failing server);
- `healthy`: whether GET /healthz answers 200 (else 503);
- `stream_limit`: the SETTINGS_MAX_CONCURRENT_STREAMS it advertises (None: h2's default).

It records the request heads (`requests`), counts connections, the most streams it had
open at once on one connection (`max_streams`: received, not yet answered), and serves each
connection on a thread of its own; answers due later are kept in a schedule, so a slow
answer on one stream does not hold the others back.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings


class H2cBackend:
    def __init__(self, name: str = "backend", delay: float = 0.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.tls = tls
        self.delay = delay
        self.refuse = False
        self.status = 200
        self.healthy = True
        self.stream_limit: int | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        #: What each TLS connection's ALPN chose (None: none), in order.
        self.alpn: list[str | None] = []
        self.connections = 0
        self.max_streams = 0
        self.requests: list[dict[bytes, bytes]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def answered(self, prefix: bytes) -> int:
        """Requests seen whose path starts with `prefix` (health checks aside)."""
        return sum(1 for h in self.requests if h[b":path"].startswith(prefix))

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        if self.tls is not None:
            sock.settimeout(5)
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                return
            self.alpn.append(sock.selected_alpn_protocol())
            if sock.selected_alpn_protocol() != "h2":
                sock.close()
                return
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        if self.stream_limit is not None:
            conn.local_settings = h2.settings.Settings(client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.stream_limit})
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        sock.settimeout(0.005)
        heads: dict[int, dict[bytes, bytes]] = {}
        bodies: dict[int, bytes] = {}
        due: list[tuple[float, int]] = []
        with sock:
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    data = None
                except OSError:
                    return
                if data == b"":
                    return
                for event in conn.receive_data(data) if data else []:
                    if isinstance(event, h2.events.RequestReceived):
                        head = heads[event.stream_id] = dict(event.headers)
                        bodies[event.stream_id] = b""
                        if head[b":path"] != b"/healthz":
                            self.requests.append(head)
                        if self.refuse:
                            conn.reset_stream(event.stream_id,
                                              h2.errors.ErrorCodes.REFUSED_STREAM)
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and not self.refuse:
                        due.append((time.monotonic() + self.delay, event.stream_id))
                if len(heads) > self.max_streams and not self.refuse:
                    self.max_streams = len(heads)
                now = time.monotonic()
                for item in [d for d in due if d[0] <= now]:
                    due.remove(item)
                    self._answer(conn, item[1], heads.pop(item[1]), bodies.pop(item[1]))
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)

    def _answer(self, conn: h2.connection.H2Connection, sid: int, head: dict[bytes, bytes],
                body: bytes) -> None:
        path = head[b":path"]
        try:
            if path.startswith(b"/reset/"):
                conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                return
            if path == b"/healthz":
                status = 200 if self.healthy else 503
                conn.send_headers(sid, [(b":status", b"%d" % status),
                                        (b"content-length", b"0")], end_stream=True)
                return
            if b"/hints/" in path:
                conn.send_headers(sid, [(b":status", b"103"),
                                        (b"link", b"</s.css>; rel=preload")])
            conn.send_headers(sid, [(b":status", b"%d" % self.status),
                                    (b"content-type", b"application/grpc"),
                                    (b"x-backend", self.name.encode())])
            conn.send_data(sid, b"echo:" + body)
            conn.send_headers(sid, [(b"grpc-status", b"0"), (b"grpc-message", b"ok")],
                              end_stream=True)
        except h2.exceptions.ProtocolError:
            pass  # the proxy cancelled the stream, or closed the connection (a probe's), meanwhile

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(2)
