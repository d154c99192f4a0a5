"""The report's counts are exact: a server that records every request agrees with it, on both
event loops, with keep-alive and with a connection per request, across processes."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from tests.loadgen.conftest import ok
from tests.support.backends import BackendStarter, Conn, Request, response
from veloxy.loadgen import histogram as hdr
from veloxy.loadgen.report import document
from veloxy.loadgen.runner import run_bench
from veloxy.loadgen.settings import BenchSettings
from veloxy.loadgen.worker import RAW_SAMPLES_ENV


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_keep_alive_counts_match_the_server(backends: BackendStarter, loop: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOXY_LOOP", loop)
    server = backends.serving(ok)
    outcome = run_bench(BenchSettings(url=server.url + "/count", connections=4, duration=0.8,
                                      processes=2))
    doc = document(outcome)
    got = len(server.requests)
    assert doc["tool"]["loop"] == loop
    assert doc["requests"]["completed"] > 100
    assert doc["requests"]["sent"] == doc["requests"]["completed"] == got
    assert doc["requests"]["failed"] == doc["requests"]["abandoned"] == 0
    assert doc["errors"]["total"] == 0
    assert doc["status_codes"] == {"200": got}
    assert doc["latency"]["count"] == got
    assert sum(p["completed"] for p in doc["generator"]["processes"]) == got
    # Keep-alive: one connection per slot, never reopened (+1: the pre-flight connect check).
    assert server.accepted == 4 + 1
    assert all(r.target == "/count" for r in server.requests)
    # Bytes: every response is the same 38 bytes.
    assert doc["bytes_read"] == got * len(response(200, b"ok"))


def test_close_opens_one_connection_per_request(backends: BackendStarter) -> None:
    server = backends.serving(ok)
    outcome = run_bench(BenchSettings(url=server.url + "/", connections=3, duration=0.6,
                                      processes=1, close=True))
    doc = document(outcome)
    got = len(server.requests)
    assert doc["requests"]["completed"] == got > 20
    # A connection per request; +1: the pre-flight check; and a slot whose connect was under
    # way when the run ended closes it unused.
    assert got + 1 <= server.accepted <= got + 1 + 3
    assert all(len(c.requests) <= 1 for c in server.connections)
    assert all(r.head.get("connection") == b"close" for r in server.requests)
    assert doc["settings"]["keep_alive"] is False


def test_non_2xx_and_errors_are_counted_apart(backends: BackendStarter) -> None:
    numbers = itertools.count(1)

    def respond(req: Request, conn: Conn) -> bytes | None:
        n = next(numbers)
        if n % 10 == 0:
            conn.abort()  # reset before any answer: a read error
            return None
        return response(503 if n % 2 else 200, b"x")

    server = backends.serving(respond)
    outcome = run_bench(BenchSettings(url=server.url + "/", connections=2, duration=0.6,
                                      processes=1))
    doc = document(outcome)
    got = len(server.requests)
    req, err = doc["requests"], doc["errors"]
    assert err["read"] == req["failed"] > 0
    assert req["sent"] == req["completed"] + req["failed"] == got
    assert err["status"] == doc["status_codes"]["503"] > 0
    assert doc["status_codes"]["503"] + doc["status_codes"]["200"] == req["completed"]
    assert err["total"] == err["read"] + err["status"] + err["connect"]


def test_raw_samples_of_all_processes_make_the_reported_histogram(
        backends: BackendStarter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: each worker's raw samples, put in one histogram, give exactly the merged
    histogram the report carries."""
    monkeypatch.setenv(RAW_SAMPLES_ENV, str(tmp_path / "raw"))
    server = backends.serving(ok)
    outcome = run_bench(BenchSettings(url=server.url + "/", connections=4, duration=0.8,
                                      processes=2))
    files = sorted(tmp_path.glob("raw.*"))
    assert [f.name for f in files] == ["raw.0", "raw.1"]
    samples = [int(line) for f in files for line in f.read_text().split()]
    assert len(samples) == outcome.completed == len(server.requests)
    whole = hdr.new_histogram()
    for v in samples:
        whole.record_value(v)
    reported = hdr.decode(document(outcome)["latency"]["histogram"])
    assert list(reported.counts) == list(whole.counts)
    assert reported.get_value_at_percentile(99) == whole.get_value_at_percentile(99)
    assert os.environ.get(RAW_SAMPLES_ENV)  # (monkeypatch restores it)
    json.dumps(document(outcome))  # JSON-serialisable as is


def _chunked_every_third(req: Request, conn: Conn) -> bytes | None:
    """Every third answer chunked (the C fast lane declines it to the status-only parser),
    every fifth a 404: the generator must count each exactly, whichever parser read it."""
    n = int(req.target.rsplit("=", 1)[1]) if "=" in req.target else len(conn.requests)
    if n % 3 == 0:
        return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    return response(404 if n % 5 == 0 else 200, b"ok")


@pytest.mark.parametrize("pure_python", [False, True], ids=["fast-lane", "python-parser"])
def test_declined_and_non_200_answers_are_counted(backends: BackendStarter, pure_python: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from veloxy.h1 import parser
    monkeypatch.setattr(parser, "FAST_LANE", parser.FAST_LANE and not pure_python)
    server = backends.serving(_chunked_every_third)
    outcome = run_bench(BenchSettings(url=server.url + "/", connections=2, duration=0.6,
                                      processes=1))
    doc = document(outcome)
    per_conn = [len(c.requests) for c in server.connections]
    got = sum(per_conn)
    # Statuses as the backend chose them, connection by connection (its n-th request).
    not_found = sum(sum(1 for n in range(1, k + 1) if n % 5 == 0 and n % 3) for k in per_conn)
    assert doc["requests"]["completed"] == got > 20
    errors = doc["errors"]
    assert errors["connect"] == errors["read"] == errors["write"] == errors["timeout"] == 0
    assert doc["status_codes"].get("404", 0) == errors["status"] == not_found > 0
    chunked = sum(k // 3 for k in per_conn)
    assert chunked > 5
    # Keep-alive held through the chunked answers: no connection was reopened.
    assert server.accepted == 2 + 1
