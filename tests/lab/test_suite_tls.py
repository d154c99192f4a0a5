"""`veloxy suite` with TLS and HTTP/2 scenarios end to end on 127.0.0.1: veloxy and nginx
(when installed) terminate TLS with the run's certificate, the generator verifies it and
speaks HTTP/1.1 or HTTP/2 (ALPN h2: the generator refuses a server that picks anything
else); `direct` is skipped with its reason; the HTML report has the scenarios."""

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


def test_tls_and_h2_scenarios_run_end_to_end(tmp_path: Path) -> None:
    suite = tmp_path / "tls.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "tiny-tls", "reference": "veloxy", "repetitions": 1, "warmup": "0s",
        "targets": [{"name": "direct", "kind": "direct"}, {"name": "veloxy", "kind": "veloxy"},
                    {"name": "nginx", "kind": "nginx"}],
        "scenarios": [
            {"name": "tls-h1", "connections": 4, "duration": "0.3s", "tls": True},
            {"name": "tls-h2", "connections": 2, "streams": 4, "duration": "0.3s",
             "tls": True, "protocol": "h2"},
        ]}))
    mark = uuid.uuid4().hex
    out, page = tmp_path / "out.json", tmp_path / "out.html"
    result = subprocess.run(
        [sys.executable, "-m", "veloxy", "suite", str(suite), "--json", str(out),
         "--html", str(page)], capture_output=True, text=True, timeout=90,
        env=child_env(None, {"VELOXY_TEST_MARK": mark}), cwd=str(SRC.parent))
    assert result.returncode == 0, result.stdout + result.stderr
    cells = {(c["scenario"], c["target"]): c for c in json.loads(out.read_text())["cells"]}
    served = ["veloxy", "nginx"] if shutil.which("nginx") else ["veloxy"]
    for scenario in ("tls-h1", "tls-h2"):
        assert "cleartext" in (cells[(scenario, "direct")]["skipped"] or "")
        for target in served:
            cell = cells[(scenario, target)]
            assert cell["url"].startswith("https://127.0.0.1:"), cell
            assert not cell["skipped"] and cell["errors"] == 0, cell
            assert cell["completed"] > 0 and cell["cpu_us_per_request"] is not None, cell
    if "nginx" not in served:
        assert "nginx is not installed" in cells[("tls-h1", "nginx")]["skipped"]
    html = page.read_text()
    assert "tls-h2" in html and "HTTP/2 x4 streams over TLS" in html
    assert "tls-h1" in html and "HTTP/1.1 over TLS" in html
    assert _marked(mark) == []
