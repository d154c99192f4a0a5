"""`veloxy demo` runs end to end with nothing but veloxy, prints its table and the one-line
interpretation, writes its self-contained HTML report and prints where, and leaves no process
behind, also when interrupted."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.proc import SRC, child_env
from veloxy.config import usable_cpus
from veloxy.lab.procs import all_pids, proc_stat_fields

pytestmark = pytest.mark.process

# Per-row seconds for the tests (the real --quick takes 1.5 s per row).
FAST = "0.3"


def _marked(mark: str) -> list[int]:
    """Pids of live processes whose environment carries `mark`."""
    found = []
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        stat = proc_stat_fields(pid)
        if mark.encode() in environ and stat is not None and stat[0] != "Z":
            found.append(pid)
    return found


def _demo_env(mark: str) -> dict[str, str]:
    return child_env(None, {"VELOXY_DEMO_SECONDS": FAST, "VELOXY_TEST_MARK": mark})


def test_demo_quick_prints_the_table_and_cleans_up(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    out = tmp_path / "demo.json"
    html = tmp_path / "report.html"
    result = subprocess.run([sys.executable, "-m", "veloxy", "demo", "--quick", "--json",
                             str(out), "--html", str(html)], capture_output=True, text=True,
                            timeout=60,
                            env=_demo_env(mark), cwd=str(SRC.parent))
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    header = next(line for line in text.splitlines() if "target" in line)
    for column in ("connection", "load", "avg", "p50", "p99", "max", "req/s", "errors",
                   "proxy CPU/req"):
        assert column in header
    assert text.count("direct") >= 3 and text.count("close") >= 2
    assert "veloxy adds" in text and "keep-alive serves" in text
    workers = max(2, usable_cpus())
    assert f"veloxy x{workers} " in text and f"{workers} workers serve" in text
    assert text.rstrip().splitlines()[-1] == f"report: {html.resolve()}"
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert len(rows) == 7
    many = [r for r in rows if r["workers"] == workers]
    assert len(many) == 1 and many[0]["through_proxy"] and many[0]["mode"] == "closed"
    assert many[0]["keep_alive"] and many[0]["proxy_cpu_us_per_request"] is not None
    assert all(r["requests_per_s"] > 0 and r["completed"] > 0 for r in rows)
    assert {r["mode"] for r in rows} == {"closed", "open"}
    fixed = [r for r in rows if r["mode"] == "open"]
    assert fixed[0]["rate"] == fixed[1]["rate"] > 0
    proxied = [r for r in rows if r["through_proxy"]]
    assert all(r["proxy_cpu_us_per_request"] is not None for r in proxied)  # Linux: /proc
    assert all(r["proxy_cpu_us_per_request"] is None for r in rows if not r["through_proxy"])
    assert data["interpretation"].endswith(".")
    page = html.read_text(encoding="utf-8")
    assert "<svg" in page and f"veloxy x{workers} workers" in page
    # Self-contained: no network reference (the SVG namespace is a name, not a fetch).
    assert not re.findall(r"https?://", page.replace('xmlns="http://www.w3.org/2000/svg"', ""))
    assert _marked(mark) == []


def test_demo_ctrl_c_stops_everything() -> None:
    mark = uuid.uuid4().hex
    env = _demo_env(mark)
    env["VELOXY_DEMO_SECONDS"] = "20"
    proc = subprocess.Popen([sys.executable, "-m", "veloxy", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(SRC.parent),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 15
    # Wait until the origin, the proxy and a bench worker are all running.
    while len(_marked(mark)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_marked(mark)) >= 4
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 5
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _marked(mark) == []
