"""`veloxy merge`: several `veloxy bench --json` results of one distributed run, made one.

Why the merge can be exact: every result carries its whole latency histogram (HdrHistogram's
compressed encoding, same geometry everywhere), so the merged histogram is the sum of the
counts arrays, the same one a single generator recording every sample would have built, and
its percentiles are the percentiles of the union of the samples. Averaging the sources'
percentiles would be wrong (the mean of two p99s is not a p99 of anything).

What is added and how:
- counts (requests, errors, status codes, bytes): summed;
- histograms (latency, uncorrected latency, schedule lag): added;
- rates: the merged counts over the merged window, from the earliest start of a measured
  window to the latest end. Generators started with one `--start-at` measure the same window
  to within milliseconds, so this is their common window; a merge whose windows overlap by
  less than `MIN_OVERLAP` of it is refused, since a rate over windows that did not coincide
  describes no moment of the run.

Refused (MergeError, exit 2): results whose settings make the sum meaningless (open vs closed
loop, another URL, method, body, headers, keep-alive, script or timeout), an already merged
document (merge the original files), the same run given twice, and fewer than two results.
Connections, processes, -R and the duration may differ: each generator adds its share.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from veloxy import __version__
from veloxy.loadgen import histogram as hdr
from veloxy.loadgen.report import format_us, latency_json
from veloxy.loadgen.schema import SchemaError, validate
from veloxy.loadgen.settings import format_start_time

#: The measured windows must overlap over at least this share of the merged window.
MIN_OVERLAP = 0.95
#: Settings that must be equal for a sum of results to describe one load.
MUST_MATCH = ("mode", "url", "method", "keep_alive", "headers", "body_bytes", "script",
              "timeout_s")
#: Settings added after version 1's first documents, with the value older documents mean.
ADDED_MUST_MATCH: dict[str, object] = {"http2": False, "streams": 1, "tls_resume": False}


class MergeError(ValueError):
    """The results cannot be merged; the message names the file and the reason."""


def load_result(path: str) -> dict[str, Any]:
    """A `veloxy bench --json` document, checked against its schema."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise MergeError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise MergeError(f"{path}: not JSON ({exc})") from None
    try:
        validate(doc)
    except SchemaError as exc:
        raise MergeError(f"{path}: not a veloxy bench --json result: {exc}") from None
    return doc


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def window(doc: dict[str, Any]) -> tuple[float, float]:
    """(start, end) of a result's measured window in epoch seconds: the run began at
    started_at, measured after its warm-up, for duration_s."""
    start = _epoch(doc["started_at"]) + doc["settings"]["warmup_s"]
    return start, start + doc["duration_s"]


def check_compatible(named: list[tuple[str, dict[str, Any]]]) -> None:
    if len(named) < 2:
        raise MergeError("give at least two results to merge")
    first_name, first = named[0]
    seen: dict[tuple[str, str], str] = {}
    for name, doc in named:
        if "sources" in doc:
            raise MergeError(f"{name}: already a merge of {len(doc['sources'])} results; "
                             "merge the original files instead")
        key = (doc["started_at"], doc["latency"]["histogram"])
        if key in seen:
            raise MergeError(f"{name} and {seen[key]} are the same run")
        seen[key] = name
        for setting in MUST_MATCH + tuple(ADDED_MUST_MATCH):
            default = ADDED_MUST_MATCH.get(setting)
            mine = doc["settings"].get(setting, default)
            theirs = first["settings"].get(setting, default)
            if setting == "tls_resume":  # null for http://, where it means no resumption
                mine, theirs = bool(mine), bool(theirs)
            if mine != theirs:
                raise MergeError(f"{name}: settings.{setting} is {mine!r} but {first_name} has "
                                 f"{theirs!r}; results of different loads cannot be merged")
    windows = [window(doc) for _, doc in named]
    start, end = min(w[0] for w in windows), max(w[1] for w in windows)
    common = min(w[1] for w in windows) - max(w[0] for w in windows)
    if end <= start or common < MIN_OVERLAP * (end - start):
        spans = ", ".join(f"{name}: {format_start_time(w[0])} for {w[1] - w[0]:.2f}s"
                          for (name, _), w in zip(named, windows, strict=True))
        share = max(common, 0.0) / (end - start) if end > start else 0.0
        raise MergeError(f"the measured windows overlap over {share:.0%} of their span, "
                         f"less than {MIN_OVERLAP:.0%} ({spans}); start the generators with "
                         "one --start-at TIME")


def _sum_histograms(docs: list[dict[str, Any]], key: str) -> Any:
    parts = [doc[key] for doc in docs]
    if any(part is None or "histogram" not in part for part in parts):
        return None  # closed loop, or an older document without the histogram
    return hdr.merge(part["histogram"] for part in parts)


def _source_row(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    latency = {k: doc["latency"][k] for k in ("count", "min_us", "mean_us", "stdev_us",
                                              "max_us", "percentiles", "histogram")}
    return {"name": name, "window_start": format_start_time(window(doc)[0]),
            "duration_s": doc["duration_s"], "connections": doc["settings"]["connections"],
            "rate": doc["settings"]["rate"], "requests": doc["requests"],
            "requests_per_s": doc["requests_per_s"], "errors": doc["errors"],
            "latency": latency, "saturated": doc["saturated"]}


def _sum_tls(docs: list[dict[str, Any]]) -> dict[str, int] | None:
    """The TLS handshake counts added up; None unless every result has them."""
    counts = [doc.get("tls") for doc in docs]
    if any(c is None for c in counts):
        return None
    return {key: sum(c[key] for c in counts if c is not None)
            for key in ("handshakes", "resumed")}


def merge_results(named: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The merged document: a valid result (schema) with one `sources` row per input."""
    check_compatible(named)
    docs = [doc for _, doc in named]
    first = docs[0]
    windows = [window(doc) for doc in docs]
    start, end = min(w[0] for w in windows), max(w[1] for w in windows)
    elapsed = end - start

    def total(*path: str) -> int:
        out = 0
        for doc in docs:
            value: Any = doc
            for part in path:
                value = value[part]
            out += value
        return out

    completed = total("requests", "completed")
    bytes_read = total("bytes_read")
    rps = completed / elapsed if elapsed > 0 else 0.0
    statuses: dict[str, int] = {}
    for doc in docs:
        for code, n in doc["status_codes"].items():
            statuses[code] = statuses.get(code, 0) + n
    open_loop = first["settings"]["mode"] == "open"
    requested = sum(doc["settings"]["rate"] for doc in docs) if open_loop else None
    latency = hdr.merge(doc["latency"]["histogram"] for doc in docs)
    uncorrected = _sum_histograms(docs, "latency_uncorrected") if open_loop else None
    lag = _sum_histograms(docs, "schedule_lag") if open_loop else None
    lag_doc = None
    if lag is not None:
        lag_doc = hdr.summary(lag)
        lag_doc["histogram"] = hdr.encode(lag)
    processes: list[dict[str, Any]] = []
    warnings: list[str] = []
    for name, doc in named:
        for proc in doc["generator"]["processes"]:
            processes.append({**proc, "index": len(processes)})
        warnings += [f"{name}: {w}" for w in doc["generator"]["warnings"]]
    saturated = any(doc["saturated"] for doc in docs)
    settings = dict(first["settings"])
    settings.update(
        connections=total("settings", "connections"), processes=total("settings", "processes"),
        duration_s=max(doc["settings"]["duration_s"] for doc in docs), rate=requested,
        warmup_s=max(doc["settings"]["warmup_s"] for doc in docs),
        start_at=first["settings"].get("start_at"))
    # started_at + warmup_s is the merged window's start, as in a single result.
    started = start - settings["warmup_s"]
    return {
        "format": "veloxy-bench-result",
        "version": 1,
        "tool": {"name": "veloxy bench", "version": __version__,
                 "loop": first["tool"]["loop"], "python": first["tool"]["python"]},
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"),
        "settings": settings,
        "duration_s": round(elapsed, 6),
        "drain_s": max(doc["drain_s"] for doc in docs),
        "interrupted": any(doc["interrupted"] for doc in docs),
        "requests": {key: total("requests", key)
                     for key in ("sent", "completed", "failed", "abandoned", "rejected")},
        "requests_per_s": round(rps, 3),
        "bytes_read": bytes_read,
        "transfer_per_s": round(bytes_read / elapsed, 3) if elapsed > 0 else 0.0,
        "rate": {"requested": requested, "achieved": round(rps, 3),
                 "held": (rps >= 0.99 * requested) if requested is not None else None},
        "errors": {key: total("errors", key)
                   for key in ("connect", "read", "write", "timeout", "status", "total")},
        "status_codes": dict(sorted(statuses.items())),
        "tls": _sum_tls(docs),
        "latency": latency_json(latency),
        "latency_uncorrected": latency_json(uncorrected) if uncorrected is not None else None,
        "schedule_lag": lag_doc,
        "generator": {"processes": processes, "saturated": saturated, "warnings": warnings},
        "sources": [_source_row(name, doc) for name, doc in named],
        "saturated": saturated,
        "baseline": None,
    }


def sources_table(doc: dict[str, Any]) -> str:
    """One row per source and the total, as `veloxy merge` prints them."""
    head = (f"  {'source':<24} {'requests':>10} {'req/s':>11} {'errors':>7} {'p50':>9} "
            f"{'p99':>9} {'p99.9':>9} {'max':>9}")

    def row(name: str, requests: int, rps: float, errors: int, lat: dict[str, Any]) -> str:
        p = lat["percentiles"]
        return (f"  {name[-24:]:<24} {requests:>10,} {rps:>11,.1f} {errors:>7,} "
                f"{format_us(p['50']):>9} {format_us(p['99']):>9} {format_us(p['99.9']):>9} "
                f"{format_us(lat['max_us']):>9}")

    sources = doc["sources"]
    starts = [_epoch(s["window_start"]) for s in sources]
    lines = [f"Merged {len(sources)} results @ {doc['settings']['url']}: window "
             f"{doc['duration_s']:.2f}s from {format_start_time(min(starts))}, starts "
             f"{(max(starts) - min(starts)) * 1000:.0f} ms apart", head]
    for s in sources:
        lines.append(row(s["name"], s["requests"]["completed"], s["requests_per_s"],
                         s["errors"]["total"], s["latency"]))
    lines.append(row("total", doc["requests"]["completed"], doc["requests_per_s"],
                     doc["errors"]["total"], doc["latency"]))
    return "\n".join(lines)
