"""One load-generating process: its share of the connections, its phases, its histograms.

Why processes and not threads: CPython runs one thread of Python at a time, so a generator that
must outrun a server needs processes (wrk's threads, one event loop each). Each worker owns
`plan.conns` connections and, in open-loop mode, `rate * conns / connections` of the rate; it
talks to the coordinator (runner.py) over a pipe with small pickled tuples:

    worker -> runner   ("ready", index, failed_connects)       all first connects attempted
                       ("tick", index, phase, completed, errors, bytes, sent)   every TICK s
                       ("interval", index, start_s, length_s, encoded)          --hdr-log only
                       ("done", index, WorkerResult-as-dict)
                       ("fail", index, one-line message, is_user_input)
    runner -> worker   ("go",)    start together        ("stop",)  Ctrl-C: end now, report

Phases: connect, [warm-up], measure, drain. At the end of warm-up every counter and histogram
starts again from zero (a request in flight then counts in the measured phase). At the end of
the measured phase no request is started any more, and those in flight may finish for up to
--timeout (the sweeper enforces it), so every request sent in the measured phase ends up
completed, failed or, only when interrupted, abandoned: the counts add up exactly.

Latencies reach the histograms in batches (histogram.py): the drivers append to plain lists,
the ticker counts them every TICK seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from time import perf_counter_ns
from typing import Any, Protocol, cast

from veloxy.errors import UpstreamConnectError
from veloxy.loadgen import histogram as hdr
from veloxy.loadgen.driver import (
    RECONNECT_PAUSE,
    BaseDriver,
    BenchConnection,
    ClosedLoopDriver,
    OpenLoopDriver,
    StatusBenchConnection,
    Tally,
    WorkerHooks,
)
from veloxy.loadgen.h2driver import H2BenchConnection, H2Driver
from veloxy.loadgen.script import Script
from veloxy.loadgen.settings import BenchInputError, BenchSettings
from veloxy.loadgen.tls import ResumingContext, client_context, server_hostname
from veloxy.net.timers import sweeper_for

TICK = 0.25  # seconds between flushes and progress messages
INTERVAL = 1.0  # seconds per --hdr-log interval
#: Debugging and tests: each worker appends its raw microsecond samples to "$VALUE.<index>".
RAW_SAMPLES_ENV = "VELOXY_BENCH_RAW"


class Channel(Protocol):
    def send(self, obj: Any) -> None: ...
    def recv(self) -> Any: ...
    def fileno(self) -> int: ...


@dataclass
class Timeouts:
    connect: float
    response_header: float
    read: float


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    settings: BenchSettings
    connect_host: str  # the resolved address: no name lookup per connect
    first_conn: int  # global number of this worker's first connection
    conns: int
    hdr_intervals: bool = False


@dataclass
class WorkerResult:
    index: int
    elapsed_s: float = 0.0  # the measured window: requests were started during it
    drain_s: float = 0.0  # then waiting for the answers still in flight
    cpu_s: float = 0.0
    sent: int = 0
    completed: int = 0
    bytes_in: int = 0
    errors_connect: int = 0
    errors_read: int = 0
    errors_write: int = 0
    errors_timeout: int = 0
    rejected: int = 0
    handshakes: int = 0
    resumed: int = 0
    abandoned: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    histogram: str = ""
    histogram_uncorrected: str = ""
    schedule_lag: str = ""
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Worker(WorkerHooks):
    def __init__(self, plan: WorkerPlan, channel: Channel) -> None:
        self.plan = plan
        self.settings = s = plan.settings
        self.channel = channel
        self.open_loop = s.open_loop
        self.tally = Tally()
        self.lat: list[int] = []
        self.lat_raw: list[int] = []
        self.lag: list[int] = []
        self.hist = hdr.new_histogram()
        self.hist_raw = hdr.new_histogram()
        self.hist_lag = hdr.new_histogram()
        self.interval_hist = hdr.new_histogram() if plan.hdr_intervals else None
        self.completed = 0
        self.phase = "connect"
        self.drivers: list[Any] = []  # BaseDriver, or H2Driver with --h2
        self.failure: str | None = None
        self.interrupted = False
        self.orphaned = False
        raw = os.environ.get(RAW_SAMPLES_ENV)
        self.raw_path = f"{raw}.{plan.index}" if raw else None
        self._attempted = 0
        self._initial_failures = 0

    # -- WorkerHooks -----------------------------------------------------------------------------

    def script_failed(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
        self._stop.set()

    # -- the run -----------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        plan, s = self.plan, self.settings
        self._stop = asyncio.Event()
        self._go = asyncio.Event()  # the coordinator said go
        self._started = asyncio.Event()  # schedules are set: slots may send
        self._connected = asyncio.Event()
        self.sweeper = sweeper_for(loop)
        self.timeouts = Timeouts(s.timeout, s.timeout, s.timeout)
        self._tls = client_context(s)  # None for http://
        self._server_hostname = server_hostname(s) if self._tls is not None else None
        loop.add_reader(self.channel.fileno(), self._on_control)
        script = None
        if s.script:
            script = Script(s.script, s.target.host_header, s.closes, s.method)
        # Headers are parsed only when a script's response() may look at them.
        self._conn_class = BenchConnection if script is not None else StatusBenchConnection
        request = s.request_bytes()
        head = s.method == "HEAD"
        interval_ns = s.connections * 1e9 / s.rate if s.rate else 0.0
        if s.http2:
            self._add_h2_drivers(interval_ns)
        for i in range(plan.conns if not s.http2 else 0):
            ctx: dict[str, object] = {"id": plan.first_conn + i, "process": plan.index}
            if self.open_loop:
                driver: BaseDriver = OpenLoopDriver(
                    request, head, self.lat.append, self.tally, self,
                    record_raw=self.lat_raw.append, record_lag=self.lag.append,
                    interval_ns=interval_ns, loop=loop, script=script, ctx=ctx)
            else:
                driver = ClosedLoopDriver(request, head, self.lat.append, self.tally, self,
                                          script=script, ctx=ctx)
            if script is not None:
                try:
                    script.call_setup(ctx)
                except Exception as exc:
                    raise BenchInputError(script.describe_error("setup", exc)) from None
            self.drivers.append(driver)
        slots = [loop.create_task(self._slot(d)) for d in self.drivers]
        ticker: asyncio.Task[None] | None = None
        try:
            await self._connected.wait()
            self._send(("ready", plan.index, self._initial_failures))
            await self._first(self._go.wait(), self._stop.wait())
            if self._stop.is_set():
                return
            t0 = perf_counter_ns()
            if s.rate is not None:
                for i, d in enumerate(self.drivers):
                    if isinstance(d, OpenLoopDriver | H2Driver):
                        d.set_schedule(t0 + int((plan.first_conn + i) * 1e9 / s.rate))
            self._started.set()
            ticker = loop.create_task(self._ticker())
            if s.warmup > 0:
                self.phase = "warmup"
                await self._sleep_until(t0 + int(s.warmup * 1e9))
            self._start_measure()
            await self._sleep_until(self._measure_t0 + int(s.duration * 1e9))
            self.interrupted = self.interrupted or (self._stop.is_set() and self.failure is None
                                                    and not self.orphaned)
            await self._drain()
        finally:
            if ticker is not None:
                ticker.cancel()
            for d in self.drivers:
                d.stop()
            for task in slots:
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            loop.remove_reader(self.channel.fileno())
        if self.failure is not None:
            self._send(("fail", plan.index, self.failure, True))
            return
        if self.phase == "measure" and not self.orphaned:
            self._send(("done", plan.index, self._result().to_dict()))

    def _add_h2_drivers(self, interval_ns: float) -> None:
        s = self.settings
        headers = s.h2_headers()
        for _ in range(self.plan.conns):
            if self.open_loop:
                self.drivers.append(H2Driver(
                    headers, s.body, s.streams, self.lat.append, self.tally,
                    record_raw=self.lat_raw.append, record_lag=self.lag.append,
                    interval_ns=interval_ns, loop=self.loop))
            else:
                self.drivers.append(H2Driver(headers, s.body, s.streams, self.lat.append,
                                             self.tally))

    def _in_flight(self) -> int:
        """Requests sent and not answered (an HTTP/2 connection carries several)."""
        if self.settings.http2:
            return sum(len(d.streams) for d in self.drivers)
        return sum(1 for d in self.drivers if d.busy)

    def _start_measure(self) -> None:
        self._flush()
        self.phase = "measure"
        self.tally.reset()
        self.tally.sent = self._in_flight()
        self.completed = 0
        self.hist = hdr.new_histogram()
        self.hist_raw = hdr.new_histogram()
        self.hist_lag = hdr.new_histogram()
        if self.interval_hist is not None:
            self.interval_hist = hdr.new_histogram()
        self._measure_t0 = self._interval_t0 = perf_counter_ns()
        self._cpu0 = time.process_time()

    async def _drain(self) -> None:
        self._measure_end = perf_counter_ns()
        for d in self.drivers:
            d.stop()
        limit = self._measure_end + int((self.settings.timeout + 0.25) * 1e9)
        while any(d.busy for d in self.drivers) and perf_counter_ns() < limit:
            if self.orphaned or self.failure is not None:
                break
            await asyncio.sleep(0.005)
        self._end = perf_counter_ns()
        self._cpu = time.process_time() - self._cpu0
        self._flush()  # the drained answers belong to the measured phase
        if self.interval_hist is not None:
            self._emit_interval(self._end)

    def _result(self) -> WorkerResult:
        t = self.tally
        open_loop = self.open_loop
        return WorkerResult(
            index=self.plan.index,
            elapsed_s=(self._measure_end - self._measure_t0) / 1e9,
            drain_s=(self._end - self._measure_end) / 1e9,
            cpu_s=self._cpu,
            sent=t.sent,
            completed=self.completed,
            bytes_in=t.bytes_in,
            errors_connect=t.errors_connect,
            errors_read=t.errors_read,
            errors_write=t.errors_write,
            errors_timeout=t.errors_timeout,
            rejected=t.rejected,
            handshakes=t.handshakes,
            resumed=t.resumed,
            abandoned=self._in_flight(),
            statuses=dict(t.statuses),
            histogram=hdr.encode(self.hist),
            histogram_uncorrected=hdr.encode(self.hist_raw) if open_loop else "",
            schedule_lag=hdr.encode(self.hist_lag) if open_loop else "",
            interrupted=self.interrupted,
        )

    # -- connections -------------------------------------------------------------------------------

    async def _connect(self, d: Any) -> BenchConnection | H2BenchConnection | None:
        if self.settings.http2:
            try:
                h2conn = await H2BenchConnection.open(
                    self.plan.connect_host, self.settings.target.port, self.sweeper,
                    self.settings.timeout, self.tally, ssl=self._tls,
                    server_hostname=self._server_hostname)
            except UpstreamConnectError:
                if self.phase != "connect":
                    self.tally.errors_connect += 1
                return None
            if self._tls is not None:
                self._count_handshake(h2conn.transport)
            return h2conn
        try:
            conn = await self._conn_class.open(self.plan.connect_host, self.settings.target.port,
                                              self.sweeper, self.timeouts,
                                              on_closed=d.connection_closed, ssl=self._tls,
                                              server_hostname=self._server_hostname)
        except UpstreamConnectError:
            if self.phase != "connect":
                self.tally.errors_connect += 1
            return None
        bench_conn = cast(BenchConnection, conn)  # open() is a classmethod: it made one
        bench_conn.tally = self.tally
        if self._tls is not None:
            self._count_handshake(bench_conn.transport)
        return bench_conn

    def _count_handshake(self, transport: Any) -> None:
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            self.tally.handshakes += 1
            if ssl_object.session_reused:
                self.tally.resumed += 1

    def _keep_session(self, conn: Any) -> None:
        """--tls-resume: the next connection offers this one's session (read after its
        response: TLS 1.3 tickets come after the handshake)."""
        transport = conn.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        session = ssl_object.session if ssl_object is not None else None
        if session is not None and isinstance(self._tls, ResumingContext):
            self._tls.offer = session

    async def _slot(self, d: Any) -> None:
        """Open connections for one driver for the whole run (see driver.py for the timing)."""
        conn = await self._connect(d)
        if conn is None:
            self._initial_failures += 1
        self._attempted += 1
        if self._attempted == len(self.drivers):
            self._connected.set()
        await self._started.wait()
        if conn is not None and not conn.usable:  # closed by the server before the start
            conn = None
        started: int | None = None  # None: the first request of the run
        slept = False
        resume = isinstance(self._tls, ResumingContext)
        try:
            while d.running:
                if conn is None:
                    slept = False
                    if isinstance(d, OpenLoopDriver) or (isinstance(d, H2Driver) and d.open_loop):
                        wait = d.due - perf_counter_ns()
                        if wait > 0:
                            await asyncio.sleep(wait * 1e-9)
                            slept = True
                        if not d.running:
                            break
                    started = perf_counter_ns()
                    conn = await self._connect(d)
                    if conn is None:
                        await asyncio.sleep(RECONNECT_PAUSE)
                        continue
                    if not d.running:
                        break
                waiter = d.attach(conn, self.loop)
                d.begin(started, slept)
                await waiter
                if resume:
                    self._keep_session(conn)
                if not d.running:
                    break
                conn = None
        finally:
            if conn is not None:
                conn.close()

    # -- time ------------------------------------------------------------------------------------

    async def _sleep_until(self, deadline_ns: int) -> None:
        delay = (deadline_ns - perf_counter_ns()) * 1e-9
        if delay > 0 and not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass

    @staticmethod
    async def _first(*aws: Any) -> None:
        tasks = [asyncio.ensure_future(a) for a in aws]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self._flush()
            t = self.tally
            self._send(("tick", self.plan.index, self.phase, self.completed, t.errors,
                        t.bytes_in, t.sent))
            if self.interval_hist is not None and self.phase == "measure":
                now = perf_counter_ns()
                if now - self._interval_t0 >= INTERVAL * 1e9:
                    self._emit_interval(now)

    def _flush(self) -> None:
        lat = self.lat
        if lat:
            counted = Counter(lat)
            if self.raw_path is not None and self.phase == "measure":
                with open(self.raw_path, "a") as out:
                    out.write("".join(f"{v}\n" for v in lat))
            lat.clear()
            self.completed += hdr.record_counts(self.hist, counted)
            if self.interval_hist is not None:
                hdr.record_counts(self.interval_hist, counted)
        if self.lat_raw:
            hdr.record_batch(self.hist_raw, self.lat_raw)
            self.lat_raw.clear()
        if self.lag:
            hdr.record_batch(self.hist_lag, self.lag)
            self.lag.clear()

    def _emit_interval(self, now: int) -> None:
        hist = self.interval_hist
        assert hist is not None
        start = (self._interval_t0 - self._measure_t0) / 1e9
        length = (now - self._interval_t0) / 1e9
        self._send(("interval", self.plan.index, start, length, hdr.encode(hist)))
        self.interval_hist = hdr.new_histogram()
        self._interval_t0 = now

    # -- control pipe ------------------------------------------------------------------------------

    def _on_control(self) -> None:
        try:
            message = self.channel.recv()
        except (EOFError, OSError):
            self.orphaned = True  # the coordinator is gone: stop quietly
            self.loop.remove_reader(self.channel.fileno())
            self._stop.set()
            self._go.set()
            return
        if message[0] == "go":
            self._go.set()
        elif message[0] == "stop":
            self.interrupted = True
            self._stop.set()

    def _send(self, message: tuple[Any, ...]) -> None:
        if self.orphaned:
            return
        try:
            self.channel.send(message)
        except (BrokenPipeError, OSError):
            self.orphaned = True
            self._stop.set()


def worker_main(plan: WorkerPlan, channel: Channel, debug: bool = False) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    from veloxy.net.loop import run

    try:
        run(Worker(plan, channel).run())
    except BenchInputError as exc:
        _try_send(channel, ("fail", plan.index, str(exc), True))
    except Exception as exc:
        detail = traceback.format_exc() if debug else f"{type(exc).__name__}: {exc}"
        _try_send(channel, ("fail", plan.index, f"worker {plan.index} failed: {detail}", False))


def _try_send(channel: Channel, message: tuple[Any, ...]) -> None:
    try:
        channel.send(message)
    except OSError:
        pass
