"""The `process` marker is held to what it says (tests/conftest.py): a test without it
cannot start a program, a test with it can."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_an_unmarked_test_cannot_start_a_program(refused_program_starts: list[str]) -> None:
    with pytest.raises(RuntimeError, match=r"not marked @pytest\.mark\.process"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    with pytest.raises(RuntimeError, match=r"os\.system"):
        os.system("true")
    assert len(refused_program_starts) == 2


def test_forking_is_not_starting_a_program() -> None:
    """The load generator's in-process workers are forks of this interpreter."""
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7


@pytest.mark.process
def test_a_marked_test_can() -> None:
    done = subprocess.run([sys.executable, "-c", "print('started')"], capture_output=True,
                          text=True, check=True)
    assert done.stdout == "started\n"
