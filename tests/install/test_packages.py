"""The packages a user installs: `python -m build` makes an sdist that carries the C fast
lane's source and a wheel that carries it compiled; each installs into a fresh virtualenv
and gives a `veloxy` command that proxies a request. The sdist installs where no C compiler
works (CC=false) too, without the fast lane, and `veloxy doctor` says so and how to get it.

Dependencies come from pip's configured index and its cache (fast after the first run);
built once per session (~10 s), each install ~10 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.backends import BackendStarter, ok_script
from tests.support.client import get

pytestmark = [pytest.mark.process, pytest.mark.slow]

BIN = "Scripts" if sys.platform == "win32" else "bin"


def run(argv: list[str | Path], env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH dropped: the installed package must be what runs, not the checkout's src/.
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in argv], env=clean | (env or {}), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) built once, the wheel from the sdist as `python -m build` does."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO])
    (sdist,) = out.glob("veloxy-*.tar.gz")
    (wheel,) = out.glob("veloxy-*.whl")
    return sdist, wheel


def fresh_venv(where: Path) -> Path:
    run([sys.executable, "-m", "venv", where])
    return where / BIN / "python"


@pytest.fixture
def backends() -> Iterator[BackendStarter]:
    starter = BackendStarter()
    yield starter
    starter.close()


def proxies_a_request(venv_python: Path, backends: BackendStarter) -> None:
    """The installed `veloxy` command serves one proxied GET."""
    veloxy = venv_python.parent / "veloxy"
    assert run([veloxy, "--version"]).stdout.startswith("veloxy ")
    where = run([venv_python, "-c", "import veloxy; print(veloxy.__file__)"]).stdout
    assert Path(where).is_relative_to(venv_python.parents[1]), where
    backend = backends(ok_script(b"through the installed veloxy"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([veloxy, "serve", "--listen", "127.0.0.1:0", "--workers", "1",
                             "--upstream", backend.url], stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        else:
            pytest.fail("veloxy serve exited before listening")
        answer = get(port, "/installed")
        assert answer.status == 200 and answer.body == b"through the installed veloxy"
    finally:
        proc.terminate()
        proc.wait(10)


def fast_lane(venv_python: Path) -> object:
    probe = ("import json, importlib.util; "
             "print(json.dumps(importlib.util.find_spec('veloxy.h1._fastpath') is not None))")
    return json.loads(run([venv_python, "-c", probe]).stdout)


def test_the_sdist_carries_the_c_source_and_the_wheel_the_compiled_fast_lane(
        dist: tuple[Path, Path]) -> None:
    sdist, wheel = dist
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("src/veloxy/h1/_fastpath.c") for n in names), names
    assert any(n.endswith("/setup.py") for n in names)
    assert not any(n.endswith((".so", ".pyd")) for n in names)
    with zipfile.ZipFile(wheel) as whl:
        inside = whl.namelist()
        metadata = whl.read(next(n for n in inside if n.endswith(".dist-info/METADATA")))
    assert any(n.startswith("veloxy/h1/_fastpath.") and n.endswith((".so", ".pyd"))
               for n in inside), inside
    assert b"License-Expression: Apache-2.0" in metadata


def test_the_wheel_installs_into_a_fresh_venv_and_proxies(
        dist: tuple[Path, Path], tmp_path: Path, backends: BackendStarter) -> None:
    python = fresh_venv(tmp_path / "venv")
    run([python, "-m", "pip", "install", "--quiet", dist[1]])
    assert fast_lane(python) is True
    proxies_a_request(python, backends)


def test_the_sdist_installs_without_a_compiler_and_doctor_says_how_to_get_the_fast_lane(
        dist: tuple[Path, Path], tmp_path: Path, backends: BackendStarter) -> None:
    python = fresh_venv(tmp_path / "venv")
    # CC=false: every compile fails; --no-cache-dir: no wheel built earlier with a compiler.
    run([python, "-m", "pip", "install", "--quiet", "--no-cache-dir", dist[0]],
        env={"CC": "false"})
    assert fast_lane(python) is False
    proxies_a_request(python, backends)
    # Not run(): doctor exits 1 when any other check fails on the machine at hand.
    doctor = subprocess.run([python.parent / "veloxy", "doctor", "--json"], capture_output=True,
                            text=True, timeout=60)
    (finding,) = [f for f in json.loads(doctor.stdout)["findings"]
                  if f["check"].startswith("C fast lane")]
    assert finding["status"] == "warn" and finding["current"] == "not built", finding
    assert "install a C compiler" in finding["command"], finding
