"""Every test of the upstream suite runs on both event loops through `run`
(tests/support/loops.py: a fresh loop of each kind, failing on any exception the loop
reports but nobody handled). The helpers live in tests/upstream/harness.py.
"""

from tests.support.loops import run  # noqa: F401  (the fixture, found by name)
