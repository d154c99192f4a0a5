"""The HTML report: self-contained (no network), one SVG per plot, and the plots really
render: a headless Chromium screenshot shows the series colours in the plot areas."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.lab import synthetic
from tests.lab.png import read_png
from veloxy.lab import html
from veloxy.lab.html import PALETTE, render_html, write_html


def test_self_contained_with_every_plot() -> None:
    page = render_html(synthetic.document())
    assert page.startswith("<!doctype html>")
    # Nothing fetched: no scripts, stylesheets, images or fonts from anywhere.
    assert not re.search(r"<script|<link|<img|@import|url\(", page)
    assert not re.search(r"(src|href)=\"https?:", page)
    # Per scenario: percentile curves, req/s bars, CPU bars, p99 over time, CPU over time.
    assert page.count("<svg") == 2 * 5
    for title in ("latency by percentile", "requests/s", "CPU per request",
                  "p99 latency over time", "target CPU over time"):
        assert page.count(f"{title}</text>") == 2
    assert page.count("<polyline") >= 2 * 3 * 2  # three targets, two line plots each
    assert "99.9%" in page  # the HdrHistogram axis
    assert "no data" not in page


def test_escaping_and_empty_data() -> None:
    doc = synthetic.document()
    doc["suite"]["name"] = "<script>alert(1)</script>"
    assert "<script>" not in render_html(doc)
    empty = html.line_plot("t", [], x_label="x", y_label="y")
    assert "no data" in empty and empty.endswith("</svg>")
    assert "no data" in html.bar_plot("t", [], y_label="y")


def test_log_axis_ticks() -> None:
    assert html._log_ticks(0.3, 60) == [0.5, 1, 2, 5, 10, 20, 50]


def _chromium() -> str | None:
    return next((p for name in ("chromium", "chromium-browser", "google-chrome")
                 if (p := shutil.which(name))), None)


def _screenshot(browser: str, page: Path, out: Path, profile: Path) -> None:
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
         "--force-device-scale-factor=0.5", "--window-size=1400,1500",
         f"--screenshot={out}", page.as_uri()],
        check=True, capture_output=True, timeout=60)


def _colour_counts(png: Path) -> dict[str, int]:
    """Pixels close to each palette colour (antialiasing blends edges: a tolerance)."""
    width, _height, channels, rows = read_png(png.read_bytes())
    wanted = {c: tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in PALETTE[:3]}
    counts = dict.fromkeys(wanted, 0)
    for row in rows:
        for x in range(0, width * channels, channels):
            r, g, b = row[x], row[x + 1], row[x + 2]
            for name, (wr, wg, wb) in wanted.items():
                if abs(r - wr) + abs(g - wg) + abs(b - wb) < 60:
                    counts[name] += 1
    return counts


@pytest.mark.process
def test_plots_render_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):  # .ci/run installs it: its absence there is a failure
            pytest.fail("chromium is not installed; .ci/run should have installed it")
        pytest.skip("chromium is not installed (as root: apt-get install -y chromium)")
    doc = synthetic.document()
    doc["suite"]["scenarios"] = doc["suite"]["scenarios"][:1]  # one scenario: 5 plots
    page = tmp_path / "report.html"
    write_html(page, doc)
    shot = tmp_path / "shot.png"
    _screenshot(browser, page, shot, tmp_path / "profile")
    counts = _colour_counts(shot)
    # Every target's colour is drawn (curves, bars and lines), not just the legend swatches.
    assert all(n > 300 for n in counts.values()), counts

    # The same page with the data taken out: the frames render, the colours do not.
    for cell in doc["cells"]:
        cell["spectrum"], cell["timeline"], cell["cpu_timeline"] = [], [], []
    for row in doc["summary"]:
        row["requests_per_s"] = row["cpu_us_per_request"] = None
    blank = tmp_path / "blank.html"
    write_html(blank, doc)
    blank_shot = tmp_path / "blank.png"
    _screenshot(browser, blank, blank_shot, tmp_path / "profile")
    assert all(n < 100 for n in _colour_counts(blank_shot).values())
