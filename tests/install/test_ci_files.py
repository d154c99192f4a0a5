"""The other platforms' entry points exist and say what the README says: the workflow runs
the test command on the three operating systems and the three Pythons, through files that
exist; the PowerShell scripts are the bash scripts' twins (the same venv, the same --quick)."""

from __future__ import annotations

import yaml

from tests.conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "test.yml"


def test_the_workflow_covers_three_systems_and_three_pythons() -> None:
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]
    matrix = job["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest", "windows-latest"}
    assert matrix["python"] == ["3.11", "3.12", "3.13"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert "bash scripts/test" in runs and "./scripts/test.ps1" in runs
    assert "bash scripts/demo --quick" in runs and "./scripts/demo.ps1 --quick" in runs
    for script in ("scripts/test", "scripts/demo", "scripts/test.ps1", "scripts/demo.ps1"):
        assert (REPO / script).is_file(), script


def test_the_powershell_scripts_mirror_the_bash_ones() -> None:
    venv = (REPO / "scripts" / "venv.ps1").read_text()
    assert '".venv"' in venv and "VIRTUAL_ENV" in venv and "python3-venv" in venv
    test = (REPO / "scripts" / "test.ps1").read_text()
    bash_test = (REPO / "scripts" / "test").read_text()
    quick = '"not process and not slow"'
    assert quick in test and quick in bash_test
    assert 'Install-Veloxy "[test]"' in test
    assert "-m veloxy demo @args" in (REPO / "scripts" / "demo.ps1").read_text()
    readme = (REPO / "README.md").read_text()
    assert "scripts/demo.ps1" in readme and ".github/workflows/test.yml" in readme
