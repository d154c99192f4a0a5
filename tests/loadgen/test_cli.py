"""`veloxy bench` as a command: its output files follow their formats, progress only on a
terminal, Ctrl-C prints partial results, and bad input is one line and exit 2."""

from __future__ import annotations

import copy
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hdrh.log import HistogramLogReader

from tests.loadgen.conftest import ok
from tests.support.backends import BackendStarter, ScriptedBackend, serve
from tests.support.proc import SRC, child_env
from veloxy.cli import main
from veloxy.loadgen import histogram as hdr
from veloxy.loadgen.report import document
from veloxy.loadgen.runner import run_bench
from veloxy.loadgen.schema import SchemaError, validate
from veloxy.loadgen.settings import BenchSettings

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.process
def test_json_validates_and_hdr_log_is_readable(backends: BackendStarter, cli: Cli,
                                                tmp_path: Path) -> None:
    server = backends.serving(ok)
    out, log = tmp_path / "run.json", tmp_path / "run.hlog"
    result = cli("bench", server.url + "/", "-c", "4", "-p", "2", "-d", "1.2s", "-R", "500",
                 "--latency", "--json", str(out), "--hdr-log", str(log))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no progress line, nothing else
    doc = json.loads(out.read_text())
    validate(doc)
    assert doc["requests"]["completed"] == len(server.requests)
    assert doc["settings"]["processes"] == 2
    assert doc["latency"]["spectrum"][-1]["percentile"] == 100.0
    assert hdr.decode(doc["latency"]["histogram"]).get_total_count() == doc["latency"]["count"]
    text = result.stdout
    assert "Requests/sec:" in text and "Transfer/sec:" in text
    assert "99.990%" in text and "uncorrected" in text  # --latency, both histograms

    # The interval log, read back by the hdrhistogram package's own reader.
    lines = log.read_text().splitlines()
    assert lines[0] == "#[Histogram log format version 1.3]"
    assert any(line.startswith("#[StartTime: ") for line in lines)
    reader = HistogramLogReader(str(log), hdr.new_histogram())
    total, intervals = 0, 0
    while (interval := reader.get_next_interval_histogram()) is not None:
        total += interval.get_total_count()
        intervals += 1
    reader.close()
    assert intervals >= 1
    assert total == doc["latency"]["count"]


@pytest.fixture(scope="module")
def result_doc() -> Iterator[dict[str, Any]]:
    """A real --json document (in-process run), for the validator tests to break."""
    server = ScriptedBackend(serve(ok, keep_body=False), name="doc")
    try:
        outcome = run_bench(BenchSettings(url=server.url + "/", connections=2, duration=0.3,
                                          processes=1))
        yield document(outcome)
    finally:
        server.close()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("version"), r"\$: missing 'version'"),
    (lambda d: d["latency"].pop("count"), r"\$\.latency: missing 'count'"),
    (lambda d: d["errors"].update(read="3"), r"\$\.errors\.read: expected integer"),
    (lambda d: d["requests"].update(sent=-1), r"\$\.requests\.sent: -1 is below the minimum"),
    (lambda d: d.update(extra=1), r"\$: unexpected key 'extra'"),
    (lambda d: d["status_codes"].update(ok=1), r"\$\.status_codes: bad key 'ok'"),
    (lambda d: d["settings"].update(mode="half-open"), r"\$\.settings\.mode: expected one of"),
    (lambda d: d["latency"]["spectrum"].append({"percentile": 101, "value_us": 1, "count": 1}),
     r"\$\.latency\.spectrum\[\d+\]\.percentile: 101 is above the maximum"),
])
def test_the_validator_names_what_is_wrong(result_doc: dict[str, Any],
                                           change: Callable[[dict[str, Any]], object],
                                           message: str) -> None:
    validate(result_doc)
    broken = copy.deepcopy(result_doc)
    change(broken)
    with pytest.raises(SchemaError, match=message):
        validate(broken)


@pytest.mark.process
def test_progress_line_on_a_terminal_only(backends: BackendStarter) -> None:
    server = backends.serving(ok)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "veloxy", "bench", server.url + "/", "-c",
                             "2", "-p", "1", "-d", "1.2s"], stdout=subprocess.PIPE,
                            stderr=follower, env=child_env(None), cwd=str(SRC.parent))
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=20)
    os.close(leader)
    assert proc.returncode == 0
    assert b"\r\x1b[2K" in seen and b"req/s" in seen and b"requests" in seen
    assert seen.endswith(b"\r\x1b[2K")  # cleared before the report
    assert b"Requests/sec:" in out


@pytest.mark.process
def test_ctrl_c_prints_partial_results(backends: BackendStarter) -> None:
    server = backends.serving(ok)
    proc = subprocess.Popen(
        [sys.executable, "-m", "veloxy", "bench", server.url + "/", "-c", "4", "-p", "2",
         "-d", "30s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(None), cwd=str(SRC.parent),
        # as from a shell with job control: SIGINT not ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 15
    while len(server.requests) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert "Interrupted: partial results." in out
    completed = int(out.split(" requests in ")[0].split()[-1])
    assert 200 <= completed <= len(server.requests)
    assert "Traceback" not in err


def _refused_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # bound then closed: nothing listens there
    return port


def _bad_script(tmp_path: Path) -> str:
    path = tmp_path / "bad.py"
    path.write_text("def request():\n    raise ValueError('no token')\n")
    return str(path)


BAD_INPUTS: list[tuple[str, Callable[[str, Path], list[str]], str]] = [
    ("unreachable", lambda url, tmp: [f"http://127.0.0.1:{_refused_port()}/"],
     "cannot connect to 127.0.0.1:"),
    ("bad header", lambda url, tmp: [url, "-H", "no colon here"], "bad header"),
    ("header with CR", lambda url, tmp: [url, "-H", "X-A: b\rc"], "CR, LF and NUL"),
    ("framing header", lambda url, tmp: [url, "-H", "Content-Length: 5"], "set from --body"),
    ("script raises", lambda url, tmp: [url, "--script", _bad_script(tmp)],
     "request() raised ValueError: no token"),
    ("missing script", lambda url, tmp: [url, "--script", str(tmp / "nope.py")], "no such file"),
    ("missing body", lambda url, tmp: [url, "--body", str(tmp / "nope.bin")], "--body"),
    ("ftp", lambda url, tmp: ["ftp://127.0.0.1/"], "only http:// and https:// URLs"),
    ("tls flag on http", lambda url, tmp: [url, "--insecure"], "are for https:// URLs"),
    ("resume on http", lambda url, tmp: [url, "--tls-resume"],
     "--tls-resume / --no-tls-resume are for https:// URLs"),
    ("no-resume on http", lambda url, tmp: [url, "--no-tls-resume"],
     "--tls-resume / --no-tls-resume are for https:// URLs"),
    ("missing ca", lambda url, tmp: [url.replace("http:", "https:"), "--ca",
                                     str(tmp / "nope.pem")], "--ca"),
    ("insecure and ca", lambda url, tmp: [url.replace("http:", "https:"), "-k", "--ca",
                                          __file__], "give one"),
    ("https to a cleartext server", lambda url, tmp: [url.replace("http:", "https:")],
     "TLS handshake with 127.0.0.1:"),
    ("not a URL", lambda url, tmp: ["127.0.0.1:80"], "expected a URL"),
    ("bad duration", lambda url, tmp: [url, "-d", "ten"], "-d: expected a duration"),
    ("bad count", lambda url, tmp: [url, "-c", "many"], "invalid int value"),
    ("zero connections", lambda url, tmp: [url, "-c", "0"], "-c must be at least 1"),
    ("more processes", lambda url, tmp: [url, "-c", "2", "-p", "3"], "more processes"),
    ("bad rate", lambda url, tmp: [url, "-R", "-5"], "-R must be a positive rate"),
    ("threshold alone", lambda url, tmp: [url, "--fail-on-regression", "5"],
     "needs --baseline"),
    ("bad baseline", lambda url, tmp: [url, "--baseline", str(tmp)], "baseline"),
    ("unknown option", lambda url, tmp: [url, "--frobnicate"], "unrecognized arguments"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(case: tuple[str, Callable[[str, Path], list[str]],
                                                       str], backends: BackendStarter,
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    _, make_args, expected = case
    server = backends.serving(ok)
    args = make_args(server.url + "/", tmp_path)
    if "-d" not in args:
        args += ["-d", "0.3s"]
    try:
        code = main(["bench", *args])
    except SystemExit as exc:  # argparse-level errors
        code = exc.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("veloxy bench: ")
    assert expected in lines[0]
    assert captured.out == ""
    assert len(server.requests) == 0  # nothing was sent


@pytest.mark.process
def test_bad_input_in_a_real_process_has_no_traceback(cli: Cli) -> None:
    result = cli("bench", f"http://127.0.0.1:{_refused_port()}/", "-d", "1s")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.process
def test_debug_shows_the_traceback(cli: Cli) -> None:
    result = cli("--debug", "bench", f"http://127.0.0.1:{_refused_port()}/", "-d", "1s")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
