"""`veloxy demo`: the classic proxy study on this machine, with nothing installed but veloxy.

Why: "what does a proxy cost?" has a short honest answer only when measured where it runs. The
demo starts the built-in origin and `veloxy serve` in front of it (subprocesses on 127.0.0.1,
port 0), then drives both with the load generator (veloxy.loadgen) through a small matrix:

    direct vs through veloxy      x      keep-alive vs Connection: close     at saturation
    veloxy with 1 vs N workers (N = usable CPUs, at least 2), keep-alive, at saturation
    direct vs through veloxy, keep-alive, at a fixed rate (open loop)

The fixed rate is 60% of the lower of the two saturated keep-alive rates, so both paths can
hold it and the latency difference is the proxy's, not a queue's. Each row shows avg, p50, p99,
max, req/s, errors and the proxy's CPU time per request (utime+stime of the proxy's process
tree, all workers, over the measured run, divided by the requests). Each cell is one
`veloxy suite` cell (veloxy.lab.runner.measure: warm-up, measured run, CPU and memory sampled),
so the matrix is also a suite document: it is written as the suite's self-contained HTML
report (veloxy.lab.html; ./veloxy-report.html unless --html says otherwise). The terminal
shows the demo's own table, then a line interpreting it (the proxy's overhead at p50 at the
fixed rate, the keep-alive to close and N to 1 worker throughput ratios), and last the
report's path.

Durations: about 15 s with --quick, under a minute by default, longer with --full (one cell
takes `seconds` plus a short warm-up; VELOXY_DEMO_SECONDS overrides the per-cell seconds, which
the tests use). Everything started is stopped on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veloxy.lab.procs import Child, StartError
from veloxy.lab.runner import CellResult

SECONDS = {"quick": 1.5, "default": 6.0, "full": 15.0}
WARMUP = {"quick": 0.25, "default": 0.5, "full": 1.0}
CONNECTIONS = 32
FIXED_RATE_SHARE = 0.6
SECONDS_ENV = "VELOXY_DEMO_SECONDS"
DEFAULT_HTML = "veloxy-report.html"


# The child processes and their CPU time: shared with `veloxy suite` (veloxy/lab/procs.py).
DemoError = StartError


# -- the matrix -----------------------------------------------------------------------------------


@dataclass
class Cell:
    name: str
    through_proxy: bool
    keep_alive: bool
    open_loop: bool
    workers: int = 1

    @property
    def target(self) -> str:
        """The target's name in the HTML report (the suite document)."""
        if not self.through_proxy:
            return "direct"
        return "veloxy" if self.workers == 1 else f"veloxy x{self.workers} workers"

    @property
    def scenario(self) -> str:
        """The scenario's name in the HTML report: the cell's name without the target."""
        return self.name.split(", ", 1)[1]


KA_DIRECT = "direct, keep-alive, saturated"
KA_PROXY = "veloxy, keep-alive, saturated"
CLOSE_PROXY = "veloxy, close, saturated"
FIXED_DIRECT = "direct, keep-alive, fixed rate"
FIXED_PROXY = "veloxy, keep-alive, fixed rate"


def demo_workers() -> int:
    """N of the "1 vs N workers" rows: the CPUs this process may use, at least 2."""
    from veloxy.config import usable_cpus

    return max(2, usable_cpus())


def matrix(workers: int) -> list[Cell]:
    return [
        Cell(KA_DIRECT, False, True, False),
        Cell(KA_PROXY, True, True, False),
        Cell(f"veloxy x{workers}, keep-alive, saturated", True, True, False, workers),
        Cell("direct, close, saturated", False, False, False),
        Cell(CLOSE_PROXY, True, False, False),
        Cell(FIXED_DIRECT, False, True, True),
        Cell(FIXED_PROXY, True, True, True),
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
    result: CellResult | None = None  # the whole cell, for the HTML report

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.cell.name, "through_proxy": self.cell.through_proxy,
            "keep_alive": self.cell.keep_alive,
            "workers": self.cell.workers if self.cell.through_proxy else None,
            "mode": "open" if self.cell.open_loop else "closed", "rate": self.rate,
            "requests_per_s": round(self.requests_per_s, 2), "completed": self.completed,
            "latency_us": {"mean": round(self.mean_us, 1), "p50": self.p50_us,
                           "p99": self.p99_us, "max": self.max_us},
            "errors": self.errors,
            "proxy_cpu_us_per_request": (round(self.proxy_cpu_us, 2)
                                         if self.proxy_cpu_us is not None else None),
            "warnings": self.warnings,
        }


def _scenario(cell: Cell, seconds: float, rate: float | None) -> Any:
    from veloxy.lab.suite import ScenarioSpec

    return ScenarioSpec(name=cell.scenario, connections=CONNECTIONS, rate=rate,
                        duration=seconds, keep_alive=cell.keep_alive, workers=cell.workers)


def _measure(cell: Cell, order: int, url: str, seconds: float, warmup: float,
             rate: float | None, proxy_pid: int,
             on_progress: Callable[[float], None]) -> Row:
    """One cell, measured as `veloxy suite` measures one (raises KeyboardInterrupt when the
    run was interrupted)."""
    from veloxy.lab.runner import measure

    result = measure(url, _scenario(cell, seconds, rate), warmup,
                     proxy_pid if cell.through_proxy else None, cell.target, 0, order,
                     progress=on_progress)
    lat = result.latency_us
    return Row(cell=cell, rate=rate, requests_per_s=result.requests_per_s,
               mean_us=lat["mean"], p50_us=int(lat["p50"]), p99_us=int(lat["p99"]),
               max_us=int(lat["max"]), errors=result.errors, completed=result.completed,
               proxy_cpu_us=result.cpu_us_per_request, warnings=result.warnings,
               result=result)


def _fmt_us(us: float) -> str:
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1_000_000:.2f} s"


def interpretation(rows: list[Row]) -> str:
    by = {r.cell.name: r for r in rows}
    parts = []
    direct, proxied = by.get(FIXED_DIRECT), by.get(FIXED_PROXY)
    if direct and proxied:
        extra = (proxied.p50_us - direct.p50_us) / 1000
        extra99 = (proxied.p99_us - direct.p99_us) / 1000
        parts.append(f"at {direct.rate:,.0f} req/s veloxy adds {extra:.2f} ms at p50 "
                     f"({extra99:+.2f} ms at p99)")
    ka, close = by.get(KA_PROXY), by.get(CLOSE_PROXY)
    if ka and close and close.requests_per_s > 0:
        ratio = ka.requests_per_s / close.requests_per_s
        parts.append(f"through veloxy keep-alive serves {ratio:.1f}x the requests/s of "
                     "Connection: close")
    many = next((r for r in rows if r.cell.workers > 1), None)
    if ka and many and ka.requests_per_s > 0:
        ratio = many.requests_per_s / ka.requests_per_s
        parts.append(f"{many.cell.workers} workers serve {ratio:.1f}x the requests/s of 1")
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
        target = "direct" if not r.cell.through_proxy else (
            "veloxy" if r.cell.workers == 1 else f"veloxy x{r.cell.workers}")
        table.add_row(target,
                      "keep-alive" if r.cell.keep_alive else "close", load,
                      _fmt_us(r.mean_us), _fmt_us(r.p50_us), _fmt_us(r.p99_us),
                      _fmt_us(r.max_us), f"{r.requests_per_s:,.0f}", str(r.errors), cpu)
    return table


def report_document(rows: list[Row], seconds: float, warmup: float, started: float,
                    summary: str) -> dict[str, Any]:
    """The demo as a `veloxy suite` document (targets x scenarios, one repetition), which the
    suite's HTML writer turns into the report. Pairs the demo does not run (close through N
    workers, say) are cells skipped with that reason."""
    from veloxy.lab import report
    from veloxy.lab.suite import Suite, TargetSpec

    targets: dict[str, TargetSpec] = {}
    scenarios: dict[str, Any] = {}
    for r in rows:
        c = r.cell
        targets.setdefault(c.target, TargetSpec(c.target, "veloxy" if c.through_proxy
                                                else "direct"))
        scenarios.setdefault(c.scenario, _scenario(c, seconds, r.rate))
    cells = [r.result for r in rows if r.result is not None]
    ran = {(c.scenario, c.target) for c in cells}
    for s in scenarios:
        for t in targets:
            if (s, t) not in ran:
                cells.append(CellResult(s, t, 0, 0, "", skipped="not in the demo's matrix"))
    suite = Suite(name="demo", targets=tuple(targets.values()),
                  scenarios=tuple(scenarios.values()), reference="direct", repetitions=1,
                  warmup=warmup, source="veloxy demo", description=summary)
    return report.document(suite, cells, started)


def run_demo(mode: str, json_out: str | None, html_out: str | None = None) -> int:
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
    html_path = Path(html_out or DEFAULT_HTML).absolute()
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a pipe or a file: do not squeeze the table into 80
    err_console = Console(stderr=True)
    workers = demo_workers()
    cells = matrix(workers)
    rows: list[Row] = []
    started = time.time()
    try:
        with ExitStack() as stack:
            origin = Child(["origin", "--listen", "127.0.0.1:0"], "veloxy origin listening on")
            stack.callback(origin.stop)
            origin_port = origin.wait_ready()
            upstream = f"http://127.0.0.1:{origin_port}"
            proxies: dict[int, Child] = {}
            for n in (1, workers):  # both start at once; each is waited for below
                proxies[n] = Child(["serve", "--listen", "127.0.0.1:0", "--upstream", upstream,
                                    "--workers", str(n), "--log-level", "warning"],
                                   "veloxy listening on")
                stack.callback(proxies[n].stop)
            urls = {0: f"{upstream}/"}
            for n, proxy in proxies.items():
                urls[n] = f"http://127.0.0.1:{proxy.wait_ready()}/"
            progress = Progress(TextColumn("{task.description:<40}"), BarColumn(),
                                TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                                TimeElapsedColumn(), console=err_console, transient=True)
            with progress:
                overall = progress.add_task("veloxy demo", total=len(cells))
                current = progress.add_task("", total=1.0)
                rate: float | None = None
                for n, cell in enumerate(cells):
                    if cell.open_loop and rate is None:
                        saturated = [r.requests_per_s for r in rows if r.cell.keep_alive
                                     and not r.cell.open_loop and r.cell.workers == 1]
                        rate = max(1.0, round(FIXED_RATE_SHARE * min(saturated or [100.0])))
                    progress.update(current, description=cell.name, completed=0.0)

                    def step(fraction: float) -> None:
                        progress.update(current, completed=fraction)

                    key = cell.workers if cell.through_proxy else 0
                    pid = proxies[cell.workers].pid if cell.through_proxy else 0
                    rows.append(_measure(cell, n, urls[key], seconds, warmup,
                                         rate if cell.open_loop else None, pid, step))
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
    try:
        if json_out:
            data = {"mode": mode, "seconds_per_row": seconds, "warmup_s": warmup,
                    "connections": CONNECTIONS, "workers": workers,
                    "rows": [r.to_json() for r in rows], "interpretation": summary,
                    "html": str(html_path)}
            with open(json_out, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2)
                out.write("\n")
        from veloxy.lab.html import write_html

        write_html(html_path, report_document(rows, seconds, warmup, started, summary))
    except OSError as exc:
        print(f"veloxy demo: cannot write {exc.filename or 'a report'}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    console.print(f"report: {html_path}", soft_wrap=True, highlight=False)
    return 0
