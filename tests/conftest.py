"""Suite-wide setup: make `tests.support` importable however pytest is invoked, and hold
the `process` marker to what it says.

`@pytest.mark.process` (registered in pyproject.toml) marks a test that starts a program:
veloxy as a subprocess, nginx, HAProxy, h2load, curl, a browser, `ss`. `scripts/test --quick`
deselects them (`-m "not process"`) for a fast inner loop. So that the marker cannot go
stale, a test without it that starts a program fails: an audit hook (PEP 578) sees every
exec the test process makes, in the fixtures' set-up and teardown too, and refuses it.
Forking (the load generator's in-process workers) is not a program start and is allowed.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Audit events that mean "a program is started" (subprocess, asyncio's stdlib loop and
#: multiprocessing's spawn all go through one of them).
PROGRAM_STARTS = frozenset({"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec",
                            "os.spawn"})

#: The unmarked test running now (None: a marked one, or none), and what it tried to start.
_unmarked_test: str | None = None
_refused: list[str] = []


def _refuse_program_starts_in_unmarked_tests(event: str, args: tuple[Any, ...]) -> None:
    if _unmarked_test is None or event not in PROGRAM_STARTS:
        return
    what = f"{event}({args[0]!r}, {args[1]!r})" if len(args) > 1 else event
    _refused.append(what)
    raise RuntimeError(f"{_unmarked_test} starts a program ({what}) but is not marked "
                       "@pytest.mark.process (tests/conftest.py)")


# platform.processor() runs `uname -p` the first time anything asks for it (lab/report.py's
# machine(), through platform.platform()) and caches the answer: asked here, before the hook,
# so that whichever test happens to ask first is not charged with starting a program.
platform.processor()
sys.addaudithook(_refuse_program_starts_in_unmarked_tests)


@pytest.fixture
def refused_program_starts() -> Iterator[list[str]]:
    """The program starts refused during the test that asks for this: that test checks
    them itself (tests/test_process_marker.py), so they do not fail it at teardown."""
    yield _refused
    _refused.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, object, object]:
    global _unmarked_test
    _unmarked_test = None if item.get_closest_marker("process") else item.nodeid
    _refused.clear()
    try:
        return (yield)
    finally:
        _unmarked_test = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, None, None]:
    """Fails the test even when the code under test swallowed the RuntimeError."""
    yield
    if _refused:
        refused = list(_refused)
        _refused.clear()
        raise AssertionError(f"{item.nodeid} is not marked @pytest.mark.process but started "
                             f"{refused}")


# -- other platforms (.github/workflows/test.yml: macOS and Windows) -------------------------

#: Test files that read what only Linux has, skipped elsewhere with the reason. Whole files,
#: on purpose: these were never run on another OS (no runner reachable from here), so the
#: first macOS run should report skips, not mysteries.
LINUX_ONLY = {
    "tests/proxy/test_workers.py": "counts worker processes and their sockets in /proc",
    "tests/proxy/test_origin.py": "samples the proxy's memory in /proc",
    "tests/proxy/test_streaming.py": "samples the proxy's memory in /proc",
    "tests/loadgen/test_demo.py": "finds the demo's processes and CPU in /proc",
    "tests/lab/test_suite_run.py": "reads the targets' CPU and memory in /proc",
    "tests/fleet/": "network namespaces (ip netns) and HAProxy",
}
#: On Windows, besides: the harness (tests/support/proc.py) starts programs in their own
#: POSIX session and stops them with SIGTERM, and these use POSIX signals or pipes directly.
POSIX_ONLY = {
    "tests/proxy/test_worker_handoff.py": "raises SIGTERM/SIGHUP in this process",
    "tests/install/test_venv_script.py": "bash scripts (scripts/*.ps1 on Windows)",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if sys.platform.startswith("linux"):
        return
    windows = sys.platform == "win32"
    for item in items:
        path = Path(str(item.path)).resolve().relative_to(REPO).as_posix()
        reasons = [why for prefix, why in LINUX_ONLY.items() if path.startswith(prefix)]
        if windows:
            reasons += [why for prefix, why in POSIX_ONLY.items() if path.startswith(prefix)]
            if item.get_closest_marker("process"):
                reasons.append("starts programs through tests/support/proc.py or signals "
                               "them with POSIX signals")
        if reasons:
            item.add_marker(pytest.mark.skip(reason=f"{sys.platform}: {reasons[0]}"))
