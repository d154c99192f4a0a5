"""`veloxy suite --save-baseline / --compare / --fail-on-regression`: stored as JSON under
--baseline-dir, compared per cell, exit 1 only when asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.proc import SRC, child_env

pytestmark = pytest.mark.process


def _mini(tmp_path: Path) -> Path:
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump({
        "name": "mini", "warmup": 0, "targets": [{"name": "direct"}],
        "scenarios": [{"name": "ka", "connections": 2, "duration": "0.2s"}]}))
    return path


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "veloxy", "suite", str(_mini(tmp_path)),
                           "--baseline-dir", str(tmp_path / "baselines"), *args],
                          capture_output=True, text=True, timeout=60, env=child_env(None, {}),
                          cwd=str(SRC.parent))


def test_baseline_save_compare_and_exit_codes(tmp_path: Path) -> None:
    saved = _run(tmp_path, "--save-baseline", "main")
    assert saved.returncode == 0, saved.stderr
    path = tmp_path / "baselines" / "main.json"
    doc = json.loads(path.read_text())
    # Pretend the baseline was ten times faster: the next run is a regression.
    for row in doc["summary"]:
        for key in ("min", "median", "max"):
            row["requests_per_s"][key] *= 10
    path.write_text(json.dumps(doc))
    compared = _run(tmp_path, "--compare", "main")
    assert compared.returncode == 0, compared.stderr  # reported, not failed
    assert "REGRESSION" in compared.stdout
    failed = _run(tmp_path, "--compare", "main", "--fail-on-regression")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    missing = _run(tmp_path, "--compare", "nope")
    assert missing.returncode == 2 and "no baseline 'nope'" in missing.stderr
    assert _run(tmp_path, "--fail-on-regression").returncode == 2
