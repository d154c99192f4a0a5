"""`veloxy merge --html OUT`: one self-contained page for a merged distributed run.

Same rules as the suite's report (lab/html.py, whose SVG plots it reuses): no JavaScript, no
external file. The page shows the table of `veloxy merge` (one row per generator and the total),
the latency-by-percentile curves of every generator and of the merged histogram, and each
generator's requests/s beside the total.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from veloxy.lab.html import CSS, PALETTE, PERCENTILE_TICKS, _e, bar_plot, line_plot
from veloxy.loadgen import histogram as hdr

TOTAL_COLOR = "#000000"


def _curve(encoded: str) -> list[tuple[float, float]]:
    """(1/(1-p), latency ms) points of a histogram's percentile spectrum."""
    return [(1 / (1 - item["percentile"] / 100), item["value_us"] / 1000)
            for item in hdr.spectrum(hdr.decode(encoded)) if item["percentile"] < 100]


def _ms(us: float) -> str:
    return f"{us / 1000:,.3f}"


def _table(doc: dict[str, Any]) -> str:
    head = ("<tr><th>source</th><th>window start (UTC)</th><th>s</th><th>connections</th>"
            "<th>requests</th><th>req/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th>"
            "<th>p99.9 ms</th><th>max ms</th></tr>")
    rows = []
    for s in doc["sources"]:
        p = s["latency"]["percentiles"]
        rows.append(
            f"<tr><td>{_e(s['name'])}</td><td>{_e(s['window_start'])}</td>"
            f"<td>{s['duration_s']:.2f}</td><td>{s['connections']}</td>"
            f"<td>{s['requests']['completed']:,}</td><td>{s['requests_per_s']:,.1f}</td>"
            f"<td>{s['errors']['total']:,}</td><td>{_ms(p['50'])}</td><td>{_ms(p['99'])}</td>"
            f"<td>{_ms(p['99.9'])}</td><td>{_ms(s['latency']['max_us'])}</td></tr>")
    lat = doc["latency"]
    p = lat["percentiles"]
    rows.append(
        f"<tr class=\"total\"><td>total</td><td>{_e(doc['started_at'])}</td>"
        f"<td>{doc['duration_s']:.2f}</td><td>{doc['settings']['connections']}</td>"
        f"<td>{doc['requests']['completed']:,}</td><td>{doc['requests_per_s']:,.1f}</td>"
        f"<td>{doc['errors']['total']:,}</td><td>{_ms(p['50'])}</td><td>{_ms(p['99'])}</td>"
        f"<td>{_ms(p['99.9'])}</td><td>{_ms(lat['max_us'])}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def render_merge_html(doc: dict[str, Any]) -> str:
    """The page of a document `veloxy merge` wrote (one with `sources`)."""
    names = [s["name"] for s in doc["sources"]]
    curves = [(s["name"], PALETTE[i % len(PALETTE)], _curve(s["latency"]["histogram"]))
              for i, s in enumerate(doc["sources"])]
    curves.append(("total", TOTAL_COLOR, _curve(doc["latency"]["histogram"])))
    plots = [
        line_plot("latency by percentile", curves, x_label="percentile",
                  y_label="latency (ms)", x_log=True, y_log=True, x_ticks=PERCENTILE_TICKS),
        bar_plot("requests/s", [(name, PALETTE[i % len(PALETTE)], rps, rps, rps)
                                for i, (name, rps) in enumerate(
                                    [(s["name"], s["requests_per_s"]) for s in doc["sources"]])]
                 + [("total", TOTAL_COLOR, doc["requests_per_s"], doc["requests_per_s"],
                     doc["requests_per_s"])], y_label="req/s"),
    ]
    s = doc["settings"]
    mode = f"open loop at {s['rate']:,.0f} req/s in all" if s["mode"] == "open" else "closed loop"
    warnings = "".join(f"<li>{_e(w)}</li>" for w in doc["generator"]["warnings"])
    warning_block = f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>veloxy merge: {len(names)} generators @ {_e(s['url'])}</title>
<style>{CSS} tr.total td {{ font-weight: bold; }}</style></head>
<body>
<h1>{len(names)} generators @ {_e(s['url'])}</h1>
<p>{_e(s['method'])}, {mode}, {s['connections']} connections, {'keep-alive' if s['keep_alive']
else 'Connection: close'}; merged exactly (histograms added, counts summed, rates over the
{doc['duration_s']:.2f} s window from the first start to the last end).</p>
{_table(doc)}
<div class="plots">{"".join(plots)}</div>
{warning_block}
</body></html>
"""


def write_merge_html(path: str | Path, doc: dict[str, Any]) -> None:
    Path(path).write_text(render_merge_html(doc), encoding="utf-8")
