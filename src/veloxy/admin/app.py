"""The admin listener's HTTP API, an Application of net.server (as the proxy and the origin):

    GET  /healthz   200 "ok" while serving (503 "shutting down" once a stop began)
    GET  /metrics   Prometheus text exposition, every worker's numbers summed
    GET  /status    JSON: version, uptime, workers, routes, upstream servers (health, pool,
                    recent latency)
    POST /reload    re-read and apply the config file; JSON result, 400 if it is invalid

Answers are computed after the request body is read (a task per admin request: these are
rare, and gathering other workers' numbers awaits).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from veloxy.h1.serialize import status_line

if TYPE_CHECKING:
    from veloxy.admin.runtime import WorkerRuntime
    from veloxy.h1.head import RequestHead
    from veloxy.net.server_connection import ServerConnection

log = logging.getLogger("veloxy.admin")

METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE = b"application/json"
TEXT_TYPE = b"text/plain; charset=utf-8"

#: path -> the method it takes.
ENDPOINTS = {b"/healthz": b"GET", b"/metrics": b"GET", b"/status": b"GET", b"/reload": b"POST"}


class AdminApp:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self._tasks: set[asyncio.Task[None]] = set()

    def start_exchange(self, conn: ServerConnection, head: RequestHead) -> AdminExchange:
        return AdminExchange(self, conn, head)


class AdminExchange:
    response_started = False

    def __init__(self, app: AdminApp, conn: ServerConnection, head: RequestHead) -> None:
        self._app = app
        self.conn = conn
        self.head = head

    def start(self) -> None:
        pass  # answered at request_end, once any body is read (and dropped)

    def request_body(self, data: bytes) -> None:
        pass

    def request_end(self) -> None:
        task = asyncio.get_running_loop().create_task(self._answer())
        self._app._tasks.add(task)
        task.add_done_callback(self._app._tasks.discard)

    async def _answer(self) -> None:
        path = self.head.target.split(b"?", 1)[0]
        method = self.head.method
        allowed = ENDPOINTS.get(path)
        runtime = self._app.runtime
        try:
            if allowed is None:
                self._send(404, TEXT_TYPE, b"not found: try /metrics, /status, /healthz or "
                                           b"POST /reload\n")
            elif method != allowed and not (method == b"HEAD" and allowed == b"GET"):
                self._send(405, TEXT_TYPE, b"method not allowed\n",
                           extra=b"Allow: " + allowed + b"\r\n")
            elif path == b"/healthz":
                if runtime.stopping:
                    self._send(503, TEXT_TYPE, b"shutting down\n")
                else:
                    self._send(200, TEXT_TYPE, b"ok\n")
            elif path == b"/metrics":
                self._send(200, METRICS_TYPE, (await runtime.metrics_text()).encode())
            elif path == b"/status":
                self._send(200, JSON_TYPE, _json(await runtime.status()))
            else:
                status, result = await runtime.reload()
                self._send(status, JSON_TYPE, _json(result))
        except Exception as exc:
            log.exception("admin %s %s failed", method.decode(), path.decode("latin-1"))
            self._send(500, TEXT_TYPE, f"internal error: {exc}\n".encode())

    def _send(self, status: int, content_type: bytes, body: bytes, extra: bytes = b"") -> None:
        conn = self.conn
        if conn.transport is None or conn.transport.is_closing():
            return
        self.response_started = True
        close = self.head.close or not conn.keep_alive
        head = [status_line(status), b"Content-Type: ", content_type,
                b"\r\nContent-Length: %d\r\nCache-Control: no-store\r\n" % len(body), extra]
        if close:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        if self.head.method == b"HEAD":
            body = b""
        conn.write(b"".join(head) + body)
        conn.finish(keep_alive=not close)

    def flush(self) -> None:
        pass

    def downstream_paused(self) -> None:
        pass

    def downstream_resumed(self) -> None:
        pass

    def downstream_lost(self) -> None:
        pass

    def tunnel_data(self, data: bytes) -> None:
        pass


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()
