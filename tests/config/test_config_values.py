"""The shared value parsers (durations, sizes, addresses, URLs) and `workers: auto`.

Why separate: `veloxy bench -d 10s` and the origin's `?size=16k` use the same functions as the
config file, so their edge cases are pinned here once, with the exact ValueError text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from veloxy.config import format_duration, parse_duration, parse_size, resolve_workers
from veloxy.config.cpus import cgroup_cpu_limit, usable_cpus
from veloxy.config.values import parse_bind_address, parse_route_host, parse_upstream_url


@pytest.mark.parametrize(("value", "seconds"), [
    ("250ms", 0.25), ("2s", 2.0), ("1.5s", 1.5), ("1m", 60.0), ("1h", 3600.0),
    ("1m30s", 90.0), ("1h2m3s", 3723.0), (" 2S ", 2.0), ("10", 10.0), ("0.5", 0.5),
    (".5s", 0.5), ("0", 0.0), (0, 0.0), (3, 3.0), (0.25, 0.25), ("0ms", 0.0),
])
def test_parse_duration(value: object, seconds: float) -> None:
    result = parse_duration(value)
    assert result == seconds
    assert type(result) is float


@pytest.mark.parametrize(("value", "message"), [
    ("fast", 'expected a duration like "2s", got "fast"'),
    ("", 'expected a duration like "2s", got ""'),
    ("2 s", 'expected a duration like "2s", got "2 s"'),
    ("2sec", 'expected a duration like "2s", got "2sec"'),
    ("s", 'expected a duration like "2s", got "s"'),
    ("1d", 'expected a duration like "2s", got "1d"'),
    ("1e3s", 'expected a duration like "2s", got "1e3s"'),
    ("-1s", 'expected a duration >= 0, got "-1s"'),
    (-1, "expected a duration >= 0, got -1"),
    (-0.5, "expected a duration >= 0, got -0.5"),
    (True, 'expected a duration like "2s", got true'),
    (None, 'expected a duration like "2s", got null'),
    (float("inf"), 'expected a duration like "2s", got inf'),
    (float("nan"), 'expected a duration like "2s", got nan'),
    ("nan", 'expected a duration like "2s", got "nan"'),
    ({"s": 1}, 'expected a duration like "2s", got a mapping'),
])
def test_parse_duration_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.25, "250ms"), (0.001, "1ms"), (1.0, "1s"), (1.5, "1.5s"), (60.0, "1m"),
    (90.0, "90s"), (300.0, "5m"), (3600.0, "1h"), (7200.0, "2h"), (0.0005, "0.0005s"),
    (1.25, "1.25s"), (0.1234567, "0.1234567s"),
])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("value", "size"), [
    ("16k", 16384), ("1m", 1048576), ("100", 100), ("1kb", 1024), ("1KiB", 1024),
    ("1K", 1024), ("2g", 2 * 1024**3), ("1.5k", 1536), ("0", 0), (0, 0), (65536, 65536),
    ("100b", 100), (" 4 k ", 4096),
])
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(("value", "message"), [
    ("big", 'expected a size like "16k", got "big"'),
    ("16x", 'expected a size like "16k", got "16x"'),
    ("-1", 'expected a size like "16k", got "-1"'),
    (-1, "expected a size >= 0, got -1"),
    (True, 'expected a size like "16k", got true'),
    (1.5, 'expected a size like "16k", got 1.5'),
    ("0.5", 'expected a whole number of bytes, got "0.5"'),
])
def test_parse_size_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value) == message


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), (":8080", ("0.0.0.0", 8080)),
    ("[::1]:8080", ("::1", 8080)), ("[::]:0", ("::", 0)), ("LOCALHOST:1", ("localhost", 1)),
    ("[0:0:0:0:0:0:0:1]:80", ("::1", 80)), ("example.com.:80", ("example.com", 80)),
])
def test_parse_bind_address(text: str, address: tuple[str, int]) -> None:
    assert parse_bind_address(text) == address


@pytest.mark.parametrize("text", ["abc", "8080", "", ":", "host:", "a b:80", "[::1]", "[zz]:80",
                                  "1.2.3.4.5:80", "-a:80"])
def test_parse_bind_address_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expected"):
        parse_bind_address(text)


@pytest.mark.parametrize(("text", "host"), [
    ("Api.Example.COM", "api.example.com"), ("*.example.com", "*.example.com"),
    ("localhost", "localhost"), ("a.b.", "a.b"),
])
def test_parse_route_host(text: str, host: str) -> None:
    assert parse_route_host(text) == host


def test_parse_upstream_url() -> None:
    assert parse_upstream_url("http://A.b:8080/") == ("http://a.b:8080", "a.b", 8080)
    assert parse_upstream_url("HTTP://a") == ("http://a", "a", 80)
    assert parse_upstream_url("http://[::1]") == ("http://[::1]", "::1", 80)


# --- workers: auto -------------------------------------------------------------------------


def test_resolve_workers_numbers() -> None:
    assert resolve_workers(1) == 1
    assert resolve_workers(12) == 12
    assert resolve_workers("3") == 3


def test_resolve_workers_auto_is_usable_cpus() -> None:
    assert resolve_workers("auto") == usable_cpus() >= 1
    assert resolve_workers("AUTO") == usable_cpus()


@pytest.mark.parametrize("value", [0, -1, True, "x", None, 1.5, "0"])
def test_resolve_workers_errors(value: object) -> None:
    with pytest.raises(ValueError, match=r'^expected a number of workers >= 1 or "auto", got '):
        resolve_workers(value)


def fake_proc(tmp_path: Path, mountinfo: str, cgroup: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(mountinfo.replace("ROOT", str(tmp_path)))
    (proc / "cgroup").write_text(cgroup)
    return proc


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


V2_MOUNT = "30 23 0:26 / ROOT/cg rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, V2_MOUNT, "0::/app.slice/veloxy.service\n")
    write(tmp_path / "cg/app.slice/veloxy.service/cpu.max", "150000 100000\n")
    write(tmp_path / "cg/app.slice/cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(proc) == 1.5
    assert usable_cpus(proc) == 1  # 1.5 CPUs rounds down: never run more than the quota


def test_cgroup_v2_parent_limit_is_tighter(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, V2_MOUNT, "0::/a/b\n")
    write(tmp_path / "cg/a/b/cpu.max", "800000 100000\n")
    write(tmp_path / "cg/a/cpu.max", "200000 100000\n")
    assert cgroup_cpu_limit(proc) == 2.0


def test_cgroup_v2_namespace_sees_itself_as_root(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, V2_MOUNT, "0::/\n")
    write(tmp_path / "cg/cpu.max", "50000 100000\n")
    assert cgroup_cpu_limit(proc) == 0.5
    assert usable_cpus(proc) == 1  # never fewer than one


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, V2_MOUNT, "0::/x\n")
    write(tmp_path / "cg/x/cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(proc) is None


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    mountinfo = ("32 31 0:29 / ROOT/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
                 "35 31 0:32 / ROOT/memory rw,relatime - cgroup cgroup rw,memory\n")
    proc = fake_proc(tmp_path, mountinfo, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n")
    write(tmp_path / "cpu/docker/abc/cpu.cfs_quota_us", "300000\n")
    write(tmp_path / "cpu/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(proc) == 3.0


def test_cgroup_v1_bind_mounted_subtree(tmp_path: Path) -> None:
    # Inside a container: the mount's root is the container's own cgroup.
    mountinfo = "32 31 0:29 /docker/abc ROOT/cpu ro - cgroup cgroup rw,cpu\n"
    proc = fake_proc(tmp_path, mountinfo, "2:cpu:/docker/abc\n")
    write(tmp_path / "cpu/cpu.cfs_quota_us", "200000\n")
    write(tmp_path / "cpu/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(proc) == 2.0


def test_cgroup_v1_no_quota(tmp_path: Path) -> None:
    mountinfo = "32 31 0:29 / ROOT/cpu rw - cgroup cgroup rw,cpu\n"
    proc = fake_proc(tmp_path, mountinfo, "2:cpu:/\n")
    write(tmp_path / "cpu/cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "cpu/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(proc) is None


def test_no_cgroup_information(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "missing") is None
    assert usable_cpus(tmp_path / "missing") >= 1
