"""`veloxy suite` end to end on 127.0.0.1 with tiny durations: the built-in origin, veloxy
(plain and with tuning.gc from the suite's gc: shorthand), nginx when installed, an
unreachable URL target; every cell interleaved, CPU and memory sampled, JSON and HTML
written, nothing left running."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.loadgen.test_demo import _marked
from tests.support.proc import SRC, child_env

pytestmark = pytest.mark.process


def _free_port_closed() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


def _suite(tmp_path: Path) -> Path:
    data = {
        "name": "tiny", "reference": "veloxy", "repetitions": 2, "warmup": "0s",
        "targets": [
            {"name": "direct", "kind": "direct"},
            {"name": "veloxy", "kind": "veloxy"},
            {"name": "veloxy-gc", "kind": "veloxy", "gc": {"freeze": True, "gen0": 20000},
             "config": {"upstreams": {"o": {"servers": ["{upstream}"],
                                            "pool": {"max_connections": 8}}}}},
            {"name": "nginx", "kind": "nginx"},
            {"name": "ghost", "kind": "url",
             "url": f"http://127.0.0.1:{_free_port_closed()}/"},
        ],
        "scenarios": [
            {"name": "ka", "connections": 4, "duration": "0.25s"},
            {"name": "close-fixed", "connections": 4, "rate": 200, "duration": "0.25s",
             "keep_alive": False, "payload": "1k", "origin_delay": "2ms", "workers": 2},
        ],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_suite_runs_interleaved_and_cleans_up(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    out, page = tmp_path / "out.json", tmp_path / "out.html"
    result = subprocess.run(
        [sys.executable, "-m", "veloxy", "suite", str(_suite(tmp_path)), "--json", str(out),
         "--html", str(page)], capture_output=True, text=True, timeout=60,
        env=child_env(None, {"VELOXY_TEST_MARK": mark}), cwd=str(SRC.parent))
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(out.read_text())
    cells = doc["cells"]
    assert len(cells) == 2 * 2 * 5
    # Interleaved: within one repetition and scenario every target runs once, and the order
    # is rotated from one repetition to the next.
    first = [c["target"] for c in cells[:5]]
    second = [c["target"] for c in cells[10:15]]
    assert sorted(first) == sorted(second) and first != second
    measured = [c for c in cells if not c["skipped"]]
    has_nginx = shutil.which("nginx") is not None
    assert len(measured) == 2 * 2 * (4 if has_nginx else 3)
    for c in measured:
        assert c["completed"] > 0 and c["requests_per_s"] > 0, c
        # /proc counts CPU in 10 ms ticks: a 0.2 s run at 200 req/s may show 0.
        assert c["cpu_us_per_request"] is not None and c["cpu_us_per_request"] >= 0, c
        assert c["rss_mib_max"] and c["rss_mib_max"] > 1, c
        assert c["spectrum"] and c["timeline"], c
    assert all(c["cpu_us_per_request"] > 0 for c in measured if c["scenario"] == "ka")
    ghost = [c for c in cells if c["target"] == "ghost"]
    assert all("cannot connect" in (c["skipped"] or "") for c in ghost)
    # The Connection: close scenario at a fixed rate held its rate through every target.
    fixed = [c for c in measured if c["scenario"] == "close-fixed"]
    assert all(c["requests_per_s"] > 100 for c in fixed), fixed
    rows = {(r["scenario"], r["target"]): r for r in doc["summary"]}
    assert rows[("ka", "veloxy")]["ratio_to_reference"]["requests_per_s"]["median"] == 1.0
    assert rows[("ka", "direct")]["requests_per_s"]["n"] == 2
    assert "ka" in result.stdout and "veloxy-gc" in result.stdout
    assert "<svg" in page.read_text()
    assert _marked(mark) == []
