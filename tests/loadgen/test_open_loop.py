"""Open loop (-R): the rate is held, and a server stall shows in the corrected percentiles while
the uncorrected histogram hides it, which is the whole point of correcting for coordinated
omission."""

from __future__ import annotations

import threading
import time

import pytest

from tests.loadgen.conftest import ok
from tests.support.backends import BackendStarter, Conn, Request, ScriptedBackend, response
from tests.support.proc import VeloxyProcess
from tests.support.wire import PeerTimeout
from veloxy.loadgen.report import document
from veloxy.loadgen.runner import run_bench
from veloxy.loadgen.settings import BenchSettings


@pytest.mark.process
def test_rate_is_held_against_the_origin(origin: VeloxyProcess) -> None:
    rate, seconds = 600.0, 1.5
    outcome = run_bench(BenchSettings(url=f"http://127.0.0.1:{origin.port}/?size=200",
                                      connections=6, duration=seconds, processes=2, rate=rate))
    doc = document(outcome)
    assert doc["settings"]["mode"] == "open"
    assert doc["rate"]["requested"] == rate
    # held: >= 99% of the rate asked; 98% here so that a loaded CI machine does not flake.
    assert 0.98 * rate <= doc["rate"]["achieved"] <= 1.02 * rate
    assert abs(doc["requests"]["completed"] - rate * seconds) <= 0.02 * rate * seconds
    assert doc["errors"]["total"] == 0
    assert doc["latency_uncorrected"]["count"] == doc["latency"]["count"]
    assert doc["schedule_lag"]["count"] > 0


@pytest.mark.slow
def test_rate_is_held_at_the_server(backends: BackendStarter) -> None:
    """What arrives at the server, not only what the report says."""
    server = backends.serving(ok)
    rate, seconds = 300.0, 1.5
    outcome = run_bench(BenchSettings(url=server.url + "/", connections=3, duration=seconds,
                                      processes=1, rate=rate))
    got = len(server.requests)
    assert got == outcome.completed
    assert abs(got - rate * seconds) <= 0.03 * rate * seconds


def stalling_server(backends: BackendStarter, after: float, stall: float) -> object:
    """Answers at once, except that `after` seconds into the run it stops answering on every
    connection for `stall` seconds (as a GC pause or a blocked event loop would)."""
    lock = threading.Lock()
    state: dict[str, float] = {}

    def respond(req: Request, conn: Conn) -> bytes:
        now = time.monotonic()
        with lock:
            first = state.setdefault("first", now)
            if "until" not in state and now - first >= after:
                state["until"] = now + stall
            until = state.get("until", 0.0)
        if now < until:
            time.sleep(until - now)
        return response(200, b"ok")

    return backends.serving(respond, name="stalling")


@pytest.mark.slow
def test_a_stall_shows_in_corrected_p99_not_in_uncorrected(backends: BackendStarter) -> None:
    server = stalling_server(backends, after=1.0, stall=1.0)
    outcome = run_bench(BenchSettings(url=server.url + "/", connections=4,  # type: ignore[attr-defined]
                                      duration=3.0, processes=1, rate=400.0))
    doc = document(outcome)
    corrected, raw = doc["latency"], doc["latency_uncorrected"]
    # ~400 requests were due during the stall: a quarter of them waited 0.5 s or more.
    assert corrected["percentiles"]["99"] >= 500_000, corrected["percentiles"]
    assert corrected["percentiles"]["90"] >= 100_000, corrected["percentiles"]
    # Only the 4 requests in flight when it began saw it uncorrected: 0.3% of ~1200 samples.
    assert raw["percentiles"]["99"] < 100_000, raw["percentiles"]
    assert raw["max_us"] >= 900_000  # ... and the stall is there, in the max
    assert corrected["count"] == raw["count"] == doc["requests"]["completed"]
    assert doc["errors"]["total"] == 0
    # The backlog was sent at once after the stall, so the rate was still held overall.
    assert doc["rate"]["achieved"] >= 0.97 * 400.0


@pytest.mark.slow
def test_connections_the_server_closes_while_idle_are_replaced(backends: BackendStarter) -> None:
    """A server whose keep-alive timeout is shorter than the gap between two requests of a
    connection: every request finds its connection closed, and none of them fails."""

    def script(conn: Conn) -> None:
        while True:
            try:
                req = conn.read_request(timeout=0.02)  # 20 ms keep-alive timeout
            except PeerTimeout:
                return  # idle too long: close
            if req is None:
                return
            conn.send(response(200, b"ok"))

    server = ScriptedBackend(script, name="short-keepalive")
    backends.started.append(server)
    rate, seconds = 20.0, 1.5  # 2 connections: 100 ms between two requests of one connection
    outcome = run_bench(BenchSettings(url=server.url + "/", connections=2, duration=seconds,
                                      processes=1, rate=rate, timeout=1.0))
    doc = document(outcome)
    # Without the replacement, the first request on a closed connection is lost silently and
    # the run ends with one completed request. A request sent just as the server closes (the
    # keep-alive race every client has) would be a read error: tolerate one on a busy machine.
    assert doc["errors"]["timeout"] == 0, doc["errors"]
    assert doc["errors"]["total"] <= 1, doc["errors"]
    # Every completed request reached the server; a failed one (the race above) may not have.
    assert (doc["requests"]["completed"] <= len(server.requests)
            <= doc["requests"]["completed"] + doc["requests"]["failed"])
    assert abs(doc["requests"]["completed"] - rate * seconds) <= 3
    # Most requests found their connection closed and reconnected. Not all: when one request is
    # late (a reconnect on a busy machine), the open loop sends the next ones of that connection
    # back to back to catch up, inside the server's 20 ms window, and those reuse the connection.
    # Without the replacement the run ends after one request per connection, caught above.
    assert server.accepted >= 0.6 * doc["requests"]["completed"], server.accepted
