"""Turning a BenchOutcome into what people and machines read: wrk-like text, the JSON document,
the comparison with a baseline.

Why the text imitates wrk: people compare the two side by side, so the same words and units
(`Requests/sec:`, `Transfer/sec:`, "us/ms/s" with two decimals, `Socket errors: connect ...`)
make the comparison quick. What wrk lacks is added below its lines: the uncorrected latency in
open-loop mode, the requested vs achieved rate, and WARNING lines when the result is suspect.

The JSON document is described field by field in result.schema.json; `document()` builds it
and the tests validate it against that schema. `compare()` reads an earlier document back.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from typing import Any

from hdrh.histogram import HdrHistogram

from veloxy import __version__
from veloxy.loadgen import histogram as hdr
from veloxy.loadgen.runner import BenchOutcome
from veloxy.loadgen.schema import SchemaError, validate
from veloxy.loadgen.settings import BenchInputError

# Metrics compared with a baseline: (name, JSON getter, better).
_LATENCY_KEYS = (("latency_mean_us", "mean_us"), ("latency_p50_us", "50"),
                 ("latency_p90_us", "90"), ("latency_p99_us", "99"),
                 ("latency_p99.9_us", "99.9"), ("latency_max_us", "max_us"))


# -- units ----------------------------------------------------------------------------------------


def format_us(us: float) -> str:
    """wrk's time format: 635.91us, 5.22ms, 1.20s."""
    if us < 1000:
        return f"{us:.2f}us"
    if us < 1_000_000:
        return f"{us / 1000:.2f}ms"
    if us < 60_000_000:
        return f"{us / 1_000_000:.2f}s"
    return f"{us / 60_000_000:.2f}m"


def format_bytes(n: float) -> str:
    """wrk's binary size format: 512.00B, 19.78MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f}{unit}"
        n /= 1024
    return f"{n:.2f}GB"  # pragma: no cover


def format_count(n: float) -> str:
    """wrk's metric format for counts: 56.20k."""
    if n < 1000:
        return f"{n:.2f}"
    if n < 1_000_000:
        return f"{n / 1000:.2f}k"
    return f"{n / 1_000_000:.2f}M"


# -- JSON -----------------------------------------------------------------------------------------


def lag_json(hist: HdrHistogram) -> dict[str, Any]:
    """The schedule-lag summary, with its histogram so that `veloxy merge` can add it."""
    out = hdr.summary(hist)
    out["histogram"] = hdr.encode(hist)
    return out


def latency_json(hist: HdrHistogram) -> dict[str, Any]:
    out = hdr.summary(hist)
    out["stdev_within_percent"] = round(
        hdr.within_stdev_percent(hist, float(out["mean_us"]), float(out["stdev_us"])), 3)  # type: ignore[arg-type]  # summary values are typed loosely (object)
    out["spectrum"] = hdr.spectrum(hist)
    out["histogram"] = hdr.encode(hist)
    return out


def document(outcome: BenchOutcome, comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    """The --json document (result.schema.json)."""
    s = outcome.settings
    elapsed = outcome.elapsed_s
    completed = outcome.completed
    failed = (outcome.total("errors_read") + outcome.total("errors_write")
              + outcome.total("errors_timeout"))
    errors = {
        "connect": outcome.total("errors_connect"),
        "read": outcome.total("errors_read"),
        "write": outcome.total("errors_write"),
        "timeout": outcome.total("errors_timeout"),
        "status": outcome.non_2xx_3xx,
    }
    errors["total"] = sum(errors.values())
    rps = outcome.requests_per_s
    bytes_read = outcome.total("bytes_in")
    warnings = outcome.warnings()
    started = datetime.fromtimestamp(outcome.started_at, UTC)
    return {
        "format": "veloxy-bench-result",
        "version": 1,
        "tool": {"name": "veloxy bench", "version": __version__,
                 "loop": outcome.loop or "uvloop", "python": platform.python_version()},
        "started_at": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "settings": s.describe(),
        "duration_s": round(elapsed, 6),
        "drain_s": round(outcome.drain_s, 6),
        "interrupted": outcome.interrupted,
        "requests": {"sent": outcome.total("sent"), "completed": completed, "failed": failed,
                     "abandoned": outcome.total("abandoned"),
                     "rejected": outcome.total("rejected")},
        "requests_per_s": round(rps, 3),
        "bytes_read": bytes_read,
        "transfer_per_s": round(bytes_read / elapsed, 3) if elapsed > 0 else 0.0,
        "rate": {"requested": s.rate, "achieved": round(rps, 3),
                 "held": (rps >= 0.99 * s.rate) if s.rate is not None else None},
        "errors": errors,
        "status_codes": {str(k): v for k, v in outcome.statuses.items()},
        "tls": ({"handshakes": outcome.total("handshakes"), "resumed": outcome.total("resumed")}
                if s.target.secure else None),
        "latency": latency_json(outcome.histogram),
        "latency_uncorrected": (latency_json(outcome.histogram_uncorrected)
                                if outcome.histogram_uncorrected is not None else None),
        "schedule_lag": (lag_json(outcome.schedule_lag)
                         if outcome.schedule_lag is not None else None),
        "generator": {
            "processes": [
                {"index": w.index, "connections": s.share(w.index)[1], "completed": w.completed,
                 "cpu_percent": round(100 * share, 1)}
                for w, share in zip(outcome.workers, outcome.cpu_shares, strict=True)
            ],
            "saturated": bool(warnings),
            "warnings": warnings,
        },
        "saturated": bool(warnings),
        "baseline": comparison,
    }


def write_json(path: str, doc: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(doc, out, indent=2)
        out.write("\n")


# -- baseline -------------------------------------------------------------------------------------


def load_baseline(path: str) -> dict[str, Any]:
    """An earlier --json document, checked against the schema (BenchInputError if not)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise BenchInputError(f"baseline {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise BenchInputError(f"baseline {path}: not JSON ({exc})") from None
    try:
        validate(doc)
    except SchemaError as exc:
        raise BenchInputError(f"baseline {path}: not a veloxy bench --json result: {exc}") \
            from None
    return doc


def _metrics(doc: dict[str, Any]) -> list[tuple[str, float, str]]:
    latency = doc["latency"]
    out: list[tuple[str, float, str]] = [("requests_per_s", float(doc["requests_per_s"]),
                                          "higher")]
    for name, key in _LATENCY_KEYS:
        value = latency[key] if key in latency else latency["percentiles"][key]
        out.append((name, float(value), "lower"))
    out.append(("errors_total", float(doc["errors"]["total"]), "lower"))
    return out


def compare(baseline: dict[str, Any], current: dict[str, Any], path: str,
            threshold: float | None) -> dict[str, Any]:
    """Per metric the change in percent; `regressions` lists throughput drops and p99 rises
    beyond `threshold` percent (only with --fail-on-regression)."""
    before = dict((name, value) for name, value, _ in _metrics(baseline))
    metrics = []
    regressions = []
    for name, value, better in _metrics(current):
        base = before[name]
        change = None if base == 0 else round((value - base) / base * 100, 3)
        metrics.append({"name": name, "baseline": base, "current": value,
                        "change_percent": change, "better": better})
        if threshold is None or change is None:
            continue
        if name == "requests_per_s" and change < -threshold:
            regressions.append(f"requests/s dropped {-change:.1f}% "
                               f"({base:,.1f} -> {value:,.1f}), more than {threshold:g}%")
        elif name == "latency_p99_us" and change > threshold:
            regressions.append(f"p99 latency rose {change:.1f}% ({format_us(base)} -> "
                               f"{format_us(value)}), more than {threshold:g}%")
    return {"file": path, "threshold_percent": threshold, "metrics": metrics,
            "regressions": regressions}


# -- text -----------------------------------------------------------------------------------------


def _stats_row(label: str, lat: dict[str, Any]) -> str:
    return (f"    {label:<11} {format_us(lat['mean_us']):>9} {format_us(lat['stdev_us']):>9} "
            f"{format_us(lat['max_us']):>9} {lat['stdev_within_percent']:>8.2f}%")


def text(doc: dict[str, Any], latency: bool = False) -> str:
    """wrk-like report of a document."""
    s = doc["settings"]
    lines = [f"Running {s['duration_s']:g}s test @ {s['url']}"]
    procs = s["processes"]
    mode = ("open loop at {:,.0f} req/s".format(s["rate"]) if s["mode"] == "open"
            else "closed loop")
    conn = "keep-alive" if s["keep_alive"] else "Connection: close"
    if s.get("http2"):
        over = "TLS" if s["url"].startswith("https:") else "h2c"
        conn = f"HTTP/2 over {over}, {s['streams']} stream{'s' if s['streams'] != 1 else ''} each"
    lines.append(f"  {procs} process{'es' if procs != 1 else ''} and {s['connections']} "
                 f"connections, {conn}, {mode} ({doc['tool']['loop']})")
    if s["warmup_s"]:
        lines.append(f"  after a {s['warmup_s']:g}s warm-up")
    lat, raw = doc["latency"], doc["latency_uncorrected"]
    lines.append(f"  {'Stats':<13} {'Avg':>9} {'Stdev':>9} {'Max':>9} {'+/- Stdev':>9}")
    lines.append(_stats_row("Latency", lat))
    if raw is not None:
        lines.append(_stats_row("Uncorrected", raw))
    if latency:
        if raw is not None:
            lines.append("  Latency Distribution (corrected for coordinated omission | "
                         "uncorrected)")
        else:
            lines.append("  Latency Distribution (HdrHistogram)")
        for key in lat["percentiles"]:
            label = f"{float(key):.3f}%"
            row = f"    {label:>9} {format_us(lat['percentiles'][key]):>10}"
            if raw is not None:
                row += f" {format_us(raw['percentiles'][key]):>10}"
            lines.append(row)
        lag = doc["schedule_lag"]
        if lag is not None and lag["count"]:
            lines.append(f"  Schedule lag of timed sends: p50 {format_us(lag['percentiles']['50'])}"
                         f", p99 {format_us(lag['percentiles']['99'])}, max "
                         f"{format_us(lag['max_us'])}")
    req = doc["requests"]
    lines.append(f"  {req['completed']} requests in {doc['duration_s']:.2f}s, "
                 f"{format_bytes(doc['bytes_read'])} read")
    tls = doc.get("tls")
    if tls is not None and (s.get("tls_resume") or tls["resumed"]):
        lines.append(f"  TLS handshakes: {tls['handshakes']}, {tls['resumed']} resumed")
    err = doc["errors"]
    if err["connect"] or err["read"] or err["write"] or err["timeout"]:
        lines.append(f"  Socket errors: connect {err['connect']}, read {err['read']}, "
                     f"write {err['write']}, timeout {err['timeout']}")
    if err["status"]:
        lines.append(f"  Non-2xx or 3xx responses: {err['status']}")
    if req["rejected"]:
        lines.append(f"  Rejected by the script's response(): {req['rejected']}")
    if req["abandoned"]:
        lines.append(f"  Abandoned in flight: {req['abandoned']}")
    lines.append(f"Requests/sec: {doc['requests_per_s']:>10.2f}")
    if s["rate"] is not None:
        lines.append(f"  (requested {s['rate']:,.2f}/s)")
    lines.append(f"Transfer/sec: {format_bytes(doc['transfer_per_s']):>10}")
    if doc["interrupted"]:
        lines.append("Interrupted: partial results.")
    for warning in doc["generator"]["warnings"]:
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)


def comparison_text(comparison: dict[str, Any]) -> str:
    lines = [f"Compared with {comparison['file']}:",
             f"  {'metric':<18} {'baseline':>12} {'current':>12} {'change':>9}"]
    for m in comparison["metrics"]:
        name = m["name"]
        if name.endswith("_us"):
            base, cur = format_us(m["baseline"]), format_us(m["current"])
        elif name == "requests_per_s":
            base, cur = f"{m['baseline']:.2f}", f"{m['current']:.2f}"
        else:
            base, cur = f"{m['baseline']:g}", f"{m['current']:g}"
        change = m["change_percent"]
        if change is None:
            shown, verdict = "n/a", ""
        else:
            shown = f"{change:+.1f}%"
            worse = change < 0 if m["better"] == "higher" else change > 0
            verdict = "" if abs(change) < 0.05 else ("worse" if worse else "better")
        label = {"requests_per_s": "requests/s", "errors_total": "errors"}.get(
            name, name.removesuffix("_us").replace("latency_", "latency "))
        lines.append(f"  {label:<18} {base:>12} {cur:>12} {shown:>9}  {verdict}".rstrip())
    for regression in comparison["regressions"]:
        lines.append(f"REGRESSION: {regression}")
    return "\n".join(lines)
