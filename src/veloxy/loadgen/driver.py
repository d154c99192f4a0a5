"""The hot path: one `ResponseSink` per connection slot, driving the proxy's ClientConnection.

Why it looks like this: at tens of thousands of requests a second per process, every Python
operation per request shows in the result. So the fast path is callbacks only (no task, no
future, no per-request object of ours): the parser calls `on_response_end`, which takes one
clock reading and appends an integer of microseconds to a list; `on_read_done`, called once at
the end of the socket read, releases the connection and writes the next prebuilt request. The
clock reading that ends one response starts the next request in the closed loop (one
`perf_counter_ns` per request). Per-connection coroutines (`Slot.run`) exist only to (re)open
connections: once per connection with keep-alive, once per request with --close.

Two drivers:

* `ClosedLoopDriver` (wrk): send the next request when the answer arrives.
* `OpenLoopDriver` (wrk2): request n of the connection is due at `base + n * interval`. When
  the answer to the previous one arrives after the next was due (the connection was busy, so a
  real client would have been kept waiting), the request goes out at once and its latency is
  counted from when it was due: this is the coordinated-omission correction. When the
  connection is idle before the due time, a timer sends it; uvloop timers have a 1 ms grain, so
  the slack of the timer itself (early or late) is the generator's, not the server's: such a
  request is timed from when it really left, and the slack is recorded apart as "schedule lag".
  The uncorrected histogram always times from the real send.

Latency of a request that needs a new connection (every request with --close, the first after
an error) includes the connect: that is what a client without keep-alive waits for (wrk starts
the clock after connecting).

Errors are counted wrk's way: connect, read (reset, truncated or malformed response), write,
timeout; a response with a status outside 2xx/3xx is a completed request *and* counted apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from veloxy.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from veloxy.h1.head import ResponseHead
from veloxy.h1.parser import StatusResponseParser, response_parser
from veloxy.net.client import ClientConnection
from veloxy.net.timers import DeadlineSweeper

if TYPE_CHECKING:
    from veloxy.loadgen.script import Script

#: Pause after a failed connect before the next try, so a refusing server is not spun on.
RECONNECT_PAUSE = 0.01


class Tally:
    """Counters of one worker process for the current phase (reset at the end of warm-up)."""

    __slots__ = ("bytes_in", "errors_connect", "errors_read", "errors_timeout", "errors_write",
                 "handshakes", "rejected", "resumed", "sent", "statuses")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.bytes_in = 0
        self.sent = 0
        self.errors_connect = 0
        self.errors_read = 0
        self.errors_write = 0
        self.errors_timeout = 0
        self.rejected = 0
        #: https://: TLS handshakes completed, and how many of them resumed a session.
        self.handshakes = 0
        self.resumed = 0
        #: Counts of every status other than 200 (200s are the completed rest).
        self.statuses: dict[int, int] = {}

    def note_status(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def count_error(self, exc: BaseException) -> None:
        if isinstance(exc, UpstreamTimeout):
            self.errors_timeout += 1
        elif isinstance(exc, UpstreamConnectError):
            self.errors_connect += 1
        else:  # reset before the answer, truncated or malformed answer: wrk's "read"
            self.errors_read += 1

    @property
    def errors(self) -> int:
        return self.errors_connect + self.errors_read + self.errors_write + self.errors_timeout


class BenchConnection(ClientConnection):
    """The proxy's ClientConnection, counting the bytes it reads (for transfer/s)."""

    __slots__ = ("tally",)

    def __init__(self, sweeper: DeadlineSweeper, timeouts: object,
                 on_closed: Callable[[ClientConnection], None] | None = None) -> None:
        super().__init__(sweeper, timeouts, on_closed)  # type: ignore[arg-type]  # bench passes its own Timeouts-shaped settings
        self.tally: Tally | None = None

    def data_received(self, data: bytes) -> None:
        self.tally.bytes_in += len(data)  # type: ignore[union-attr]  # tally is set before the connection is used
        ClientConnection.data_received(self, data)


def _status_parser(handler: ClientConnection) -> Any:
    return response_parser(handler, StatusResponseParser)


class StatusBenchConnection(BenchConnection):
    """For runs without a script: nothing reads the response headers. The C fast lane parses
    common heads in one call (their fields stay in wire form, never split) and hands the
    whole response over in one event; what it declines goes to h1.parser.StatusResponseParser,
    which makes no Python call per header. Figures: docs/BENCHMARKS.md, "veloxy bench's CPU
    per request"."""

    __slots__ = ()
    parser_class = staticmethod(_status_parser)


class WorkerHooks:
    """What a driver needs from its worker (kept small so drivers can be tested alone)."""

    def script_failed(self, message: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class BaseDriver:
    """State shared by both drivers; the ResponseSink methods nobody on the fast path needs."""

    __slots__ = (
        "_body",
        "_head",
        "busy",
        "conn",
        "ctx",
        "done",
        "ended_at",
        "head_request",
        "hooks",
        "record",
        "request",
        "running",
        "script",
        "sent_at",
        "tally",
        "waiter",
    )

    def __init__(self, request: bytes, head_request: bool, record: Callable[[int], None],
                 tally: Tally, hooks: WorkerHooks, script: Script | None = None,
                 ctx: dict[str, object] | None = None) -> None:
        self.request = request
        self.head_request = head_request
        self.record = record
        self.tally = tally
        self.hooks = hooks
        self.script = script
        self.ctx: dict[str, object] = ctx if ctx is not None else {}
        self.conn: ClientConnection | None = None
        self.running = True
        self.busy = False  # a request is in flight
        self.done = False  # its response ended in the current read
        self.sent_at = 0
        self.ended_at = 0
        self.waiter: asyncio.Future[None] | None = None
        self._head: ResponseHead | None = None
        self._body: list[bytes] | None = None

    # -- what each loop defines ------------------------------------------------------------------

    def begin(self, started: int | None, slept: bool = False) -> None:
        raise NotImplementedError

    def on_response_end(self) -> None:
        raise NotImplementedError

    def on_read_done(self) -> None:
        raise NotImplementedError

    # -- ResponseSink: rarely used parts ------------------------------------------------------

    def on_informational(self, head: ResponseHead) -> None:
        pass

    def on_response_head(self, head: ResponseHead) -> None:
        if head.status != 200:
            self.tally.note_status(head.status)
        if self._body is not None:
            self._head = head

    def on_response_body(self, chunk: bytes) -> None:
        if self._body is not None:
            self._body.append(chunk)

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        self.on_response_head(head)
        if body:
            self.on_response_body(body)
        self.on_response_end()

    def upstream_paused(self) -> None:
        pass

    def upstream_resumed(self) -> None:
        pass

    def on_tunnel_data(self, data: bytes) -> None:
        pass  # the generator never asks for an upgrade

    def on_tunnel_closed(self) -> None:
        pass

    def on_upstream_error(self, exc: UpstreamError, received: bool) -> None:
        self.busy = False
        self.done = False
        self.tally.count_error(exc)
        self.lost()

    # -- connection slot bookkeeping ------------------------------------------------------------

    def attach(self, conn: ClientConnection, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        self.conn = conn
        waiter = self.waiter = loop.create_future()
        return waiter

    def connection_closed(self, conn: ClientConnection) -> None:
        """ClientConnection's on_closed: a connection closed while idle (the server's
        keep-alive timeout, between two open-loop requests) must be replaced before the next
        request, not discovered by a timeout. A busy one is reported by on_upstream_error."""
        if conn is self.conn and not self.busy:
            self.cancel_timer()
            self.lost()

    def cancel_timer(self) -> None:
        pass

    def lost(self) -> None:
        """The connection cannot carry another request: wake the slot to open a new one."""
        self.conn = None
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop(self) -> None:
        """No new requests; an in-flight one may still complete (the drain)."""
        self.running = False
        if not self.busy:
            self.lost()

    def next_request(self) -> bytes:
        """The bytes of the next request: prebuilt, or from the script's request()."""
        script = self.script
        if script is None or script.request is None:
            return self.request
        try:
            return script.request_bytes(self.ctx)
        except Exception as exc:  # the user's code: report, never crash the loop
            self.running = False
            self.hooks.script_failed(script.describe_error("request", exc))
            return b""

    def _want_body(self) -> None:
        if self.script is not None and self.script.response is not None:
            self._body = []

    def _script_response(self) -> None:
        head, body = self._head, b"".join(self._body or ())
        self._body = []
        self._head = None
        script = self.script
        assert script is not None and head is not None
        try:
            if script.call_response(head, body, self.ctx) is False:
                self.tally.rejected += 1
        except Exception as exc:
            self.running = False
            self.hooks.script_failed(script.describe_error("response", exc))

    def _write(self, conn: ClientConnection) -> None:
        request = self.request if self.script is None else self.next_request()
        if not self.running:
            self.lost()
            return
        self.busy = True
        self.tally.sent += 1
        if self.head_request:
            conn.send(request, self, head_request=True)
        else:
            conn.send(request, self)


class ClosedLoopDriver(BaseDriver):
    """wrk's loop: the next request leaves as soon as the previous answer is complete."""

    __slots__ = ()

    def begin(self, started: int | None, slept: bool = False) -> None:
        """A fresh connection is attached: send a request, timed from `started` (when the slot
        began connecting for it), or from now at the start of the run (None)."""
        self._want_body()
        self.sent_at = perf_counter_ns() if started is None else started
        self._write(self.conn)  # type: ignore[arg-type]  # a slot with a request to send has its connection

    def on_response_end(self) -> None:
        now = perf_counter_ns()
        self.record((now - self.sent_at) // 1000)
        self.ended_at = now
        self.done = True

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        """The fast lane's whole response in one call (on_response_end inlined: one Python
        call per response instead of three; docs/BENCHMARKS.md, "veloxy bench's CPU per
        request"). A script or another status takes the general path."""
        if head.status != 200 or self._body is not None:
            BaseDriver.on_response(self, head, body)
            return
        now = perf_counter_ns()
        self.record((now - self.sent_at) // 1000)
        self.ended_at = now
        self.done = True

    def on_read_done(self) -> None:
        if not self.done:
            return
        self.done = False
        self.busy = False
        if self._body is not None:
            self._script_response()
        conn = self.conn
        if conn.release():  # type: ignore[union-attr]  # a response came on the slot's connection
            if self.running:
                self.sent_at = self.ended_at
                self._write(conn)  # type: ignore[arg-type]  # the connection just released
            else:
                self.lost()
        else:
            self.lost()


class OpenLoopDriver(BaseDriver):
    """wrk2's loop: requests are due on a fixed schedule whatever the server does."""

    __slots__ = ("base", "due", "interval", "loop", "n", "record_lag", "record_raw", "start_at",
                 "timer")

    def __init__(self, request: bytes, head_request: bool, record: Callable[[int], None],
                 tally: Tally, hooks: WorkerHooks, *, record_raw: Callable[[int], None],
                 record_lag: Callable[[int], None], interval_ns: float,
                 loop: asyncio.AbstractEventLoop, script: Script | None = None,
                 ctx: dict[str, object] | None = None) -> None:
        super().__init__(request, head_request, record, tally, hooks, script, ctx)
        self.record_raw = record_raw
        self.record_lag = record_lag
        self.interval = interval_ns
        self.loop = loop
        self.base = 0
        self.n = 0
        self.due = 0
        self.start_at = 0
        self.timer: asyncio.TimerHandle | None = None

    def set_schedule(self, base_ns: int) -> None:
        """Request n of this connection is due at base_ns + n * interval."""
        self.base = base_ns
        self.n = 0
        self.due = base_ns

    def begin(self, started: int | None, slept: bool = False) -> None:
        """A fresh connection is attached. `started` None: the run is starting, follow the
        schedule. Else the slot began connecting for the due request at `started`: after
        sleeping until its due time (`slept`: timed from the connect, the sleep's slack is
        schedule lag), or at once because it was already due (backlog: timed from the due
        time). Both histograms include the connect; they differ only by the correction."""
        self._want_body()
        if started is None:
            self._free(perf_counter_ns())
        elif slept:
            lag = started - self.due
            self.record_lag(lag // 1000 if lag > 0 else 0)
            self._send(started, started)
        else:
            self._send(min(self.due, started), started)

    def on_response_end(self) -> None:
        now = perf_counter_ns()
        self.record((now - self.start_at) // 1000)
        self.record_raw((now - self.sent_at) // 1000)
        self.ended_at = now
        self.done = True

    def on_response(self, head: ResponseHead, body: bytes) -> None:
        """As ClosedLoopDriver.on_response: on_response_end inlined for the common answer."""
        if head.status != 200 or self._body is not None:
            BaseDriver.on_response(self, head, body)
            return
        now = perf_counter_ns()
        self.record((now - self.start_at) // 1000)
        self.record_raw((now - self.sent_at) // 1000)
        self.ended_at = now
        self.done = True

    def on_read_done(self) -> None:
        if not self.done:
            return
        self.done = False
        self.busy = False
        if self._body is not None:
            self._script_response()
        if self.conn.release():  # type: ignore[union-attr]  # a response came on the slot's connection
            if self.running:
                self._free(self.ended_at)
            else:
                self.lost()
        else:
            self.lost()

    def _free(self, now: int) -> None:
        """The connection is idle: send the next request now if it is due, else at its time."""
        due = self.due
        if due <= now:
            self._send(due, now)  # backlog: the wait is the server's, count it
        else:
            self.timer = self.loop.call_later((due - now) * 1e-9, self._fire)

    def _fire(self) -> None:
        self.timer = None
        conn = self.conn
        if not self.running or conn is None:
            return
        if not conn.usable:  # closed by the server while we waited
            self.lost()
            return
        now = perf_counter_ns()
        lag = now - self.due
        self.record_lag(lag // 1000 if lag > 0 else 0)
        self._send(now, now)

    def _send(self, start: int, sent: int) -> None:
        """Send the due request; corrected latency from `start`, uncorrected from `sent`."""
        self.start_at = start
        self.sent_at = sent
        self.n += 1
        self.due = self.base + int(self.n * self.interval)
        self._write(self.conn)  # type: ignore[arg-type]  # a slot with a request to send has its connection

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop(self) -> None:
        self.cancel_timer()
        super().stop()
