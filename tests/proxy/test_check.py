"""`veloxy check FILE`: exit 0 for a valid config, 2 with the key path of each problem."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.proc import REPO, base_command, child_env

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]

VALID = """\
listen: ["127.0.0.1:0"]
limits: {max_request_line: 8192, max_header_bytes: 65536, max_body_bytes: null,
         header_timeout: 10s, idle_timeout: 60s, shutdown_timeout: 30s}
routes:
  - {match: {host: "api.example.com", path_prefix: "/api/"}, upstream: api, strip_prefix: false}
  - {match: {path_prefix: "/"}, upstream: web}
upstreams:
  api:
    servers: ["http://127.0.0.1:9001"]
    timeouts: {connect: 2s, response_header: 30s, read: 60s}
  web: {servers: ["http://127.0.0.1:9002", "http://127.0.0.1:9003"]}
"""


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "veloxy.yaml"
    path.write_text(text)
    proc = subprocess.run([*base_command(), "check", str(path)], capture_output=True,
                          text=True, timeout=30, env=child_env(None), cwd=REPO)
    return proc.returncode, proc.stdout + proc.stderr


def test_check_valid_config(tmp_path):
    code, out = check(tmp_path, VALID)
    assert code == 0, out


def test_check_invalid_duration_names_key_path(tmp_path):
    code, out = check(tmp_path, VALID.replace("header_timeout: 10s", "header_timeout: banana"))
    assert code == 2, out
    assert "limits.header_timeout" in out, out


def test_check_unknown_upstream_names_route(tmp_path):
    code, out = check(tmp_path, VALID.replace("upstream: web}", "upstream: nowhere}"))
    assert code == 2, out
    assert re.search(r"routes(\[1\]|\.1)\.upstream", out), out


def test_check_reports_every_problem_in_one_pass(tmp_path):
    text = (VALID.replace("header_timeout: 10s", "header_timeout: banana")
                 .replace("max_header_bytes: 65536", "max_header_bytes: lots"))
    code, out = check(tmp_path, text)
    assert code == 2, out
    assert "limits.header_timeout" in out and "limits.max_header_bytes" in out, out


def test_check_unknown_key_is_an_error(tmp_path):
    code, out = check(tmp_path, VALID.replace("idle_timeout: 60s", "idle_timeuot: 60s"))
    assert code == 2, out
    assert "limits.idle_timeuot" in out, out
