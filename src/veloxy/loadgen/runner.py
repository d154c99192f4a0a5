"""The coordinating process of `veloxy bench`: pre-flight, workers, progress, Ctrl-C, merging.

Why the coordinator generates no load itself: it must stay responsive (progress a few times a
second, Ctrl-C at any moment, the interval log written as it comes) and its own CPU would skew
the workers' share of the machine. It sleeps in `multiprocessing.connection.wait` between
messages, so it costs almost nothing.

Order of a run:
1. pre-flight, in this process: resolve the host once (workers connect to the address, no
   lookup per connection), open and close one TCP connection (an unreachable URL is a one-line
   error, exit 2, before anything starts), load the script and call setup()/request() once;
2. start `processes` workers (fork where available: no re-import) with SIGINT ignored in them;
3. when every worker has made its first connections, tell them all "go";
4. collect ticks (progress), interval histograms (--hdr-log) and the final results; merge the
   histograms exactly (histogram.py);
5. Ctrl-C: tell the workers to stop, wait for their partial results, return them marked
   interrupted. A second Ctrl-C stops waiting.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from hdrh.histogram import HdrHistogram

from veloxy.loadgen import histogram as hdr
from veloxy.loadgen.h2driver import NotHttp2Error, probe
from veloxy.loadgen.script import Script
from veloxy.loadgen.settings import BenchInputError, BenchSettings, format_start_time
from veloxy.loadgen.tls import client_context, handshake
from veloxy.loadgen.worker import WorkerPlan, WorkerResult, worker_main

#: A worker using this share of a CPU or more is the bottleneck: its numbers are suspect.
SATURATED_CPU = 0.90
#: In open-loop mode, an achieved rate below this share of -R is suspect.
RATE_HELD = 0.99
PROGRESS_EVERY = 0.25


class BenchRunError(RuntimeError):
    """The generator itself failed (a worker crashed): exit 1, not the user's input."""


@dataclass
class Progress:
    elapsed: float
    phase: str  # "connect", "warmup", "measure"
    completed: int
    errors: int
    rate: float  # completed per second over the last tick
    sent: int


@dataclass
class Interval:
    start_s: float
    length_s: float
    histogram: HdrHistogram


@dataclass
class BenchOutcome:
    """Everything one run measured, merged over its workers."""

    settings: BenchSettings
    started_at: float  # epoch seconds when the measured phase began (about)
    workers: list[WorkerResult]
    histogram: HdrHistogram
    histogram_uncorrected: HdrHistogram | None
    schedule_lag: HdrHistogram | None
    intervals: list[Interval] = field(default_factory=list)
    interrupted: bool = False
    loop: str = ""

    @property
    def elapsed_s(self) -> float:
        """The measured window (the longest over the workers): requests/s are per second of
        it. Answers drained after it count, since their requests were sent in it."""
        return max((w.elapsed_s for w in self.workers), default=0.0)

    @property
    def drain_s(self) -> float:
        return max((w.drain_s for w in self.workers), default=0.0)

    def total(self, name: str) -> int:
        return sum(getattr(w, name) for w in self.workers)

    @property
    def completed(self) -> int:
        return self.total("completed")

    @property
    def requests_per_s(self) -> float:
        elapsed = self.elapsed_s
        return self.completed / elapsed if elapsed > 0 else 0.0

    @property
    def statuses(self) -> dict[int, int]:
        merged: dict[int, int] = {}
        for w in self.workers:
            for status, n in w.statuses.items():
                merged[int(status)] = merged.get(int(status), 0) + n
        others = sum(merged.values())
        if self.completed - others > 0:
            merged[200] = self.completed - others
        return dict(sorted(merged.items()))

    @property
    def non_2xx_3xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 400)

    @property
    def cpu_shares(self) -> list[float]:
        return [w.cpu_s / (w.elapsed_s + w.drain_s) if w.elapsed_s > 0 else 0.0
                for w in self.workers]

    def warnings(self) -> list[str]:
        """Why the result may not be trusted (empty when it may)."""
        out = []
        rate = self.settings.rate
        if rate is not None and self.elapsed_s > 0 and self.requests_per_s < RATE_HELD * rate:
            out.append(f"achieved {self.requests_per_s:,.0f} req/s, below {RATE_HELD:.0%} of "
                       f"the requested {rate:,.0f}: the server or the generator could not keep "
                       "up, latency is measured from the intended times")
        busy = [share for share in self.cpu_shares if share >= SATURATED_CPU]
        if busy:
            out.append(f"{len(busy)} of {len(self.workers)} generator processes used "
                       f"{max(busy):.0%} CPU: the generator may be the bottleneck "
                       "(add -p processes or cores)")
        return out

    @property
    def saturated(self) -> bool:
        return bool(self.warnings())


def preflight(settings: BenchSettings) -> str:
    """Resolve the host and check it accepts a connection (and, for https://, a verified
    TLS handshake); returns the address to use."""
    t = settings.target
    context = client_context(settings)
    try:
        infos = socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BenchInputError(f"cannot resolve {t.host}: {exc.strerror}") from None
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(settings.timeout)
        try:
            sock.connect(address)
            if context is not None:
                handshake(sock, settings, context)
            elif settings.http2:
                probe(sock, settings)
        except NotHttp2Error as exc:
            raise BenchInputError(str(exc)) from None
        except OSError as exc:
            last = exc
            continue
        finally:
            sock.close()
        return str(address[0])
    reason = "timed out" if isinstance(last, TimeoutError) else (
        getattr(last, "strerror", None) or str(last))
    raise BenchInputError(f"cannot connect to {t.host}:{t.port}: {reason}")


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class _Coordinator:
    def __init__(self, settings: BenchSettings, progress: Callable[[Progress], None] | None,
                 debug: bool) -> None:
        self.settings = settings
        self.progress = progress
        self.debug = debug
        self.procs: list[Any] = []
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.results: dict[int, WorkerResult] = {}
        self.ready: set[int] = set()
        self.ticks: dict[int, tuple[str, int, int, int, int]] = {}
        self.intervals: dict[int, dict[int, tuple[float, float, str]]] = {}
        self.failure: tuple[str, bool] | None = None
        self.interrupted = False
        self.started_at = time.time()

    def start(self, connect_host: str) -> None:
        s = self.settings
        ctx = _context()
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            for index in range(s.processes):
                first, count = s.share(index)
                plan = WorkerPlan(index, s, connect_host, first, count,
                                  hdr_intervals=s.hdr_log is not None)
                ours, theirs = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=worker_main, args=(plan, theirs, self.debug),
                                   name=f"veloxy-bench-{index}", daemon=True)
                proc.start()
                theirs.close()
                self.procs.append(proc)
                self.pipes.append(ours)
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)

    def broadcast(self, message: tuple[Any, ...]) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(message)
            except OSError:
                pass

    def pump(self, timeout: float) -> None:
        """Handle every message that arrives within `timeout`."""
        live = [p for i, p in enumerate(self.pipes) if i not in self.results and not p.closed]
        if not live:
            time.sleep(min(timeout, 0.05))
            return
        for ready in multiprocessing.connection.wait(live, timeout):
            pipe = cast(multiprocessing.connection.Connection, ready)
            index = self.pipes.index(pipe)
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                pipe.close()
                if index not in self.results and self.failure is None:
                    code = self.procs[index].exitcode
                    if not self.interrupted:
                        self.failure = (f"worker {index} exited early (code {code})", False)
                continue
            self.handle(message)

    def handle(self, message: tuple[Any, ...]) -> None:
        kind, index = message[0], message[1]
        if kind == "tick":
            self.ticks[index] = message[2:]
        elif kind == "ready":
            self.ready.add(index)
        elif kind == "interval":
            _, _, start, length, encoded = message
            slots = self.intervals.setdefault(index, {})
            slots[len(slots)] = (start, length, encoded)
        elif kind == "done":
            self.results[index] = WorkerResult(**message[2])
        elif kind == "fail":
            if self.failure is None:
                self.failure = (message[2], bool(message[3]))
            self.broadcast(("stop",))

    @property
    def finished(self) -> bool:
        return all(i in self.results or self.pipes[i].closed for i in range(len(self.pipes)))

    def report_progress(self, t0: float, last: list[float]) -> None:
        if self.progress is None or not self.ticks:
            return
        now = time.monotonic()
        ticks = list(self.ticks.values())
        completed = sum(t[1] for t in ticks)
        phases = {t[0] for t in ticks}
        phase = "warmup" if "warmup" in phases else "measure"
        rate = 0.0
        if last[0] and now > last[0] and completed >= last[1]:
            rate = (completed - last[1]) / (now - last[0])
        last[0], last[1] = now, completed
        self.progress(Progress(elapsed=now - t0, phase=phase, completed=completed,
                               errors=sum(t[2] for t in ticks), rate=rate,
                               sent=sum(t[4] for t in ticks)))

    def stop_all(self, grace: float) -> None:
        for proc in self.procs:
            proc.join(grace)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
        for pipe in self.pipes:
            pipe.close()

    def wait_for_start(self, start_at: float) -> None:
        """Hold "go" until the wall clock reads `start_at` (--start-at), answering the workers
        meanwhile. Too late is an error, not a late start: a generator that began after the
        others would measure a different window and its merge would be refused anyway."""
        late = time.time() - start_at
        if late > 0:
            self.failure = (f"--start-at {format_start_time(start_at)} passed {late:.2f}s "
                            "before the generator was connected and ready; pick a later time",
                            True)
            return
        # Ctrl-C while waiting ends the run as it does while connecting (nothing measured).
        while (left := start_at - time.time()) > 0 and self.failure is None:
            # Pipes first, then a plain sleep for the last stretch: the pump's wait may
            # return late by a scheduler tick, a sleep of under 50 ms rarely does.
            if left > 0.05:
                self.pump(min(left - 0.05, 0.25))
            else:
                time.sleep(left)

    def run(self) -> None:
        s = self.settings
        # Phase 1: every worker connected (or gave up on some connections).
        deadline = time.monotonic() + s.timeout + 10.0
        while len(self.ready) < len(self.procs) and self.failure is None:
            if time.monotonic() > deadline:
                self.failure = ("workers did not finish connecting in time", False)
                break
            self.pump(0.1)
        if self.failure is not None:
            return
        if s.start_at is not None:
            self.wait_for_start(s.start_at)
            if self.failure is not None:
                return
        self.broadcast(("go",))
        self.started_at = time.time()
        t0 = time.monotonic()
        last = [0.0, 0]
        next_progress = t0 + PROGRESS_EVERY
        stop_deadline: float | None = None
        while not self.finished:
            try:
                self.pump(max(0.0, min(PROGRESS_EVERY, next_progress - time.monotonic())))
                if time.monotonic() >= next_progress:
                    next_progress += PROGRESS_EVERY
                    self.report_progress(t0, last)
                if self.failure is not None and stop_deadline is None:
                    stop_deadline = time.monotonic() + 3.0
                if stop_deadline is not None and time.monotonic() > stop_deadline:
                    break
            except KeyboardInterrupt:
                if self.interrupted:
                    break  # a second Ctrl-C: stop waiting
                self.interrupted = True
                self.broadcast(("stop",))
                stop_deadline = time.monotonic() + s.timeout + 3.0

    def outcome(self) -> BenchOutcome:
        results = [self.results[i] for i in sorted(self.results)]
        s = self.settings
        out = BenchOutcome(
            settings=s,
            started_at=self.started_at,
            workers=results,
            histogram=hdr.merge(w.histogram for w in results),
            histogram_uncorrected=(hdr.merge(w.histogram_uncorrected for w in results)
                                   if s.open_loop else None),
            schedule_lag=hdr.merge(w.schedule_lag for w in results) if s.open_loop else None,
            interrupted=self.interrupted or any(w.interrupted for w in results)
            or len(results) < len(self.procs),
        )
        out.intervals = merge_intervals(self.intervals)
        return out


def merge_intervals(per_worker: dict[int, dict[int, tuple[float, float, str]]]) -> list[Interval]:
    """The n-th interval histogram of every worker, added together (workers start within a few
    milliseconds of each other and cut intervals on the same clock)."""
    count = max((len(v) for v in per_worker.values()), default=0)
    merged = []
    for n in range(count):
        parts = [v[n] for v in per_worker.values() if n in v]
        start = min(p[0] for p in parts)
        end = max(p[0] + p[1] for p in parts)
        merged.append(Interval(start, end - start, hdr.merge(p[2] for p in parts)))
    return merged


def run_bench(settings: BenchSettings, progress: Callable[[Progress], None] | None = None,
              debug: bool = False) -> BenchOutcome:
    """Run one benchmark. Raises BenchInputError for what the user must fix (exit 2) and
    BenchRunError when the generator itself failed."""
    connect_host = preflight(settings)
    if settings.script:
        Script(settings.script, settings.target.host_header, settings.closes,
               settings.method).probe()
    coordinator = _Coordinator(settings, progress, debug)
    try:
        coordinator.start(connect_host)
        coordinator.run()
    finally:
        coordinator.stop_all(grace=settings.timeout + 2.0 if not coordinator.failure else 2.0)
    if coordinator.failure is not None:
        message, is_input = coordinator.failure
        if is_input:
            raise BenchInputError(message)
        raise BenchRunError(message)
    from veloxy.net.loop import loop_name

    outcome = coordinator.outcome()
    outcome.loop = loop_name()
    return outcome


def is_tty() -> bool:
    return sys.stderr.isatty()
