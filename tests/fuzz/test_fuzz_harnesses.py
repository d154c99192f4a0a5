"""The fuzzing harnesses (fuzz/, docs/fuzzing.md) run for a bounded time in CI.

Each harness runs as its own process (libFuzzer owns the process: it exits on the first
finding) for VELOXY_FUZZ_SECONDS each (default: 40 s for HTTP/1.1, the differential one
against the C fast lane, 20 s for HTTP/2 and 15 s for the C HPACK lane against hpack:
about 75 s in all), starting from the seed
corpus in fuzz/corpus and writing what it learns to a temporary directory. A finding
fails the test with the harness's report (its traceback names the difference) and the
input that caused it; make that input a regression test (tests/h1/test_fastpath.py,
tests/fuzz/test_findings.py) and fix the cause.

Uses the plain build of the extension: libFuzzer is guided by the coverage of the Python
code (instrumented by atheris) and sees the C lane's behaviour only through the
differences; fuzz/build_sanitized.sh makes the build for long campaigns with ASan/UBSan.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.proc import REPO, child_env

pytestmark = [pytest.mark.process, pytest.mark.slow, pytest.mark.timeout(180)]

FUZZ = REPO / "fuzz"


def _seconds(default: int) -> int:
    return int(os.environ.get("VELOXY_FUZZ_SECONDS", default))


def _run(harness: str, corpus: str, seconds: int, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install -e '.[test]' on CPython 3.11-3.13)")
    work = tmp_path / "corpus"
    work.mkdir()
    argv = [sys.executable, str(FUZZ / harness), str(work), str(FUZZ / "corpus" / corpus),
            f"-max_total_time={seconds}", f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1", "-max_len=8192", "-timeout=10", "-rss_limit_mb=2048"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120,
                          env=child_env(None), cwd=REPO)
    findings = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-",
                                                                              "timeout-",
                                                                              "oom-")))
    assert done.returncode == 0 and not findings, (
        f"{harness} found {findings} (in {tmp_path}); its report:\n" + done.stderr[-6000:])
    runs = [line for line in done.stderr.splitlines() if "stat::number_of_executed_units" in line]
    assert runs and int(runs[0].split(":")[-1]) > 100, done.stderr[-3000:]


def test_h1_differential_harness_finds_no_difference(tmp_path: Path) -> None:
    _run("h1_differential.py", "h1", _seconds(40), tmp_path)


def test_h2_server_harness_finds_nothing(tmp_path: Path) -> None:
    _run("h2_server.py", "h2", _seconds(20), tmp_path)


def test_hpack_differential_harness_finds_no_difference(tmp_path: Path) -> None:
    from veloxy.http2.hpack_lane import _hpack

    if _hpack is None:
        pytest.skip("the C HPACK lane (http2/_hpack.c) is not built")
    _run("hpack_differential.py", "hpack", _seconds(15), tmp_path)
