"""Synthetic suite results for the report, baseline and HTML tests (no load is run)."""

from __future__ import annotations

import math
from typing import Any

from veloxy.lab import report
from veloxy.lab.runner import CellResult
from veloxy.lab.suite import Suite, parse_suite

SUITE_DATA: dict[str, Any] = {
    "name": "synthetic", "reference": "go", "repetitions": 3, "warmup": "0s",
    "targets": [{"name": "direct"}, {"name": "go", "kind": "go-default"},
                {"name": "veloxy"}],
    "scenarios": [{"name": "ka", "connections": 8, "duration": "1s"},
                  {"name": "fixed", "connections": 8, "rate": 100, "duration": "1s"}],
}


def suite() -> Suite:
    return parse_suite(SUITE_DATA, "synthetic.yaml")


def cell(scenario: str, target: str, rep: int, rps: float, p99: float,
         cpu: float | None) -> CellResult:
    """A plausible cell: a latency spectrum rising to p99, a 3-interval timeline."""
    spectrum = []
    for i in range(0, 60):
        p = 100 * (1 - 0.5 ** (i / 4))
        spectrum.append([round(p, 4), round(p99 * (0.3 + 0.7 * min(1.0, i / 27)) + i)])
    return CellResult(
        scenario=scenario, target=target, rep=rep, order=0, url="http://127.0.0.1:1/",
        requests_per_s=rps, completed=int(rps), errors=0,
        latency_us={"mean": p99 / 3, "max": p99 * 2, "p50": p99 / 4, "p90": p99 / 2,
                    "p99": p99, "p99.9": p99 * 1.5},
        spectrum=spectrum,
        timeline=[{"t_s": t, "p50_us": p99 / 4, "p99_us": p99 * (1 + 0.1 * math.sin(t)),
                   "max_us": p99 * 2, "requests_per_s": rps} for t in (1.0, 2.0, 3.0)],
        cpu_us_per_request=cpu, cpu_percent=None if cpu is None else cpu * rps / 1e4,
        cpu_timeline=[] if cpu is None else [[0.2 * i, 50.0 + i] for i in range(1, 10)],
        rss_mib_max=None if cpu is None else 40.0,
    )


FIGURES = {  # target -> (req/s, p99 µs, CPU µs/req) at rep 0; later reps drift by +-2 %
    "direct": (20000.0, 800.0, 30.0),
    "go": (10000.0, 2000.0, 60.0),
    "veloxy": (12000.0, 1500.0, 45.0),
}


def cells(scale: dict[str, float] | None = None) -> list[CellResult]:
    """Three repetitions of every cell; `scale` multiplies a target's req/s (and divides
    its CPU and p99), to fake a change against a baseline."""
    out = []
    for rep, drift in enumerate((1.0, 1.02, 0.98)):
        for scen in ("ka", "fixed"):
            for target, (rps, p99, cpu) in FIGURES.items():
                k = (scale or {}).get(target, 1.0)
                out.append(cell(scen, target, rep, rps * drift * k, p99 * drift / k,
                                cpu * drift / k))
    return out


def document(scale: dict[str, float] | None = None) -> dict[str, Any]:
    return report.document(suite(), cells(scale), 1_700_000_000.0)
