"""`veloxy bench https://...`: TLS to the target, the certificate verified by default
(against --ca FILE here, a trustme CA), --insecure to skip it, --sni for the name sent and
checked, --tls-resume to offer each new connection the previous one's session. The target
is veloxy's own TLS listener (SNI picks its certificate) in front of the built-in origin; a
certificate problem is one line and exit 2 before any load."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proc import VeloxyProcess, running_origin
from tests.support.tls import Pki, make_pki, start_tls_proxy, stop_all
from tests.tls.conftest import base_config, tls_listener
from veloxy.cli import main

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = make_pki(tmp_path_factory.mktemp("bench-pki"))
    pki.issue("default", "localhost", "127.0.0.1")
    pki.issue("b", "b.test", "*.w.test")
    return pki


@pytest.fixture(scope="module")
def tls_port(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    started: list[VeloxyProcess] = []
    with running_origin(None) as origin:
        proxy = start_tls_proxy(base_config(f"http://127.0.0.1:{origin.port}",
                                            [tls_listener(pki)]),
                                tmp_path_factory.mktemp("bench-tls"), "uvloop", 1, started)
        try:
            yield proxy.port
        finally:
            assert not stop_all(started)


def _bench(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["bench", *args, "-c", "2", "-p", "1", "-d", "0.4s"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("extra", [["--ca", "{ca}"], ["--insecure"],
                                   ["--ca", "{ca}", "--sni", "x.w.test"]],
                         ids=["verified", "insecure", "sni"])
def test_https_runs_verified_or_insecure(tls_port: int, pki: Pki, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         extra: list[str]) -> None:
    out_file = tmp_path / "run.json"
    args = [a.replace("{ca}", str(pki.ca_file)) for a in extra]
    code, _, err = _bench([f"https://127.0.0.1:{tls_port}/?size=100", *args,
                           "--json", str(out_file)], capsys)
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    assert doc["requests"]["completed"] > 0 and doc["requests"]["failed"] == 0, doc
    assert doc["errors"]["connect"] == 0 and doc["errors"]["read"] == 0, doc["errors"]
    assert doc["settings"]["url"] == f"https://127.0.0.1:{tls_port}/?size=100"
    assert set(doc["status_codes"]) == {"200"}, doc["status_codes"]


@pytest.mark.parametrize(("extra", "expected"), [
    ([], "--ca FILE"),
    (["--ca", "{ca}", "--sni", "nope.test"], "Hostname mismatch"),
], ids=["unknown CA", "wrong name"])
def test_a_certificate_problem_is_one_line_before_any_load(
        tls_port: int, pki: Pki, capsys: pytest.CaptureFixture[str], extra: list[str],
        expected: str) -> None:
    args = [a.replace("{ca}", str(pki.ca_file)) for a in extra]
    code, out, err = _bench([f"https://127.0.0.1:{tls_port}/", *args], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("veloxy bench: TLS handshake with"), err
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("resume", [True, False], ids=["tls-resume", "no-tls-resume"])
def test_close_with_tls_resume_counts_resumed_handshakes(
        tls_port: int, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        resume: bool) -> None:
    """--close: one handshake per request. With --tls-resume each connection after the
    first of its slot offers the session of the one before (a TLS 1.3 ticket), and the
    server (one worker, one ticket key) accepts it: all but the 2 slots' first handshakes
    resume. Without it none does."""
    out_file = tmp_path / "run.json"
    flag = "--tls-resume" if resume else "--no-tls-resume"
    code, out, err = _bench([f"https://127.0.0.1:{tls_port}/?size=10", "--ca",
                             str(pki.ca_file), "--close", flag, "--json", str(out_file)],
                            capsys)
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    assert doc["settings"]["tls_resume"] is resume and doc["settings"]["keep_alive"] is False
    completed, tls = doc["requests"]["completed"], doc["tls"]
    assert completed >= 10 and doc["errors"]["total"] == 0, doc["errors"]
    # One handshake per request, counted for the connections opened in the measured phase:
    # the 2 first ones were opened before it, and the last 2 may not have been answered.
    assert completed - 2 <= tls["handshakes"] <= completed + 2, (tls, completed)
    if resume:
        assert tls["resumed"] >= tls["handshakes"] - 2, tls
        assert f"TLS handshakes: {tls['handshakes']}, {tls['resumed']} resumed" in out
    else:
        assert tls["resumed"] == 0, tls


def test_http_results_carry_no_tls_counts(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    """tls is null and tls_resume null for http:// (the schema allows both)."""
    with running_origin(None) as origin:
        out_file = tmp_path / "run.json"
        code, _, err = _bench([f"http://127.0.0.1:{origin.port}/", "--json", str(out_file)],
                              capsys)
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    assert doc["tls"] is None and doc["settings"]["tls_resume"] is None
