"""scripts/venv.sh, the part of scripts/demo and scripts/test that picks the Python veloxy
is installed into: a project virtualenv (.venv) made with a distribution's Python (PEP 668
refuses `pip install` outside one), an active virtualenv or PYTHON=... honoured, and a
message naming the package to install where the venv module is missing (Debian's
python3-venv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.process,
              pytest.mark.skipif(sys.platform == "win32", reason="bash scripts (Windows: "
                                 "scripts/*.ps1)")]


def pick(env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Sources scripts/venv.sh in `cwd` and prints the Python it picks."""
    clean = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHON")}
    return subprocess.run(
        ["bash", "-c", f'. "{REPO}/scripts/venv.sh"; veloxy_pick_python; echo "PY=$PY"'],
        cwd=cwd, env=clean | env, capture_output=True, text=True, timeout=120)


def base_python() -> str:
    """The installation this test's virtualenv was made from (not a virtualenv itself)."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}")


def test_an_active_virtualenv_is_used_as_it_is(tmp_path: Path) -> None:
    done = pick({"VIRTUAL_ENV": sys.prefix}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"PY={sys.prefix}/bin/python"
    assert not (tmp_path / ".venv").exists()


def test_python_pointing_into_a_virtualenv_is_used_as_it_is(tmp_path: Path) -> None:
    done = pick({"PYTHON": sys.executable, "VIRTUAL_ENV": "/nonexistent"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"PY={sys.executable}"
    assert not (tmp_path / ".venv").exists()


def test_a_python_without_ensurepip_gets_told_what_to_install(tmp_path: Path) -> None:
    # Debian's python3 without python3-venv: `venv` imports, `ensurepip` does not.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "ensurepip.py").write_text("raise ImportError('Debian moved me to python3-venv')\n")
    done = pick({"PYTHON": base_python(), "PYTHONPATH": str(shadow)}, cwd=tmp_path)
    assert done.returncode == 1
    assert "lacks the ensurepip module" in done.stderr
    assert "sudo apt install python3-venv" in done.stderr
    assert f"python{sys.version_info[0]}.{sys.version_info[1]}-venv" in done.stderr
    assert not (tmp_path / ".venv").exists()


def test_an_old_python_is_refused_with_a_way_out(tmp_path: Path) -> None:
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\n"
                    "case \"$2\" in *'print('*) echo 3.9;; *) exit 1;; esac\n")
    fake.chmod(0o755)
    done = pick({"PYTHON": str(fake)}, cwd=tmp_path)
    assert done.returncode == 1
    assert "needs Python 3.11 or newer" in done.stderr and "is 3.9" in done.stderr


@pytest.mark.slow
def test_the_project_virtualenv_is_made_once_then_reused(tmp_path: Path) -> None:
    first = pick({"PYTHON": base_python()}, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "creating the project virtualenv .venv" in first.stderr
    made = tmp_path / ".venv" / "bin" / "python"
    assert first.stdout.strip() == "PY=.venv/bin/python" and made.exists()
    assert subprocess.run([made, "-m", "pip", "--version"], capture_output=True).returncode == 0
    again = pick({}, cwd=tmp_path)  # python3 from PATH this time: .venv reused
    assert again.returncode == 0, again.stderr
    assert "creating" not in again.stderr and again.stdout.strip() == "PY=.venv/bin/python"
