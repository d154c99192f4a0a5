"""`veloxy bench https://...`: TLS to the target, the certificate verified by default
(against --ca FILE here, a trustme CA), --insecure to skip it, --sni for the name sent and
checked. The target is veloxy's own TLS listener (SNI picks its certificate) in front of
the built-in origin; a certificate problem is one line and exit 2 before any load."""

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
