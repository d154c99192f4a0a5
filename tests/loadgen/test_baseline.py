"""--baseline FILE compares with an earlier --json result; --fail-on-regression PCT exits 1 when
throughput drops or p99 rises by more than PCT, and only then."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.loadgen.conftest import ok
from tests.support.backends import BackendStarter
from veloxy.loadgen.report import compare, comparison_text, document, write_json
from veloxy.loadgen.runner import run_bench
from veloxy.loadgen.schema import validate
from veloxy.loadgen.settings import BenchSettings

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def honest(backends: BackendStarter) -> tuple[str, dict[str, Any]]:
    """A server and a real result against it."""
    server = backends.serving(ok)
    outcome = run_bench(BenchSettings(url=server.url + "/", connections=2, duration=0.5,
                                      processes=1))
    return server.url + "/", document(outcome)


@pytest.mark.process
def test_a_planted_throughput_regression_fails_the_run(honest: tuple[str, dict[str, Any]],
                                                       cli: Cli, tmp_path: Path) -> None:
    url, doc = honest
    planted = copy.deepcopy(doc)
    planted["requests_per_s"] = doc["requests_per_s"] * 3  # "it used to be 3x faster"
    base, out = tmp_path / "base.json", tmp_path / "now.json"
    write_json(str(base), planted)
    result = cli("bench", url, "-c", "2", "-p", "1", "-d", "0.5s", "--baseline", str(base),
                 "--fail-on-regression", "10", "--json", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "REGRESSION: requests/s dropped" in result.stdout
    assert f"Compared with {base}" in result.stdout
    now = json.loads(out.read_text())
    validate(now)
    assert now["baseline"]["threshold_percent"] == 10
    assert any("requests/s dropped" in r for r in now["baseline"]["regressions"])
    rps = next(m for m in now["baseline"]["metrics"] if m["name"] == "requests_per_s")
    assert rps["change_percent"] < -10 and rps["better"] == "higher"


@pytest.mark.process
def test_same_server_within_threshold_passes(honest: tuple[str, dict[str, Any]], cli: Cli,
                                            tmp_path: Path) -> None:
    url, doc = honest
    base = tmp_path / "base.json"
    write_json(str(base), doc)
    result = cli("bench", url, "-c", "2", "-p", "1", "-d", "0.5s", "--baseline", str(base),
                 "--fail-on-regression", "10000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REGRESSION" not in result.stdout
    assert "requests/s" in result.stdout and "latency p99" in result.stdout


def _doc(rps: float, p99: int, errors: int = 0) -> dict[str, Any]:
    return {"requests_per_s": rps, "errors": {"total": errors},
            "latency": {"mean_us": p99 / 3, "max_us": p99 * 2,
                        "percentiles": {"50": p99 // 4, "90": p99 // 2, "99": p99,
                                        "99.9": p99 + 1}}}


@pytest.mark.parametrize("now, threshold, expected", [
    (_doc(1000, 1000), 5, []),                                       # identical
    (_doc(960, 1000), 5, []),                                        # -4%: within 5%
    (_doc(940, 1000), 5, ["requests/s dropped 6.0%"]),               # -6%
    (_doc(1000, 1049), 5, []),                                       # p99 +4.9%
    (_doc(1000, 1100), 5, ["p99 latency rose 10.0%"]),               # +10%
    (_doc(500, 3000), 5, ["requests/s dropped", "p99 latency rose"]),
    (_doc(2000, 10, errors=50), 5, []),                              # better: never flagged
    (_doc(100, 99_000), None, []),                                   # no threshold: report only
])
def test_compare_flags_only_drops_and_p99_rises_beyond_the_threshold(
        now: dict[str, Any], threshold: float | None, expected: list[str]) -> None:
    result = compare(_doc(1000, 1000), now, "base.json", threshold)
    assert len(result["regressions"]) == len(expected)
    for found, wanted in zip(result["regressions"], expected, strict=True):
        assert wanted in found
    names = [m["name"] for m in result["metrics"]]
    assert names[0] == "requests_per_s" and "latency_p99_us" in names
    text = comparison_text(result)
    assert text.count("REGRESSION") == len(expected)


def test_a_zero_baseline_has_no_percentage() -> None:
    result = compare(_doc(1000, 1000), _doc(1000, 1000, errors=3), "b.json", 5)
    errors = next(m for m in result["metrics"] if m["name"] == "errors_total")
    assert errors["change_percent"] is None
    assert "n/a" in comparison_text(result)
