"""Summaries over repetitions, ratios to the reference, baselines and the regression rule
(beyond the threshold AND outside the min-max band), on synthetic results."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from tests.lab import synthetic
from veloxy.lab import report


def _row(doc: dict, scenario: str, target: str) -> dict:
    return next(r for r in doc["summary"] if r["scenario"] == scenario and r["target"] == target)


def test_summary_spread_and_ratios() -> None:
    doc = synthetic.document()
    row = _row(doc, "ka", "veloxy")
    assert row["reps"] == 3
    rps = row["requests_per_s"]
    assert rps["min"] == pytest.approx(12000 * 0.98) and rps["max"] == pytest.approx(12000 * 1.02)
    assert rps["median"] == pytest.approx(12000)
    # Per-repetition ratios: both targets drift alike, so the ratio has no spread.
    ratio = row["ratio_to_reference"]["requests_per_s"]
    assert ratio["min"] == pytest.approx(1.2) and ratio["max"] == pytest.approx(1.2)
    assert row["ratio_to_reference"]["cpu_us_per_request"]["median"] == pytest.approx(0.75)
    ref = _row(doc, "ka", "go")
    assert ref["ratio_to_reference"]["requests_per_s"]["median"] == pytest.approx(1.0)
    assert len(doc["cells"]) == 18
    json.dumps(doc)  # all plain data


def test_skipped_target_is_reported_not_measured() -> None:
    cells = synthetic.cells()
    cells = [c for c in cells if c.target != "go"]
    from veloxy.lab.runner import CellResult

    cells.append(CellResult("ka", "go", 0, 0, "", skipped="go is not installed"))
    doc = report.document(synthetic.suite(), cells, 0.0)
    row = _row(doc, "ka", "go")
    assert row["reps"] == 0 and row["skipped"] == "go is not installed"
    assert _row(doc, "ka", "veloxy")["ratio_to_reference"]["requests_per_s"] is None
    out = io.StringIO()
    report.render(doc, Console(file=out, width=200))
    assert "skipped: go is not installed" in out.getvalue()


def test_tables_show_every_target_and_the_ratios() -> None:
    out = io.StringIO()
    report.render(synthetic.document(), Console(file=out, width=220))
    text = out.getvalue()
    for word in ("direct", "veloxy", "req/s ÷ go", "CPU ÷ go", "1.20x", "0.75x"):
        assert word in text


def test_baseline_round_trip_and_names(tmp_path: Path) -> None:
    doc = synthetic.document()
    path = report.save_baseline(tmp_path / "b", "main", doc)
    assert path == tmp_path / "b" / "main.json"
    assert report.load_baseline(tmp_path / "b", "main")["summary"] == doc["summary"]
    with pytest.raises(ValueError, match=r"no baseline 'other' .*have: main"):
        report.load_baseline(tmp_path / "b", "other")
    for bad in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(ValueError, match="bad baseline name"):
            report.save_baseline(tmp_path, bad, doc)
    (tmp_path / "b" / "junk.json").write_text("{\"format\": \"other\"}")
    with pytest.raises(ValueError, match="not a veloxy suite result"):
        report.load_baseline(tmp_path / "b", "junk")


def test_baseline_dir_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(report.BASELINE_DIR_ENV, "/tmp/somewhere")
    assert report.baseline_dir() == Path("/tmp/somewhere")
    assert report.baseline_dir("x") == Path("x")
    monkeypatch.delenv(report.BASELINE_DIR_ENV)
    assert report.baseline_dir() == Path(report.DEFAULT_BASELINE_DIR)


def test_same_results_are_no_regression() -> None:
    base = synthetic.document()
    comparison = report.compare(base, synthetic.document(), "main", 5.0)
    assert comparison["regressions"] == []
    assert all(e["in_noise"] for e in comparison["entries"])


def test_a_drop_beyond_threshold_and_noise_is_a_regression() -> None:
    base = synthetic.document()
    slower = synthetic.document({"veloxy": 0.8})  # -20 % req/s, +25 % p99 and CPU
    comparison = report.compare(base, slower, "main", 5.0)
    flagged = {(e["scenario"], e["target"], e["metric"]) for e in comparison["entries"]
               if e["regression"]}
    assert flagged == {(s, "veloxy", m) for s in ("ka", "fixed")
                       for m in ("requests_per_s", "p99_us", "cpu_us_per_request")}
    assert any("requests_per_s -20.0%" in line for line in comparison["regressions"])
    out = io.StringIO()
    report.render_comparison(comparison, Console(file=out, width=220))
    assert "REGRESSION" in out.getvalue()


def test_a_change_inside_the_noise_band_is_not_a_regression() -> None:
    base = synthetic.document()
    # -3 % median: the current max (0.97*1.02) still reaches the baseline's min (0.98).
    comparison = report.compare(base, synthetic.document({"veloxy": 0.97}), "main", 1.0)
    assert comparison["regressions"] == []
    entry = next(e for e in comparison["entries"] if e["target"] == "veloxy"
                 and e["metric"] == "requests_per_s")
    assert entry["change_percent"] == pytest.approx(-3.0) and entry["in_noise"]


def test_a_small_change_outside_the_band_is_under_the_threshold() -> None:
    base = synthetic.document()
    comparison = report.compare(base, synthetic.document({"veloxy": 0.93}), "main", 10.0)
    assert comparison["regressions"] == []
    comparison = report.compare(base, synthetic.document({"veloxy": 0.93}), "main", 5.0)
    assert comparison["regressions"]


def test_improvements_are_not_regressions() -> None:
    comparison = report.compare(synthetic.document(), synthetic.document({"go": 1.5}), "m",
                                5.0)
    assert comparison["regressions"] == []
