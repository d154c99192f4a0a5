"""The suite's HTML report: one self-contained file, plots drawn here as inline SVG.

Why no plotting library and no JavaScript: the report is attached to CI runs and opened years
later, offline, in whatever browser is at hand; a file that needs a CDN or a Python plotting
stack to render is a file nobody reads. SVG written by hand is a few hundred lines and renders
the same everywhere.

Per scenario:
- latency percentile curves, one per target, x on the usual HdrHistogram log axis
  (1/(1-p): 50 %, 90 %, 99 %, 99.9 % ... equally spaced), y in ms on a log axis;
- req/s and CPU µs/request bars (median, with a min-max whisker over repetitions);
- p99 latency over time (1 s intervals, log axis) and the target's CPU % over time.

The run shown in the curves is, per target, the repetition with the median p99.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

W, H = 640, 300
PAD_L, PAD_R, PAD_T, PAD_B = 64, 150, 28, 42
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt_ms(us: float) -> str:
    ms = us / 1000
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 1:
        return f"{ms:.3g}"
    return f"{ms:.2g}"


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between lo and hi (both > 0)."""
    ticks: list[float] = []
    exp = math.floor(math.log10(lo))
    while True:
        for m in (1, 2, 5):
            v = m * 10.0 ** exp
            if v > hi * 1.0001:
                return ticks or [lo, hi]
            if v >= lo * 0.9999:
                ticks.append(v)
        exp += 1


def _frame(title: str, x_label: str, y_label: str) -> list[str]:
    return [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" '
        f'width="{W}" height="{H}" role="img" aria-label="{_e(title)}">',
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>',
        f'<text x="{PAD_L}" y="18" font-size="13" font-weight="bold">{_e(title)}</text>',
        f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{H - 6}" font-size="11" '
        f'text-anchor="middle">{_e(x_label)}</text>',
        f'<text x="14" y="{(PAD_T + H - PAD_B) / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {(PAD_T + H - PAD_B) / 2})">{_e(y_label)}</text>',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
        f'height="{H - PAD_T - PAD_B}" fill="none" stroke="#999"/>',
    ]


def _legend(labels: list[tuple[str, str]]) -> list[str]:
    out = []
    for i, (label, color) in enumerate(labels):
        y = PAD_T + 12 + i * 16
        out.append(f'<rect x="{W - PAD_R + 10}" y="{y - 8}" width="12" height="4" '
                   f'fill="{color}"/>')
        out.append(f'<text x="{W - PAD_R + 26}" y="{y - 3}" font-size="11">{_e(label)}</text>')
    return out


def line_plot(title: str, series: list[tuple[str, str, list[tuple[float, float]]]], *,
              x_label: str, y_label: str, x_log: bool = False, y_log: bool = False,
              x_ticks: list[tuple[float, str]] | None = None) -> str:
    """An SVG line plot; points with a non-positive coordinate on a log axis are dropped."""
    pts = [(x, y) for _, _, s in series for x, y in s
           if (not x_log or x > 0) and (not y_log or y > 0)]
    out = _frame(title, x_label, y_label)
    if not pts:
        out.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text></svg>')
        return "\n".join(out)
    fx = math.log10 if x_log else (lambda v: v)
    fy = math.log10 if y_log else (lambda v: v)
    xs = [fx(x) for x, _ in pts]
    ys = [fy(y) for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = (min(ys), max(ys)) if y_log else (0.0, max(ys))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    y1 += (y1 - y0) * 0.05
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x: float) -> float:
        return PAD_L + (fx(x) - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return H - PAD_B - (fy(y) - y0) / (y1 - y0) * ph

    if y_log:
        yt = _log_ticks(10 ** y0, 10 ** y1)
    else:
        step = _nice_step(y1 - y0)
        yt = [y0 + step * i for i in range(int((y1 - y0) / step) + 1)]
    for v in yt:
        y = py(v)
        if PAD_T - 0.5 <= y <= H - PAD_B + 0.5:
            out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" '
                       'stroke="#e5e5e5"/>')
            out.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" font-size="10" '
                       f'text-anchor="end">{_num(v)}</text>')
    for v, label in x_ticks or [(x, _num(x)) for x in _linear_ticks(10 ** x0 if x_log else x0,
                                                                     10 ** x1 if x_log else x1)]:
        if (x_log and v <= 0) or not (x0 - 1e-9 <= fx(v) <= x1 + 1e-9):
            continue
        x = px(v)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{H - PAD_B}" '
                   'stroke="#eeeeee"/>')
        out.append(f'<text x="{x:.1f}" y="{H - PAD_B + 14}" font-size="10" '
                   f'text-anchor="middle">{_e(label)}</text>')
    for _label, color, s in series:
        coords = [f"{px(x):.1f},{py(y):.1f}" for x, y in s
                  if (not x_log or x > 0) and (not y_log or y > 0)]
        if len(coords) == 1:
            cx, cy = coords[0].split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>')
        elif coords:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2.5" '
                       f'points="{" ".join(coords)}"/>')
    out += _legend([(label, color) for label, color, _ in series])
    out.append("</svg>")
    return "\n".join(out)


def bar_plot(title: str, bars: list[tuple[str, str, float, float, float]], *,
             y_label: str) -> str:
    """Bars of (label, color, median, min, max), with a min-max whisker."""
    out = _frame(title, "", y_label)
    top = max((b[4] for b in bars), default=0.0)
    if not bars or top <= 0:
        out.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text></svg>')
        return "\n".join(out)
    step = _nice_step(top * 1.05)
    top = step * math.ceil(top * 1.05 / step)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    for i in range(round(top / step) + 1):
        v = i * step
        y = H - PAD_B - v / top * ph
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" font-size="10" '
                   f'text-anchor="end">{_num(v)}</text>')
    slot = pw / len(bars)
    for i, (label, color, median, lo, hi) in enumerate(bars):
        x = PAD_L + i * slot + slot * 0.15
        w = slot * 0.7
        y = H - PAD_B - median / top * ph
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                   f'height="{H - PAD_B - y:.1f}" fill="{color}"/>')
        cx = x + w / 2
        ylo, yhi = H - PAD_B - lo / top * ph, H - PAD_B - hi / top * ph
        out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{ylo:.1f}" y2="{yhi:.1f}" '
                   'stroke="#222" stroke-width="1.5"/>')
        out.append(f'<text x="{cx:.1f}" y="{y - 4:.1f}" font-size="10" '
                   f'text-anchor="middle">{_num(median)}</text>')
        out.append(f'<text x="{cx:.1f}" y="{H - PAD_B + 14}" font-size="10" '
                   f'text-anchor="middle">{_e(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _nice_step(span: float) -> float:
    if span <= 0:
        return 1.0
    raw = span / 5
    exp = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= raw:
            return m * exp
    return 10 * exp


def _linear_ticks(lo: float, hi: float) -> list[float]:
    step = _nice_step(hi - lo)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}"
    return f"{v:.3g}"


# -- the page -----------------------------------------------------------------------------------

PERCENTILE_TICKS = [(1.0, "0%"), (2.0, "50%"), (10.0, "90%"), (100.0, "99%"),
                    (1000.0, "99.9%"), (10000.0, "99.99%"), (100000.0, "99.999%")]


def _median_cell(cells: list[dict[str, Any]]) -> dict[str, Any]:
    ranked = sorted(cells, key=lambda c: c["latency_us"].get("p99", 0))
    return ranked[(len(ranked) - 1) // 2]


def scenario_section(doc: dict[str, Any], scenario: dict[str, Any]) -> str:
    name = scenario["name"]
    targets = [t["name"] for t in doc["suite"]["targets"]]
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(targets)}
    chosen: dict[str, dict[str, Any]] = {}
    for t in targets:
        cells = [c for c in doc["cells"] if c["scenario"] == name and c["target"] == t
                 and not c["skipped"]]
        if cells:
            chosen[t] = _median_cell(cells)
    curves = []
    for t, cell in chosen.items():
        pts = [(1 / (1 - p / 100) if p < 100 else 1e6, v / 1000) for p, v in cell["spectrum"]
               if p < 100]
        curves.append((t, colors[t], pts))
    plots = [line_plot(f"{name}: latency by percentile", curves, x_label="percentile",
                       y_label="latency (ms)", x_log=True, y_log=True,
                       x_ticks=PERCENTILE_TICKS)]
    rows = {r["target"]: r for r in doc["summary"] if r["scenario"] == name}
    rps, cpu = [], []
    for t in targets:
        r = rows.get(t)
        if r and r["requests_per_s"]:
            s = r["requests_per_s"]
            rps.append((t, colors[t], s["median"], s["min"], s["max"]))
        if r and r["cpu_us_per_request"]:
            s = r["cpu_us_per_request"]
            cpu.append((t, colors[t], s["median"], s["min"], s["max"]))
    plots.append(bar_plot(f"{name}: requests/s", rps, y_label="req/s"))
    plots.append(bar_plot(f"{name}: CPU per request", cpu, y_label="CPU µs / request"))
    p99_time = [(t, colors[t], [(p["t_s"], p["p99_us"] / 1000) for p in cell["timeline"]])
                for t, cell in chosen.items()]
    plots.append(line_plot(f"{name}: p99 latency over time", p99_time, x_label="time (s)",
                           y_label="p99 (ms)", y_log=True))
    cpu_time = [(t, colors[t], [(x, y) for x, y in cell["cpu_timeline"]])
                for t, cell in chosen.items() if cell["cpu_timeline"]]
    plots.append(line_plot(f"{name}: target CPU over time", cpu_time, x_label="time (s)",
                           y_label="CPU (% of one core)"))
    table = _summary_table(doc, name, targets)
    return (f'<section><h2>{_e(name)}</h2><p>{_e(scenario["describe"])}, '
            f'{scenario["duration"]:g} s per run</p>{table}'
            f'<div class="plots">{"".join(plots)}</div></section>')


def _summary_table(doc: dict[str, Any], scenario: str, targets: list[str]) -> str:
    ref = doc["suite"]["reference"]
    head = ("<tr><th>target</th><th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th>"
            f"<th>errors</th><th>CPU µs/req</th><th>RSS MiB</th><th>req/s ÷ {_e(ref)}</th>"
            f"<th>CPU ÷ {_e(ref)}</th></tr>")
    body = []
    for r in doc["summary"]:
        if r["scenario"] != scenario:
            continue
        if not r["reps"]:
            body.append(f"<tr><td>{_e(r['target'])}</td><td colspan=9>skipped: "
                        f"{_e(r['skipped'])}</td></tr>")
            continue

        def med(key: str, scale: float = 1.0, digits: int = 0, row: Any = r) -> str:
            s = row[key]
            return "—" if not s else f"{s['median'] / scale:,.{digits}f}"

        def ratio(key: str, row: Any = r) -> str:
            s = row["ratio_to_reference"][key]
            return "—" if not s else f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"

        body.append(
            f"<tr><td>{_e(r['target'])}</td><td>{med('requests_per_s')}</td>"
            f"<td>{med('p50_us', 1000, 2)}</td><td>{med('p99_us', 1000, 2)}</td>"
            f"<td>{med('max_us', 1000, 1)}</td><td>{med('errors')}</td>"
            f"<td>{med('cpu_us_per_request', 1, 1)}</td><td>{med('rss_mib_max', 1, 0)}</td>"
            f"<td>{ratio('requests_per_s')}</td><td>{ratio('cpu_us_per_request')}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
svg.plot { background: #fff; border: 1px solid #ddd; }
section { margin-bottom: 32px; }
"""


def render_html(doc: dict[str, Any]) -> str:
    suite = doc["suite"]
    m = doc["machine"]
    sections = "".join(scenario_section(doc, s) for s in suite["scenarios"])
    comparison = ""
    if doc.get("comparison"):
        c = doc["comparison"]
        lines = "".join(f"<li>{_e(x)}</li>" for x in c["regressions"]) or "<li>none</li>"
        comparison = (f"<h2>Compared with baseline {_e(c['baseline'])}</h2>"
                      f"<p>Regressions (threshold {c['threshold_percent']:g}%, outside the "
                      f"min-max band):</p><ul>{lines}</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>veloxy suite {_e(suite['name'])}</title><style>{CSS}</style></head>
<body>
<h1>veloxy suite: {_e(suite['name'])}</h1>
<p>{_e(suite['description'])}</p>
<p>{_e(doc['started_at'])} · {_e(m.get('cpu', ''))} · {_e(m.get('cpus'))} CPUs ·
{_e(m.get('platform'))} · Python {_e(m.get('python'))} ({_e(m.get('loop'))}) ·
{suite['repetitions']} repetition(s), warm-up {suite['warmup_s']:g} s, pin {_e(suite['pin'])},
reference {_e(suite['reference'])}</p>
{comparison}
{sections}
</body></html>
"""


def write_html(path: str | Path, doc: dict[str, Any]) -> None:
    Path(path).write_text(render_html(doc), encoding="utf-8")
