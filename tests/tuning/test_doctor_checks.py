"""`veloxy doctor` on the `tuning:` settings: the backlog asked for, buffer sizes against
net.core.rmem_max / wmem_max. Pure checks on injected readings, plus the plan read from a
real config file and the real /proc of this machine."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from veloxy import doctor
from veloxy.doctor import LinuxReader, LinuxReadings, Plan, plan_from, run_doctor

READINGS = LinuxReadings(somaxconn=4096, rmem_max=212992, wmem_max=212992)
PLAN = Plan(connections=1000)


def _config(tmp_path: Path, tuning: dict) -> str:
    path = tmp_path / "veloxy.yaml"
    path.write_text(yaml.safe_dump({
        "routes": [{"upstream": "o"}],
        "upstreams": {"o": {"servers": ["http://127.0.0.1:9"]}}, "tuning": tuning}))
    return str(path)


def test_plan_reads_backlog_and_largest_buffers(tmp_path: Path) -> None:
    plan = plan_from(_config(tmp_path, {
        "backlog": 512, "downstream": {"recv_buffer": "64k", "send_buffer": "1m"},
        "upstream": {"recv_buffer": "256k"}}), 1000, None)
    assert (plan.backlog, plan.recv_buffer, plan.send_buffer) == (512, 262144, 1048576)
    plain = plan_from(_config(tmp_path, {}), 1000, None)
    assert (plain.backlog, plain.recv_buffer, plain.send_buffer) == (4096, None, None)


def test_buffer_above_the_kernel_cap_warns_with_the_sysctl() -> None:
    plan = replace(PLAN, recv_buffer=1 << 20)
    finding = doctor.check_rmem_max(READINGS, plan)
    assert finding.status == "warn"
    assert finding.current == "212992" and finding.recommended == ">= 1048576"
    assert finding.command is not None and "net.core.rmem_max=\"1048576\"" in finding.command
    assert doctor.check_wmem_max(READINGS, plan).status == "ok"  # no send_buffer set
    assert doctor.check_rmem_max(READINGS, replace(PLAN, recv_buffer=200_000)).status == "ok"
    assert doctor.check_wmem_max(READINGS, replace(PLAN, send_buffer=300_000)).status == "warn"
    unknown = doctor.check_rmem_max(replace(READINGS, rmem_max=None), plan)
    assert unknown.status == "warn" and unknown.current == "unknown"


def test_no_buffer_configured_is_ok_whatever_the_cap() -> None:
    finding = doctor.check_rmem_max(replace(READINGS, rmem_max=4096), PLAN)
    assert finding.status == "ok" and finding.command is None
    assert "autotunes" in finding.why


def test_backlog_checks_follow_the_config() -> None:
    small = replace(PLAN, backlog=16)
    finding = doctor.check_backlog(READINGS, small)
    assert finding.status == "warn" and finding.current == "16"
    assert finding.command is not None and "backlog: 4096" in finding.command
    assert doctor.check_backlog(READINGS, PLAN).status == "ok"
    assert doctor.check_backlog(READINGS, replace(PLAN, connections=10, backlog=16)).status \
        == "ok"
    # somaxconn is judged against the backlog actually asked for.
    big = replace(PLAN, backlog=8192, connections=10_000)
    some = doctor.check_somaxconn(READINGS, big)
    assert some.status == "warn" and "8192" in (some.command or "")
    assert doctor.check_somaxconn(replace(READINGS, somaxconn=512), replace(
        PLAN, backlog=512)).status == "ok"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/sys")
def test_this_machine_reports_its_caps_against_the_config(tmp_path: Path, capsys) -> None:
    rmem = int(Path("/proc/sys/net/core/rmem_max").read_text())
    assert LinuxReader().read().rmem_max == rmem
    code = run_doctor(_config(tmp_path, {"downstream": {"recv_buffer": rmem + 4096}}),
                      100, "1", True)
    data = json.loads(capsys.readouterr().out)
    by = {f["check"]: f for f in data["findings"]}
    assert by["net.core.rmem_max"]["status"] == "warn"
    assert by["net.core.rmem_max"]["current"] == str(rmem)
    assert by["net.core.wmem_max"]["status"] == "ok"
    assert by["tuning.backlog"]["status"] == "ok"
    assert code in (0, 1)  # 1 only if some other check of this machine fails
