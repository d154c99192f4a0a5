"""`veloxy doctor`: the Linux readings are this machine's real values, every check gives ok,
warn and fail on injected readings, the Windows checks work from injected registry values,
and the JSON shape and exit codes hold."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.proc import SRC, child_env
from veloxy import doctor
from veloxy.doctor import (
    LinuxReader,
    LinuxReadings,
    Plan,
    Report,
    WindowsReader,
    WindowsReadings,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

PROC_SYS = Path("/proc/sys")


def _sys(relative: str) -> str:
    return (PROC_SYS / relative).read_text().strip()


# A healthy machine: every Linux check says ok for the default plan.
GOOD = LinuxReadings(somaxconn=4096, tcp_max_syn_backlog=4096, port_range=(1024, 65535),
                     tcp_tw_reuse=1, tcp_fin_timeout=15, file_max=10_000_000,
                     nr_open=1_048_576, nofile_soft=65536, nofile_hard=65536, usable_cpus=4,
                     cpu_quota=None, loop="uvloop", httptools="0.6.4", fast_lane="on",
                     hpack_lane="on", time_wait=10)
PLAN = Plan(connections=1000, workers=1, upstream_per_server=1000)


# -- this machine -------------------------------------------------------------------------------


def test_linux_reader_reports_what_proc_sys_says() -> None:
    r = LinuxReader().read()
    assert r.somaxconn == int(_sys("net/core/somaxconn"))
    assert r.tcp_max_syn_backlog == int(_sys("net/ipv4/tcp_max_syn_backlog"))
    low, high = _sys("net/ipv4/ip_local_port_range").split()
    assert r.port_range == (int(low), int(high))
    assert r.tcp_tw_reuse == int(_sys("net/ipv4/tcp_tw_reuse"))
    assert r.tcp_fin_timeout == int(_sys("net/ipv4/tcp_fin_timeout"))
    assert r.file_max == int(_sys("fs/file-max"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert (r.nofile_soft, r.nofile_hard) == (soft if soft >= 0 else 2**62,
                                              hard if hard >= 0 else 2**62)
    assert r.time_wait is not None and r.time_wait >= 0
    assert r.httptools is not None


def test_linux_findings_show_the_real_values() -> None:
    report = doctor.diagnose(PLAN, "linux")
    by = {f.check: f for f in report.findings}
    assert by["net.core.somaxconn"].current == _sys("net/core/somaxconn")
    assert by["net.ipv4.tcp_max_syn_backlog"].current == _sys("net/ipv4/tcp_max_syn_backlog")
    low, high = _sys("net/ipv4/ip_local_port_range").split()
    assert by["net.ipv4.ip_local_port_range"].current.startswith(f"{low}-{high}")
    assert by["net.ipv4.tcp_tw_reuse"].current == _sys("net/ipv4/tcp_tw_reuse")
    assert by["net.ipv4.tcp_fin_timeout"].current == _sys("net/ipv4/tcp_fin_timeout") + " s"
    assert by["fs.file-max"].current == _sys("fs/file-max")
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert f"soft {soft}" in by["ulimit -n (RLIMIT_NOFILE)"].current or soft < 0
    assert len(report.findings) == len(doctor.LINUX_CHECKS)
    for f in report.findings:
        assert f.status in ("ok", "warn", "fail")
        assert f.status == "ok" or f.command, f


def test_time_wait_comes_from_sockstat(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/sockstat").write_text("sockets: used 5\nTCP: inuse 3 orphan 0 tw 1234 "
                                           "alloc 4 mem 1\nUDP: inuse 0 mem 0\n")
    assert LinuxReader(tmp_path).time_wait() == 1234
    assert LinuxReader(tmp_path / "missing").time_wait() is None


# -- every Linux check on injected readings ---------------------------------------------------


def test_a_healthy_machine_is_all_ok() -> None:
    findings = doctor.diagnose_linux(GOOD, PLAN)
    assert [f.status for f in findings] == ["ok"] * len(doctor.LINUX_CHECKS), findings
    assert all(f.command is None for f in findings)


CASES = [
    # (check, changed readings, plan changes, expected status)
    ("somaxconn", {"somaxconn": 128}, {}, "warn"),
    ("somaxconn", {"somaxconn": 1024}, {"connections": 500}, "ok"),
    ("syn_backlog", {"tcp_max_syn_backlog": 256}, {}, "warn"),
    ("port_range", {"port_range": (60000, 60999)}, {}, "warn"),
    ("port_range", {"port_range": (60500, 60999)}, {}, "fail"),
    ("port_range", {"port_range": (60000, 60999)}, {"workers": 2}, "warn"),
    ("tw_reuse", {"tcp_tw_reuse": 0}, {}, "warn"),
    ("tw_reuse", {"tcp_tw_reuse": 2}, {}, "warn"),
    ("tw_reuse", {"tcp_tw_reuse": 2}, {"upstream_loopback": True}, "ok"),
    ("fin_timeout", {"tcp_fin_timeout": 60}, {}, "warn"),
    ("file_max", {"file_max": 5000}, {}, "warn"),
    ("file_max", {"file_max": 1000}, {}, "fail"),
    ("nofile", {"nofile_soft": 1024}, {}, "fail"),
    ("nofile", {"nofile_soft": 1024, "nofile_hard": 1024}, {"connections": 400}, "ok"),
    ("max_connections", {"nofile_soft": 1024}, {"max_connections": 480}, "ok"),
    ("max_connections", {"nofile_soft": 1024}, {"max_connections": 3000}, "warn"),
    ("max_connections", {"nofile_soft": 1024}, {"max_connections": 481}, "warn"),
    ("max_connections", {"nofile_soft": 1024}, {}, "ok"),
    ("cpu", {"usable_cpus": 2}, {"workers": 4}, "warn"),
    ("cpu", {"usable_cpus": 1, "cpu_quota": 1.5}, {}, "warn"),
    ("cpu", {"usable_cpus": 2, "cpu_quota": 2.0}, {"workers": 2}, "ok"),
    ("loop", {"loop": "asyncio"}, {}, "warn"),
    ("loop", {"loop": "error: VELOXY_LOOP=uvloop but uvloop is not installed"}, {}, "fail"),
    ("httptools", {"httptools": None}, {}, "fail"),
    ("fast_lane", {"fast_lane": None}, {}, "warn"),
    ("fast_lane", {"fast_lane": "off: VELOXY_PURE_PYTHON is set"}, {}, "warn"),
    ("hpack_lane", {"hpack_lane": None}, {}, "warn"),
    ("hpack_lane", {"hpack_lane": "off: VELOXY_PURE_PYTHON is set"}, {}, "warn"),
    ("time_wait", {"time_wait": 50_000}, {}, "warn"),
    ("time_wait", {"time_wait": None}, {}, "ok"),
    # tuning: the config's backlog and buffer sizes (more in tests/tuning/test_doctor_checks)
    ("backlog", {}, {"backlog": 16}, "warn"),
    ("rmem_max", {"rmem_max": 212992}, {"recv_buffer": 1 << 20}, "warn"),
    ("rmem_max", {"rmem_max": 212992}, {"recv_buffer": 65536}, "ok"),
    ("wmem_max", {"wmem_max": 212992}, {"send_buffer": 1 << 20}, "warn"),
]


@pytest.mark.parametrize(("check", "readings", "plan", "status"), CASES)
def test_linux_check(check: str, readings: dict[str, object], plan: dict[str, object],
                     status: str) -> None:
    func = getattr(doctor, f"check_{check}")
    finding = func(replace(GOOD, **readings), replace(PLAN, **plan))
    assert finding.status == status, finding
    assert func(GOOD, PLAN).status == "ok"
    if status != "ok":
        assert finding.command, finding
        assert finding.why and finding.recommended


def test_sysctl_commands_are_exact() -> None:
    finding = doctor.check_tw_reuse(replace(GOOD, tcp_tw_reuse=0), PLAN)
    assert finding.command is not None
    assert finding.command.startswith('sudo sysctl -w net.ipv4.tcp_tw_reuse="1"')
    assert doctor.PERSIST_FILE in finding.command


def test_every_linux_check_is_covered() -> None:
    covered = {f"check_{c[0]}" for c in CASES}
    assert covered == {c.__name__ for c in doctor.LINUX_CHECKS}


def test_nofile_needs_clients_and_upstreams_per_worker() -> None:
    plan = Plan(connections=10_000, workers=4, upstream_per_server=10_000)
    assert plan.clients_per_worker == 3125  # 10000 / 4 with 25 % for uneven hashing
    assert plan.fds_per_worker == 3125 * 2 + doctor.FD_MARGIN
    assert plan.ports_per_upstream == 10_000  # never more than the clients


def test_max_connections_is_related_to_ulimit_n() -> None:
    """Twice the cap (a client and its upstream connection) plus the margin must fit: the
    finding says how many descriptors, and what cap would fit."""
    finding = doctor.check_max_connections(replace(GOOD, nofile_soft=1024),
                                           replace(PLAN, max_connections=3000))
    assert "4064 descriptors" in finding.current  # 3000 + min(3000, pool 1000) + 64
    assert finding.command is not None and "max_connections: 480" in finding.command
    default = doctor.check_max_connections(replace(GOOD, nofile_soft=1024), PLAN)
    assert "480 per worker" in default.current


# -- Windows, from injected registry values ---------------------------------------------------


def _windows(values: dict[str, int], loop: str = "ProactorEventLoop") -> WindowsReadings:
    readings = WindowsReader(values.get).read()
    return replace(readings, loop=loop, httptools="0.6.4", fast_lane="on", hpack_lane="on")


def test_windows_reader_queries_the_tcpip_values() -> None:
    asked: list[str] = []

    def query(name: str) -> int | None:
        asked.append(name)
        return {"MaxUserPort": 65534, "TcpTimedWaitDelay": 30}.get(name)

    r = WindowsReader(query).read()
    assert set(asked) == {"MaxUserPort", "TcpTimedWaitDelay", "TcpNumConnections"}
    assert (r.max_user_port, r.tcp_timed_wait_delay, r.tcp_num_connections) == (65534, 30,
                                                                                 None)


def test_windows_defaults() -> None:
    findings = {f.check: f for f in doctor.diagnose_windows(_windows({}), PLAN)}
    assert findings["MaxUserPort"].status == "ok"
    assert "not set" in findings["MaxUserPort"].current
    assert findings["TcpTimedWaitDelay"].status == "warn"  # 120 s by default
    assert "reg add" in (findings["TcpTimedWaitDelay"].command or "")
    assert findings["TcpNumConnections"].status == "ok"
    assert findings["event loop (IOCP)"].status == "ok"


def test_windows_tuned_is_all_ok() -> None:
    readings = _windows({"MaxUserPort": 65534, "TcpTimedWaitDelay": 30,
                         "TcpNumConnections": 16777214})
    assert {f.status for f in doctor.diagnose_windows(readings, PLAN)} == {"ok"}


@pytest.mark.parametrize(("values", "plan", "check", "status"), [
    ({"MaxUserPort": 5000}, {"connections": 5000, "upstream_per_server": 5000},
     "MaxUserPort", "fail"),  # the old default: 3977 ports
    ({"MaxUserPort": 2500}, {"connections": 1000}, "MaxUserPort", "warn"),
    ({}, {"connections": 10_000, "upstream_per_server": 10_000}, "MaxUserPort", "warn"),
    ({"TcpTimedWaitDelay": 240}, {}, "TcpTimedWaitDelay", "warn"),
    ({"TcpTimedWaitDelay": 60}, {}, "TcpTimedWaitDelay", "ok"),
    ({"TcpNumConnections": 1500}, {}, "TcpNumConnections", "fail"),
])
def test_windows_check(values: dict[str, int], plan: dict[str, object], check: str,
                       status: str) -> None:
    findings = {f.check: f for f in doctor.diagnose_windows(_windows(values),
                                                             replace(PLAN, **plan))}
    assert findings[check].status == status, findings[check]
    if status != "ok":
        assert findings[check].command


def test_windows_selector_loop_fails_beyond_select_limit() -> None:
    readings = _windows({}, loop="_WindowsSelectorEventLoop")
    finding = doctor.check_windows_loop(readings, PLAN)
    assert finding.status == "fail" and "select()" in finding.why
    small = doctor.check_windows_loop(readings, replace(PLAN, connections=100))
    assert small.status == "warn"


# -- output and exit codes ----------------------------------------------------------------------


def test_json_shape_and_exit_code() -> None:
    report = Report("linux", PLAN, doctor.diagnose_linux(GOOD, PLAN))
    data = report.to_json()
    assert data["format"] == "veloxy-doctor" and data["exit_code"] == 0
    assert data["summary"] == {"ok": len(doctor.LINUX_CHECKS), "warn": 0, "fail": 0}
    assert set(data["plan"]) >= {"connections", "workers", "fds_per_worker",
                                 "ports_per_upstream"}
    for f in data["findings"]:
        assert set(f) == {"check", "status", "current", "recommended", "why", "command"}
    failing = Report("linux", PLAN, doctor.diagnose_linux(replace(GOOD, nofile_soft=256), PLAN))
    assert failing.exit_code == 1 and failing.to_json()["summary"]["fail"] == 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "veloxy", "doctor", *args],
                          capture_output=True, text=True, timeout=30, env=child_env(None, {}),
                          cwd=str(SRC.parent))


@pytest.mark.process
def test_cli_json_and_exit_codes() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    ok = _cli("--json", "--connections", "10")
    data = json.loads(ok.stdout)
    assert ok.returncode == data["exit_code"] == (1 if data["summary"]["fail"] else 0)
    assert data["plan"]["connections"] == 10
    # More connections than this process may open descriptors for: ulimit -n fails.
    too_many = _cli("--json", "--connections", str(max(soft, 1024) * 2))
    data = json.loads(too_many.stdout)
    assert too_many.returncode == 1
    assert any(f["check"].startswith("ulimit -n") and f["status"] == "fail"
               for f in data["findings"])
    assert _cli("--connections", "0").returncode == 2


@pytest.mark.process
def test_cli_reports_the_hpack_lane_as_the_fast_lane() -> None:
    """Both C lanes are built in this checkout: on; VELOXY_PURE_PYTHON turns both off, and
    the text and --json outputs say so, with what to do."""
    if doctor.fast_lane_state() is None or doctor.hpack_lane_state() is None:
        pytest.skip("the C extensions are not built here")
    for pure, state in ((False, "on"), (True, "off: VELOXY_PURE_PYTHON is set")):
        env = child_env(None, {})
        env.pop("VELOXY_PURE_PYTHON", None)
        if pure:
            env["VELOXY_PURE_PYTHON"] = "1"
        result = subprocess.run([sys.executable, "-m", "veloxy", "doctor", "--json"],
                                capture_output=True, text=True, timeout=30, env=env,
                                cwd=str(SRC.parent))
        lanes = {f["check"]: f for f in json.loads(result.stdout)["findings"]
                 if "lane" in f["check"]}
        assert {check: f["current"] for check, f in lanes.items()} == {
            "C fast lane (h1/_fastpath)": state, "C HPACK lane (http2/_hpack)": state}
        hpack = lanes["C HPACK lane (http2/_hpack)"]
        assert hpack["status"] == ("ok" if state == "on" else "warn"), hpack
        assert hpack["command"] == (None if state == "on" else "unset VELOXY_PURE_PYTHON")
        text = subprocess.run([sys.executable, "-m", "veloxy", "doctor"], capture_output=True,
                              text=True, timeout=30, env=env, cwd=str(SRC.parent))
        assert "C HPACK lane (http2/_hpack)" in text.stdout, text.stdout


def test_hpack_lane_not_built_says_how_to_build_it() -> None:
    finding = doctor.check_hpack_lane(replace(GOOD, hpack_lane=None), PLAN)
    assert finding.current == "not built" and finding.command is not None
    assert "install a C compiler" in finding.command
    windows = doctor.check_hpack_lane(replace(_windows({}), hpack_lane=None), PLAN)
    assert windows.command is not None and "Microsoft C++ Build Tools" in windows.command


@pytest.mark.process
def test_cli_text_with_a_config(tmp_path: Path) -> None:
    conf = tmp_path / "veloxy.yaml"
    conf.write_text("routes:\n  - match: {path_prefix: \"/\"}\n    upstream: app\n"
                    "upstreams:\n  app:\n    servers: [\"http://127.0.0.1:9001\"]\n"
                    "    pool: {max_connections: 64}\n")
    result = _cli("--config", str(conf), "--connections", "100")
    assert result.returncode in (0, 1), result.stderr
    assert "net.core.somaxconn" in result.stdout and "ok," in result.stdout
    plan = doctor.plan_from(str(conf), 100, None)
    assert plan.upstream_per_server == 64 and plan.upstream_loopback
