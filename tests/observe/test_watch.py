"""`veloxy serve --watch`: the proxy follows its config file, including the way Kubernetes
updates a mounted ConfigMap (the `..data` symlink swapped atomically onto a new directory),
under load, without a failed request; an invalid new file changes nothing and is logged with
its key paths."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from tests.observe.test_reload import Load
from tests.support.backends import ok_script
from tests.support.client import get
from tests.support.config import prefix_routes, proxy_config, write_config
from tests.support.proc import VeloxyProcess

pytestmark = [pytest.mark.timeout(60), pytest.mark.process]

#: The issue's bound: the new route serves this soon after the swap.
FOLLOW_WITHIN_S = 2.0


class ConfigMapVolume:
    """A directory laid out as the kubelet lays out a ConfigMap volume, updated as it does
    (pkg/volume/util/atomic_writer.go): the files go into a new timestamped directory, a
    `..data_tmp` symlink to it is renamed over `..data`, the old directory is removed. The
    visible `veloxy.yaml` is a symlink to `..data/veloxy.yaml` and never changes itself."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.root / "veloxy.yaml"

    def publish(self, config: dict) -> None:
        self.generation += 1
        new = self.root / f"..2026_12_07_00_00_0{self.generation}.000000001"
        new.mkdir()
        write_config(new / "veloxy.yaml", config)
        data = self.root / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(new.name, tmp)
        os.rename(tmp, data)  # the atomic swap
        if not self.path.is_symlink():
            os.symlink("..data/veloxy.yaml", self.path)
        if old is not None:
            for f in (self.root / old).iterdir():
                f.unlink()
            (self.root / old).rmdir()


def body(port: int, path: str) -> bytes:
    resp = get(port, path, timeout=5)
    assert resp.status == 200, resp
    return resp.body


def wait_until_all(port: int, path: str, expected: bytes, timeout: float, in_a_row: int = 20
                   ) -> float:
    """Seconds until `in_a_row` requests in a row, each on a fresh connection (so both
    workers answer some), returned `expected`; fails after `timeout`."""
    start = time.monotonic()
    streak = 0
    while streak < in_a_row:
        streak = streak + 1 if body(port, path) == expected else 0
        assert time.monotonic() - start < timeout + 5, f"{path} never settled on {expected!r}"
    return time.monotonic() - start


def wait_for_line(proc: VeloxyProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.stderr:
        assert time.monotonic() < deadline, f"no {text!r} in the log\n{proc.describe()}"
        time.sleep(0.05)


def test_configmap_swap_under_load(make_backend, tmp_path: Path) -> None:
    a = make_backend(ok_script(b"A"), name="a")
    b = make_backend(ok_script(b"B"), name="b")
    volume = ConfigMapVolume(tmp_path / "configmap")
    before = proxy_config({"a": a, "b": b}, routes=prefix_routes({"/": "a"}))
    after = proxy_config({"a": a, "b": b}, routes=prefix_routes({"/new/": "b", "/": "a"}))
    volume.publish(before)
    proxy = VeloxyProcess(["serve", "--config", str(volume.path), "--watch", "--workers", "2"],
                          "uvloop").wait_ready()
    try:
        with Load(proxy.port) as load:
            load.wait_more(50)
            assert body(proxy.port, "/new/x") == b"A"
            volume.publish(after)
            took = wait_until_all(proxy.port, "/new/x", b"B", FOLLOW_WITHIN_S)
            load.wait_more(50)

            # An invalid file (a route to an unknown group): refused, named, nothing changes.
            broken = {**after, "routes": prefix_routes({"/new/": "nope", "/": "a"})}
            volume.publish(broken)
            wait_for_line(proxy, 'routes.0.upstream: unknown upstream "nope"', 5.0)
            assert "config reload refused" in proxy.stderr
            assert all(body(proxy.port, "/new/x") == b"B" for _ in range(10))
            load.wait_more(50)

            # The next good file is followed again.
            volume.publish(before)
            wait_until_all(proxy.port, "/new/x", b"A", FOLLOW_WITHIN_S)
            load.wait_more(50)
    finally:
        proxy.stop()
    failures = [(t, o) for t, o, _ in load.results if o != 200]
    assert not failures, f"{len(failures)} of {len(load.results)} requests failed: {failures[:5]}"
    assert {b for _, _, b in load.results} == {b"A"}  # /load/ always went to a
    assert took < FOLLOW_WITHIN_S, f"the new route served {took:.2f}s after the swap"
    assert proxy.stderr.count("changed; reloading") == 3


def test_plain_file_edits_and_touch(make_backend, tmp_path: Path) -> None:
    """One process, a plain file written in place: an edit reloads, a touch that changes
    nothing does not, and a file that disappears keeps the running config."""
    a = make_backend(ok_script(b"A"), name="a")
    b = make_backend(ok_script(b"B"), name="b")
    path = write_config(tmp_path / "veloxy.yaml", proxy_config({"a": a, "b": b}))
    proxy = VeloxyProcess(["serve", "--config", str(path), "--watch"], "uvloop").wait_ready()
    try:
        assert body(proxy.port, "/") == b"A"
        config = yaml.safe_load(path.read_text())
        config["routes"][0]["upstream"] = "b"
        edited = yaml.safe_dump(config)
        path.write_text(edited)
        wait_until_all(proxy.port, "/", b"B", FOLLOW_WITHIN_S, in_a_row=3)
        os.utime(path)  # same bytes, new mtime: no reload
        path.unlink()
        time.sleep(1.0)
        assert body(proxy.port, "/") == b"B"
        wait_for_line(proxy, "is gone; keeping the running config", 2.0)
        path.write_text(edited)  # back, the same bytes: nothing to do
        time.sleep(1.0)
        assert proxy.stderr.count("config reloaded") == 1
        assert proxy.stderr.count("changed; reloading") == 1
    finally:
        proxy.stop()


def test_watch_needs_a_config_file() -> None:
    proc = VeloxyProcess(["serve", "--listen", "127.0.0.1:0", "--upstream",
                          "http://127.0.0.1:9", "--watch"], "uvloop")
    assert proc.wait(10) == 2
    assert "--watch: needs --config FILE" in proc.stderr
