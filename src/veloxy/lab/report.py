"""A suite's results: summary over repetitions, ratios to the reference, tables, JSON,
baselines and the regression check.

Why min/median/max and not mean±stdev: with 3 to 5 repetitions on a shared machine the
distribution is unknown and often skewed by one bad run; the median is robust and the
min-max band is an honest statement of the noise. Ratios are taken per repetition (a target
against the reference in the same repetition, measured minutes apart) and then summarized,
which cancels the drift that interleaving spreads over all targets.

A regression (`--compare NAME`) is a change beyond the threshold whose min-max band does not
overlap the baseline's: for req/s, current max below baseline min; for p99 and CPU µs/req,
current min above baseline max. A change inside the noise band is not a regression, however
large its median moved.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from veloxy import __version__
from veloxy.lab.procs import cpu_model
from veloxy.lab.runner import CellResult
from veloxy.lab.suite import Suite

FORMAT = "veloxy-suite-result"
BASELINE_DIR_ENV = "VELOXY_BASELINE_DIR"
DEFAULT_BASELINE_DIR = ".veloxy/baselines"
#: metric -> (getter over a cell, which way is better, unit)
METRICS: dict[str, tuple[str, str]] = {
    "requests_per_s": ("higher", "req/s"),
    "p50_us": ("lower", "µs"),
    "p99_us": ("lower", "µs"),
    "max_us": ("lower", "µs"),
    "cpu_us_per_request": ("lower", "µs"),
    "rss_mib_max": ("lower", "MiB"),
    "errors": ("lower", ""),
}
#: the metrics a regression check looks at
GATED = ("requests_per_s", "p99_us", "cpu_us_per_request")


def cell_metric(cell: CellResult, name: str) -> float | None:
    if name in ("p50_us", "p99_us", "max_us"):
        value = cell.latency_us.get(name.removesuffix("_us"))
        return None if value is None else float(value)
    value = getattr(cell, name)
    return None if value is None else float(value)


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def summarize(suite: Suite, cells: list[CellResult]) -> list[dict[str, Any]]:
    """One row per (scenario, target): every metric's spread over repetitions and the
    ratios to the reference target, per repetition, summarized the same way."""
    rows = []
    by: dict[tuple[str, str, int], CellResult] = {
        (c.scenario, c.target, c.rep): c for c in cells if not c.skipped}
    for scenario in suite.scenarios:
        for target in suite.targets:
            mine = [c for c in cells if c.scenario == scenario.name and c.target == target.name]
            measured = [c for c in mine if not c.skipped]
            row: dict[str, Any] = {"scenario": scenario.name, "target": target.name,
                                   "reps": len(measured),
                                   "skipped": next((c.skipped for c in mine if c.skipped), None)}
            for name in METRICS:
                row[name] = spread(cell_metric(c, name) for c in measured)
            ratios: dict[str, Any] = {}
            for name in ("requests_per_s", "p99_us", "cpu_us_per_request"):
                per_rep = []
                for c in measured:
                    ref = by.get((scenario.name, suite.reference, c.rep))
                    mine_v, ref_v = cell_metric(c, name), ref and cell_metric(ref, name)
                    if mine_v is not None and ref_v:
                        per_rep.append(mine_v / ref_v)
                ratios[name] = spread(per_rep)
            row["ratio_to_reference"] = ratios
            row["warnings"] = sorted({w for c in measured for w in c.warnings})
            rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpus": os.cpu_count()}
    if (model := cpu_model()) is not None:
        info["cpu"] = model
    from veloxy.net.loop import loop_name

    info["loop"] = loop_name()
    return info


def document(suite: Suite, cells: list[CellResult], started: float,
             comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    """The --json document: the suite as run, every cell, the summary, the comparison."""
    return {
        "format": FORMAT, "version": 1, "veloxy": __version__,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "suite": {
            "name": suite.name, "source": suite.source, "description": suite.description,
            "reference": suite.reference, "repetitions": suite.repetitions,
            "warmup_s": suite.warmup, "pin": suite.pin,
            "targets": [{"name": t.name, "kind": t.kind} for t in suite.targets],
            "scenarios": [dict(s.__dict__, describe=s.describe()) for s in suite.scenarios],
        },
        "cells": [c.to_json() for c in cells],
        "summary": summarize(suite, cells),
        "comparison": comparison,
    }


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(doc, out, indent=1)
        out.write("\n")


# -- baselines ----------------------------------------------------------------------------------


def baseline_dir(configured: str | None = None) -> Path:
    return Path(configured or os.environ.get(BASELINE_DIR_ENV) or DEFAULT_BASELINE_DIR)


def _baseline_path(directory: Path, name: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"bad baseline name {name!r}: a plain file name is expected")
    return directory / f"{name}.json"


def save_baseline(directory: Path, name: str, doc: dict[str, Any]) -> Path:
    path = _baseline_path(directory, name)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
    return path


def load_baseline(directory: Path, name: str) -> dict[str, Any]:
    path = _baseline_path(directory, name)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []
        raise ValueError(f"no baseline {name!r} in {directory}"
                         + (f" (have: {', '.join(known)})" if known else "")) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"baseline {path}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"baseline {path}: not a veloxy suite result")
    return doc


def compare(baseline: dict[str, Any], current: dict[str, Any], name: str,
            threshold: float) -> dict[str, Any]:
    """Per (scenario, target) in both: each gated metric's median change in percent, and
    whether it is a regression (beyond `threshold` percent and outside the noise band)."""
    before = {(r["scenario"], r["target"]): r for r in baseline["summary"]}
    entries, regressions = [], []
    for row in current["summary"]:
        old = before.get((row["scenario"], row["target"]))
        if old is None:
            continue
        for metric in GATED:
            now, then = row.get(metric), old.get(metric)
            if not now or not then or not then["median"]:
                continue
            change = (now["median"] - then["median"]) / then["median"] * 100
            better = METRICS[metric][0]
            if better == "higher":
                worse = change < -threshold and now["max"] < then["min"]
                in_noise = now["max"] >= then["min"] and now["min"] <= then["max"]
            else:
                worse = change > threshold and now["min"] > then["max"]
                in_noise = now["min"] <= then["max"] and now["max"] >= then["min"]
            entry = {"scenario": row["scenario"], "target": row["target"], "metric": metric,
                     "baseline": then, "current": now, "change_percent": round(change, 2),
                     "better": better, "in_noise": in_noise, "regression": worse}
            entries.append(entry)
            if worse:
                regressions.append(
                    f"{row['scenario']} / {row['target']}: {metric} {change:+.1f}% "
                    f"({_fmt(metric, then['median'])} -> {_fmt(metric, now['median'])}, "
                    f"outside the baseline's {_fmt(metric, then['min'])}-"
                    f"{_fmt(metric, then['max'])} and beyond {threshold:g}%)")
    return {"baseline": name, "threshold_percent": threshold, "entries": entries,
            "regressions": regressions}


# -- text ---------------------------------------------------------------------------------------


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    if metric.endswith("_us") and metric != "cpu_us_per_request":
        if value < 1000:
            return f"{value:.0f} µs"
        if value < 1_000_000:
            return f"{value / 1000:.2f} ms"
        return f"{value / 1e6:.2f} s"
    if metric == "cpu_us_per_request":
        return f"{value:.1f} µs"
    if metric == "requests_per_s":
        return f"{value:,.0f}"
    if metric == "rss_mib_max":
        return f"{value:.0f} MiB"
    return f"{value:g}"


def _cell(metric: str, s: dict[str, float] | None, band: bool = False) -> str:
    if s is None:
        return "—"
    text = _fmt(metric, s["median"])
    if band and s["n"] > 1:
        text += f" [{_fmt(metric, s['min'])}..{_fmt(metric, s['max'])}]"
    return text


def _ratio(s: dict[str, float] | None, better: str) -> str:
    if s is None:
        return "—"
    good = s["median"] >= 1 if better == "higher" else s["median"] <= 1
    color = "green" if good else "red"
    text = f"[{color}]{s['median']:.2f}x[/]"
    if s["n"] > 1:
        text += f" ({s['min']:.2f}..{s['max']:.2f})"
    return text


def render(doc: dict[str, Any], console: Any) -> None:
    """One table per scenario; ratios to the reference highlighted (green = better)."""
    from rich.markup import escape
    from rich.table import Table

    suite = doc["suite"]
    ref = suite["reference"]
    scenarios = {s["name"]: s for s in suite["scenarios"]}
    for name, scen in scenarios.items():
        rows = [r for r in doc["summary"] if r["scenario"] == name]
        table = Table(title=escape(f"{suite['name']} / {name}: {scen['describe']}, "
                                   f"{scen['duration']:g} s x {suite['repetitions']} rep(s)"))
        table.add_column("target", no_wrap=True)
        for col in ("req/s", "p50", "p99", "max", "errors", "CPU/req", "RSS",
                    f"req/s ÷ {ref}", f"p99 ÷ {ref}", f"CPU ÷ {ref}"):
            table.add_column(escape(col), justify="right")
        for r in rows:
            if r["skipped"] and not r["reps"]:
                table.add_row(escape(r["target"]), f"[dim]skipped: {escape(r['skipped'])}[/]")
                continue
            ratios = r["ratio_to_reference"]
            flag = " *" if r["warnings"] else ""
            table.add_row(
                escape(r["target"] + flag),
                _cell("requests_per_s", r["requests_per_s"], band=True),
                _cell("p50_us", r["p50_us"]), _cell("p99_us", r["p99_us"], band=True),
                _cell("max_us", r["max_us"]), _cell("errors", r["errors"]),
                _cell("cpu_us_per_request", r["cpu_us_per_request"], band=True),
                _cell("rss_mib_max", r["rss_mib_max"]),
                _ratio(ratios["requests_per_s"], "higher"), _ratio(ratios["p99_us"], "lower"),
                _ratio(ratios["cpu_us_per_request"], "lower"),
            )
        console.print(table)
    warned = sorted({w for r in doc["summary"] for w in r["warnings"]})
    if warned:
        console.print("* the generator flagged these runs: " + escape("; ".join(warned)),
                      soft_wrap=True)


def render_comparison(comparison: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"compared with baseline {comparison['baseline']} "
                               f"(threshold {comparison['threshold_percent']:g}%)"))
    for col in ("scenario", "target", "metric", "baseline", "current", "change", "verdict"):
        table.add_column(col, justify="right" if col in ("change",) else "left")
    for e in comparison["entries"]:
        metric = e["metric"]
        verdict = ("[bold red]REGRESSION[/]" if e["regression"] else
                   "[dim]within noise[/]" if e["in_noise"] else
                   ("better" if (e["change_percent"] > 0) == (e["better"] == "higher")
                    else "worse, under threshold"))
        table.add_row(escape(e["scenario"]), escape(e["target"]), metric,
                      _cell(metric, e["baseline"], band=True),
                      _cell(metric, e["current"], band=True),
                      f"{e['change_percent']:+.1f}%", verdict)
    console.print(table)
    for line in comparison["regressions"]:
        console.print(f"[bold red]REGRESSION[/]: {escape(line)}", soft_wrap=True)
