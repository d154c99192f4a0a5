"""`tuning:` in a real `veloxy serve` process: GC settings and the listeners' options.

The observables are the process's own: the start-up log line that `server.apply_gc` writes
from gc.get_threshold() and gc.get_freeze_count() after applying the settings (one line per
process: the supervisor before it forks, then each worker), and what `ss` reports for the
listening sockets each worker made (backlog = Send-Q, receive buffer = skmem rb).
"""

from __future__ import annotations

import gc
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.proc import VeloxyProcess
from veloxy.config.model import GcSettings
from veloxy.serving import apply_gc

LINUX = sys.platform.startswith("linux")
GC_LINE = re.compile(r"veloxy\[(\d+)\] INFO veloxy: gc: thresholds \((\d+), (\d+), (\d+)\), "
                     r"(\d+) objects frozen")


def _config(tmp_path: Path, **extra: object) -> str:
    data = {"routes": [{"upstream": "o"}],
            "upstreams": {"o": {"servers": ["http://127.0.0.1:9"]}}, **extra}
    path = tmp_path / "veloxy.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _listeners(port: int) -> list[tuple[int, int]]:
    """(backlog, receive buffer) of each listening socket on `port`, from `ss -ltnm`."""
    out = subprocess.run(["ss", "-ltnmH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    queues = [int(line.split()[2]) for line in out.splitlines() if "LISTEN" in line]
    buffers = [int(m) for m in re.findall(r"\brb(\d+)", out)]
    return list(zip(queues, buffers, strict=True))


def _serve(tmp_path: Path, **extra: object) -> VeloxyProcess:
    proc = VeloxyProcess(["serve", "--config", _config(tmp_path, **extra),
                          "--listen", "127.0.0.1:0"], loop=None)
    return proc.wait_ready()


def test_apply_gc_sets_threshold_and_freezes_in_process() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    try:
        apply_gc(GcSettings(gen0_threshold=None))  # null: CPython's threshold stays
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == frozen_before
        apply_gc(GcSettings())  # the default: a young generation of 50000, nothing frozen
        assert gc.get_threshold() == (50000, before[1], before[2])
        assert gc.get_freeze_count() == frozen_before
        apply_gc(GcSettings(gen0_threshold=12345))
        assert gc.get_threshold() == (12345, before[1], before[2])
        assert gc.get_freeze_count() == frozen_before
        apply_gc(GcSettings(freeze_after_start=True))
        assert gc.get_freeze_count() > max(frozen_before, 1000)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.process
@pytest.mark.skipif(not LINUX or shutil.which("ss") is None, reason="needs Linux ss")
def test_workers_get_gc_backlog_and_buffer(tmp_path: Path) -> None:
    proc = _serve(tmp_path, workers=2, tuning={
        "backlog": 55, "downstream": {"recv_buffer": "48k"},
        "gc": {"freeze_after_start": True, "gen0_threshold": 43210}})
    try:
        port = proc.port
        assert _listeners(port) == [(55, 2 * 48 * 1024)] * 2  # one socket per worker
        lines = [m for m in map(GC_LINE.search, proc.stderr.splitlines()) if m]
        pids = {m.group(1) for m in lines}
        assert len(pids) == 3, proc.stderr  # the supervisor, then each worker after the fork
        for m in lines:
            assert m.group(2) == "43210"
            assert int(m.group(5)) > 1000  # the modules, config and app, at least
    finally:
        proc.stop()


@pytest.mark.process
@pytest.mark.skipif(not LINUX or shutil.which("ss") is None, reason="needs Linux ss")
def test_defaults_leave_the_listener_and_only_raise_gen0(tmp_path: Path) -> None:
    proc = _serve(tmp_path)
    try:
        port = proc.port
        (backlog, rcvbuf), = _listeners(port)
        assert backlog == 4096
        assert rcvbuf != 2 * 48 * 1024
        lines = [m for m in map(GC_LINE.search, proc.stderr.splitlines()) if m]
        assert lines, proc.stderr
        assert {(m.group(2), m.group(5)) for m in lines} == {("50000", "0")}  # nothing frozen
    finally:
        proc.stop()


def test_suite_gc_shorthand_becomes_the_tuning_gc_setting(tmp_path: Path) -> None:
    from veloxy.config import load_config
    from veloxy.lab.runner import target_config, write_config
    from veloxy.lab.suite import parse_suite

    suite = parse_suite({"targets": [
        {"name": "plain", "kind": "veloxy"},
        {"name": "gc", "kind": "veloxy", "gc": {"freeze": True, "gen0": 50000},
         "config": {"tuning": {"backlog": 99}}}],
        "scenarios": [{"name": "s"}]})
    plain, tuned = suite.targets
    assert target_config(plain) is None
    data = target_config(tuned)
    assert data == {"tuning": {"backlog": 99, "gc": {"freeze_after_start": True,
                                                     "gen0_threshold": 50000}}}
    assert tuned.config == {"tuning": {"backlog": 99}}  # the spec is not changed
    path = tmp_path / "gc.yaml"
    write_config(path, data, "http://127.0.0.1:9001")
    tuning = load_config(path).tuning
    assert (tuning.backlog, tuning.gc.freeze_after_start, tuning.gc.gen0_threshold) == (
        99, True, 50000)


_MMAP_PROBE = r"""
import ctypes, ctypes.util, sys
from veloxy.serving import apply_malloc

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def mmapped(size):
    p = libc.malloc(size)
    n = libc.mallinfo2().hblks
    libc.free(p)
    return n

libc.free(libc.malloc(4 << 20))  # freeing a 4 MiB mmapped block raises glibc's threshold
if sys.argv[1] != "none":
    apply_malloc(int(sys.argv[1]))
base = libc.mallinfo2().hblks
print(mmapped(512 * 1024) - base)
"""


@pytest.mark.process
@pytest.mark.skipif(not LINUX or sys.platform != "linux", reason="glibc's mallopt")
@pytest.mark.parametrize(("setting", "expected"), [("none", "0"), ("131072", "1")])
def test_malloc_mmap_threshold_keeps_large_blocks_mmapped(setting: str, expected: str) -> None:
    """Without the setting glibc serves a 512 KiB block from the heap once a larger block
    has been freed (its threshold rose); with tuning.malloc_mmap_threshold 128k the block
    is mmapped (and so returned to the system when freed)."""
    import ctypes.util

    libc = ctypes.util.find_library("c")
    if libc is None or not hasattr(ctypes.CDLL(libc), "mallinfo2"):
        pytest.skip("not glibc 2.33+ (no mallinfo2)")
    out = subprocess.run([sys.executable, "-c", _MMAP_PROBE, setting], capture_output=True,
                         text=True, timeout=30, cwd=str(Path(__file__).parents[2]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


@pytest.mark.process
def test_serve_applies_malloc_mmap_threshold(tmp_path: Path) -> None:
    proc = _serve(tmp_path, tuning={"malloc_mmap_threshold": "128k"})
    try:
        assert "malloc: mmap threshold 131072 bytes" in proc.stderr, proc.stderr
    finally:
        proc.stop()
