"""The GC launcher applies its settings, then runs the veloxy command line unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.proc import SRC, child_env

PROBE = """
import gc, sys
from veloxy.lab.launch import main
code = main(sys.argv[1:])
print(code, gc.get_threshold()[0], gc.get_freeze_count() > 1000)
"""


def _probe(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         timeout=30, env=child_env(None, {}), cwd=str(SRC.parent), check=True)
    return out.stdout.split()


def test_freeze_and_gen0_then_the_command(tmp_path: Path) -> None:
    conf = tmp_path / "v.yaml"
    conf.write_text("upstreams: {o: {servers: ['http://127.0.0.1:9']}}\n"
                    "routes: [{match: {path_prefix: /}, upstream: o}]\n")
    words = _probe("--gc-freeze", "--gc-gen0", "12345", "--", "check", str(conf))
    assert words[-3:] == ["0", "12345", "True"], words
    assert "ok" in " ".join(words)  # `veloxy check` ran and printed its line


def test_defaults_untouched_without_flags(tmp_path: Path) -> None:
    conf = tmp_path / "v.yaml"
    conf.write_text("upstreams: {o: {servers: ['http://127.0.0.1:9']}}\n"
                    "routes: [{match: {path_prefix: /}, upstream: o}]\n")
    words = _probe("check", str(conf))
    assert words[-3:] == ["0", "700", "False"], words
