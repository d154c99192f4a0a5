"""`veloxy origin`: a small, fast HTTP/1.1 backend whose answer is set by the query string.

Used by the demo, the benchmarks and the tests as the server behind the proxy. It runs on
the same ServerConnection as the proxy (a second Application of net.server), so it also
exercises the downstream code path.

Query parameters (all optional):
    size=16k      response body size (bytes; k/m/g suffixes), default 100
    delay=50ms    wait this long before answering
    status=404    response status, default 200
    chunked=1     send the body chunked (in 16 KiB chunks) instead of with Content-Length
    close=1       answer with Connection: close and close the connection

Paths: `/echo` answers with the request body itself; `/healthz` answers "ok". Every response
carries X-Echo-Method, X-Echo-Path (the request target) and X-Echo-Body-Length (bytes of
request body received).
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from veloxy.config import parse_duration, parse_size
from veloxy.h1.head import RequestHead
from veloxy.h1.serialize import LAST_CHUNK, chunk, error_response, status_line
from veloxy.net.server_connection import ServerConnection

# Bodies above this are produced piece by piece under flow control rather than in memory.
STREAM_ABOVE = 1 << 20
PIECE = 64 * 1024
CHUNK = 16 * 1024


class ResponsePlan:
    """What to answer, decoded once per distinct query string and cached."""

    __slots__ = ("chunked", "close", "delay", "size", "status")

    def __init__(self, query: str) -> None:
        self.size = 100
        self.delay = 0.0
        self.status = 200
        self.chunked = False
        self.close = False
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "size":
                self.size = parse_size(value)
            elif key == "delay":
                self.delay = parse_duration(value)
            elif key == "status":
                self.status = int(value)
                if not 100 <= self.status <= 999:
                    raise ValueError(f"status out of range: {value}")
            elif key == "chunked":
                self.chunked = value not in ("", "0", "false")
            elif key == "close":
                self.close = value not in ("", "0", "false")


_body_cache: dict[int, bytes] = {}


def _body(size: int) -> bytes:
    body = _body_cache.get(size)
    if body is None:
        line = b"veloxy origin payload 0123456789abcdefghijklmnopqrstuvwxyz\n"
        body = (line * (size // len(line) + 1))[:size]
        if len(_body_cache) < 64:
            _body_cache[size] = body
    return body


class OriginApp:
    def __init__(self) -> None:
        self._plans: dict[bytes, ResponsePlan | str] = {}

    def start_exchange(self, conn: ServerConnection, head: RequestHead) -> OriginExchange:
        return OriginExchange(self, conn, head)

    def plan(self, target: bytes) -> ResponsePlan | str:
        """The plan for a target, or an error message for a bad query."""
        plan = self._plans.get(target)
        if plan is None:
            _, _, query = target.partition(b"?")
            try:
                plan = ResponsePlan(query.decode("latin-1"))
            except ValueError as exc:
                plan = f"bad query: {exc}"
            if len(self._plans) < 1024:
                self._plans[target] = plan
        return plan


class OriginExchange:
    __slots__ = (
        "_app",
        "_body_length",
        "_echo",
        "_rechunk",
        "_remaining",
        "conn",
        "head",
        "response_started",
    )

    def __init__(self, app: OriginApp, conn: ServerConnection, head: RequestHead) -> None:
        self._app = app
        self.conn = conn
        self.head = head
        self.response_started = False
        self._body_length = 0
        self._echo: list[bytes] | None = [] if head.target.startswith(b"/echo") else None
        self._remaining = 0
        self._rechunk = False

    def start(self) -> None:
        pass  # answers at request_end, once the body is read

    def request_body(self, data: bytes) -> None:
        self._body_length += len(data)
        if self._echo is not None:
            self._echo.append(data)

    def request_end(self) -> None:
        plan = self._app.plan(self.head.target)
        if isinstance(plan, str):
            self.response_started = True
            self.conn.write(error_response(400, plan, close=False))
            self.conn.finish()
            return
        if plan.delay:
            asyncio.get_running_loop().call_later(plan.delay, self._respond, plan)
        else:
            self._respond(plan)

    def flush(self) -> None:
        pass

    def _respond(self, plan: ResponsePlan) -> None:
        conn = self.conn
        if conn.transport is None or conn.transport.is_closing():
            return
        self.response_started = True
        head = self.head
        if self._echo is not None:
            body = b"".join(self._echo)
        elif head.target.startswith(b"/healthz"):
            body = b"ok\n"
        else:
            body = b"" if plan.size > STREAM_ABOVE else _body(plan.size)
        size = len(body) if plan.size <= STREAM_ABOVE or self._echo is not None else plan.size
        no_body = head.method == b"HEAD" or plan.status in (204, 304) or plan.status < 200
        close = plan.close or head.close or not conn.keep_alive
        parts = [
            status_line(plan.status),
            b"Server: veloxy-origin\r\nX-Echo-Method: ", head.method,
            b"\r\nX-Echo-Path: ", head.target,
            b"\r\nX-Echo-Body-Length: %d\r\n" % self._body_length,
        ]
        if close:
            parts.append(b"Connection: close\r\n")
        elif head.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        if plan.chunked and not no_body:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
            self._rechunk = True
        elif plan.status not in (204, 304) and plan.status >= 200:
            parts.append(b"Content-Length: %d\r\n\r\n" % size)
        else:
            parts.append(b"\r\n")
        if no_body:
            conn.write(b"".join(parts))
            conn.finish(keep_alive=not close)
            return
        if size > len(body):  # large: stream it under flow control
            conn.write(b"".join(parts))
            self._remaining = size
            self._pump()
            return
        if self._rechunk:
            parts.extend(chunk(body[i:i + CHUNK]) for i in range(0, len(body), CHUNK))
            parts.append(LAST_CHUNK)
        else:
            parts.append(body)
        conn.write(b"".join(parts))
        conn.finish(keep_alive=not close)

    def _pump(self) -> None:
        conn = self.conn
        piece = _body(PIECE)
        while self._remaining > 0 and not conn.writing_paused:
            if conn.transport is None or conn.transport.is_closing():
                return
            data = piece[: min(PIECE, self._remaining)]
            self._remaining -= len(data)
            conn.write(chunk(data) if self._rechunk else data)
        if self._remaining == 0:
            self._remaining = -1
            if self._rechunk:
                conn.write(LAST_CHUNK)
            conn.finish(keep_alive=conn.keep_alive and not self.head.close)

    def downstream_paused(self) -> None:
        pass

    def downstream_resumed(self) -> None:
        if self._remaining > 0:
            self._pump()

    def downstream_lost(self) -> None:
        self._remaining = -1

    def tunnel_data(self, data: bytes) -> None:
        pass
