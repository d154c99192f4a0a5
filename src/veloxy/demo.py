"""`veloxy demo`: the classic proxy study on this machine, with nothing installed but veloxy.

Why: "what does a proxy cost?" has a short honest answer only when measured where it runs. The
demo starts the built-in origin and `veloxy serve` in front of it (subprocesses on 127.0.0.1,
port 0), then drives both with the load generator (veloxy.loadgen) through a small matrix:

    direct vs through veloxy      x      keep-alive vs Connection: close     at saturation
    direct vs through veloxy, keep-alive, at a fixed rate (open loop)

The fixed rate is 60% of the lower of the two saturated keep-alive rates, so both paths can
hold it and the latency difference is the proxy's, not a queue's. Each row shows avg, p50, p99,
max, req/s, errors and the proxy's CPU time per request (utime+stime of the proxy process from
/proc/PID/stat before and after the run, divided by the requests; psutil where /proc is
missing, else "n/a"). The last line interprets the table: the proxy's overhead at p50 at the
fixed rate and the keep-alive to close throughput ratio through veloxy.

Durations: about 15 s with --quick, under a minute by default, longer with --full (one cell
takes `seconds` plus a short warm-up; VELOXY_DEMO_SECONDS overrides the per-cell seconds, which
the tests use). Everything started is stopped on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from veloxy.lab.procs import Child, StartError, cpu_seconds

SECONDS = {"quick": 1.5, "default": 6.0, "full": 15.0}
WARMUP = {"quick": 0.25, "default": 0.5, "full": 1.0}
CONNECTIONS = 32
FIXED_RATE_SHARE = 0.6
SECONDS_ENV = "VELOXY_DEMO_SECONDS"


# The child processes and their CPU time: shared with `veloxy suite` (veloxy/lab/procs.py).
DemoError = StartError


# -- the matrix -----------------------------------------------------------------------------------


@dataclass
class Cell:
    name: str
    through_proxy: bool
    keep_alive: bool
    open_loop: bool


MATRIX = [
    Cell("direct, keep-alive, saturated", False, True, False),
    Cell("veloxy, keep-alive, saturated", True, True, False),
    Cell("direct, close, saturated", False, False, False),
    Cell("veloxy, close, saturated", True, False, False),
    Cell("direct, keep-alive, fixed rate", False, True, True),
    Cell("veloxy, keep-alive, fixed rate", True, True, True),
]


@dataclass
class Row:
    cell: Cell
    rate: float | None
    requests_per_s: float
    mean_us: float
    p50_us: int
    p99_us: int
    max_us: int
    errors: int
    completed: int
    proxy_cpu_us: float | None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.cell.name, "through_proxy": self.cell.through_proxy,
            "keep_alive": self.cell.keep_alive,
            "mode": "open" if self.cell.open_loop else "closed", "rate": self.rate,
            "requests_per_s": round(self.requests_per_s, 2), "completed": self.completed,
            "latency_us": {"mean": round(self.mean_us, 1), "p50": self.p50_us,
                           "p99": self.p99_us, "max": self.max_us},
            "errors": self.errors,
            "proxy_cpu_us_per_request": (round(self.proxy_cpu_us, 2)
                                         if self.proxy_cpu_us is not None else None),
            "warnings": self.warnings,
        }


def _measure(cell: Cell, url: str, seconds: float, warmup: float, rate: float | None,
             proxy_pid: int, on_progress: Callable[[float], None]) -> Row | None:
    from veloxy.loadgen.report import document
    from veloxy.loadgen.runner import run_bench
    from veloxy.loadgen.settings import BenchSettings

    settings = BenchSettings(url=url, connections=CONNECTIONS, duration=seconds, processes=1,
                             rate=rate, close=not cell.keep_alive, warmup=warmup)
    total = seconds + warmup

    def progress(p: Any) -> None:
        on_progress(min(1.0, p.elapsed / total) if total > 0 else 1.0)

    before = cpu_seconds(proxy_pid) if cell.through_proxy else None
    outcome = run_bench(settings, progress=progress)
    after = cpu_seconds(proxy_pid) if cell.through_proxy else None
    if outcome.interrupted:
        return None
    doc = document(outcome)
    lat = doc["latency"]
    cpu_us = None
    if before is not None and after is not None and outcome.completed:
        # The CPU sample spans the warm-up too: divide by every request it served.
        served = outcome.completed + _warmup_requests(outcome, warmup, seconds)
        cpu_us = (after - before) * 1e6 / served
    return Row(cell=cell, rate=rate, requests_per_s=doc["requests_per_s"],
               mean_us=lat["mean_us"], p50_us=lat["percentiles"]["50"],
               p99_us=lat["percentiles"]["99"], max_us=lat["max_us"],
               errors=doc["errors"]["total"], completed=outcome.completed,
               proxy_cpu_us=cpu_us, warnings=doc["generator"]["warnings"])


def _warmup_requests(outcome: Any, warmup: float, seconds: float) -> int:
    """Requests served during the warm-up, estimated at the measured rate (the warm-up's own
    count is not kept); exact enough for a CPU-per-request figure."""
    return int(outcome.requests_per_s * warmup) if seconds > 0 else 0


def _fmt_us(us: float) -> str:
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1_000_000:.2f} s"


def interpretation(rows: list[Row]) -> str:
    by = {r.cell.name: r for r in rows}
    parts = []
    direct, proxied = by.get(MATRIX[4].name), by.get(MATRIX[5].name)
    if direct and proxied:
        extra = (proxied.p50_us - direct.p50_us) / 1000
        extra99 = (proxied.p99_us - direct.p99_us) / 1000
        parts.append(f"at {direct.rate:,.0f} req/s veloxy adds {extra:.2f} ms at p50 "
                     f"({extra99:+.2f} ms at p99)")
    ka, close = by.get(MATRIX[1].name), by.get(MATRIX[3].name)
    if ka and close and close.requests_per_s > 0:
        ratio = ka.requests_per_s / close.requests_per_s
        parts.append(f"through veloxy keep-alive serves {ratio:.1f}x the requests/s of "
                     "Connection: close")
    cpu = [r.proxy_cpu_us for r in rows if r.proxy_cpu_us is not None and r.cell.keep_alive
           and not r.cell.open_loop]
    if cpu:
        parts.append(f"the proxy spends {cpu[0]:.0f} µs of CPU per keep-alive request")
    suspect = sum(1 for r in rows if r.warnings)
    text = "; ".join(parts) if parts else "not enough rows to interpret"
    if suspect:
        text += f" ({suspect} row(s) flagged by the generator as suspect)"
    return text[0].upper() + text[1:] + "."


def render_table(rows: list[Row], seconds: float) -> Any:
    from rich.table import Table

    table = Table(title=f"veloxy demo: {CONNECTIONS} connections, {seconds:g} s per row, "
                        "127.0.0.1")
    for name in ("target", "connection", "load"):
        table.add_column(name, no_wrap=True)
    for name in ("avg", "p50", "p99", "max", "req/s", "errors", "proxy CPU/req"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        load = f"{r.rate:,.0f}/s" if r.rate else "saturated"
        if r.warnings:
            load += " *"
        cpu = "—" if not r.cell.through_proxy else (
            "n/a" if r.proxy_cpu_us is None else f"{r.proxy_cpu_us:.1f} µs")
        table.add_row("veloxy" if r.cell.through_proxy else "direct",
                      "keep-alive" if r.cell.keep_alive else "close", load,
                      _fmt_us(r.mean_us), _fmt_us(r.p50_us), _fmt_us(r.p99_us),
                      _fmt_us(r.max_us), f"{r.requests_per_s:,.0f}", str(r.errors), cpu)
    return table


def run_demo(mode: str, json_out: str | None) -> int:
    """`veloxy demo`; mode is "quick", "default" or "full". Returns the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from veloxy.loadgen.settings import BenchInputError

    seconds = SECONDS.get(mode, SECONDS["default"])
    warmup = WARMUP.get(mode, WARMUP["default"])
    override = os.environ.get(SECONDS_ENV)
    if override:
        try:
            seconds = float(override)
            warmup = min(warmup, seconds / 4)
        except ValueError:
            print(f"veloxy demo: {SECONDS_ENV} must be a number of seconds", file=sys.stderr)
            return 2
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a pipe or a file: do not squeeze the table into 80
    err_console = Console(stderr=True)
    rows: list[Row] = []
    try:
        with ExitStack() as stack:
            origin = Child(["origin", "--listen", "127.0.0.1:0"], "veloxy origin listening on")
            stack.callback(origin.stop)
            origin_port = origin.wait_ready()
            proxy = Child(["serve", "--listen", "127.0.0.1:0", "--upstream",
                           f"http://127.0.0.1:{origin_port}", "--workers", "1",
                           "--log-level", "warning"], "veloxy listening on")
            stack.callback(proxy.stop)
            proxy_port = proxy.wait_ready()
            urls = {False: f"http://127.0.0.1:{origin_port}/",
                    True: f"http://127.0.0.1:{proxy_port}/"}
            progress = Progress(TextColumn("{task.description:<40}"), BarColumn(),
                                TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                                TimeElapsedColumn(), console=err_console, transient=True)
            with progress:
                overall = progress.add_task("veloxy demo", total=len(MATRIX))
                current = progress.add_task("", total=1.0)
                rate: float | None = None
                for n, cell in enumerate(MATRIX):
                    if cell.open_loop and rate is None:
                        saturated = [r.requests_per_s for r in rows
                                     if r.cell.keep_alive and not r.cell.open_loop]
                        rate = max(1.0, round(FIXED_RATE_SHARE * min(saturated or [100.0])))
                    progress.update(current, description=cell.name, completed=0.0)

                    def step(fraction: float) -> None:
                        progress.update(current, completed=fraction)

                    row = _measure(cell, urls[cell.through_proxy], seconds, warmup,
                                   rate if cell.open_loop else None, proxy.pid, step)
                    if row is None:
                        raise KeyboardInterrupt
                    rows.append(row)
                    progress.update(overall, completed=n + 1)
    except KeyboardInterrupt:
        err_console.print("veloxy demo: interrupted")
        if rows:
            console.print(render_table(rows, seconds))
        return 130
    except (DemoError, BenchInputError) as exc:
        print(f"veloxy demo: {exc}", file=sys.stderr)
        return 1
    console.print(render_table(rows, seconds))
    if any(r.warnings for r in rows):
        console.print("* the generator flagged this row: "
                      + "; ".join(sorted({w for r in rows for w in r.warnings})))
    summary = interpretation(rows)
    console.print(summary, soft_wrap=True)
    if json_out:
        data = {"mode": mode, "seconds_per_row": seconds, "warmup_s": warmup,
                "connections": CONNECTIONS, "rows": [r.to_json() for r in rows],
                "interpretation": summary}
        try:
            with open(json_out, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2)
                out.write("\n")
        except OSError as exc:
            print(f"veloxy demo: cannot write {json_out}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
    return 0
