"""The in-process tests here run on both event loops through `run` (tests/support/loops.py)."""

from tests.support.loops import run  # noqa: F401  (the fixture, found by name)
