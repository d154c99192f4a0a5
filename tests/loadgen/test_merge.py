"""Distributed load: `veloxy bench --start-at TIME` lines generators up on one wall-clock
moment, and `veloxy merge` adds their results exactly (the merged histogram is the histogram
of every sample) or refuses results that are not one load.

The generators here are `veloxy bench` processes on 127.0.0.1 against a scripted backend; the
fleet test (tests/fleet) runs them from separate network namespaces against HAProxy."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.loadgen.conftest import ok
from tests.support.backends import BackendStarter
from tests.support.proc import SRC, child_env
from veloxy.loadgen import histogram as hdr
from veloxy.loadgen.merge import MergeError, merge_results, window
from veloxy.loadgen.schema import validate
from veloxy.loadgen.settings import BenchInputError, parse_start_time
from veloxy.loadgen.worker import RAW_SAMPLES_ENV

Cli = Callable[..., subprocess.CompletedProcess[str]]


def start_generators(url: str, tmp_path: Path, extra: list[list[str]], start_in: float = 5.0
                     ) -> tuple[float, list[Path]]:
    """One `veloxy bench` process per entry of `extra` (its own arguments), all with one
    --start-at, each writing its raw samples (VELOXY_BENCH_RAW) and its --json result. The
    start leaves time for a loaded CI machine to start Python and connect (a start that
    passed before a generator is ready is an error, exit 2)."""
    start = time.time() + start_in
    procs, outs = [], []
    for i, args in enumerate(extra):
        out = tmp_path / f"gen{i}.json"
        env = child_env(None, {RAW_SAMPLES_ENV: str(tmp_path / f"raw{i}")})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "veloxy", "bench", url, "--start-at", f"{start:.3f}",
             "--json", str(out), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, cwd=str(SRC.parent)))
        outs.append(out)
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    return start, outs


@pytest.mark.process
def test_merged_percentiles_are_those_of_every_sample(backends: BackendStarter, cli: Cli,
                                                      tmp_path: Path) -> None:
    server = backends.serving(ok)
    start, outs = start_generators(server.url + "/", tmp_path, [
        ["-c", "3", "-p", "1", "-d", "1.5s", "-R", "300"],
        ["-c", "4", "-p", "2", "-d", "1.5s", "-R", "500"],
        ["-c", "2", "-p", "1", "-d", "1.5s", "-R", "200"],
    ])
    docs = [json.loads(out.read_text()) for out in outs]
    for doc in docs:
        # Each began at the shared moment (the coordinator says go then; the pipe and the
        # scheduler add a few milliseconds at most; started_at is cut to the millisecond).
        assert -0.001 <= datetime.fromisoformat(doc["started_at"]).timestamp() - start < 0.25
        assert doc["settings"]["start_at"] is not None
    merged_path, html_path = tmp_path / "merged.json", tmp_path / "merged.html"
    result = cli("merge", *map(str, outs), "--json", str(merged_path), "--html", str(html_path),
                 "--latency")
    assert result.returncode == 0, result.stderr
    merged = json.loads(merged_path.read_text())
    validate(merged)

    samples = [int(v) for f in sorted(tmp_path.glob("raw*.*")) for v in f.read_text().split()]
    union = hdr.new_histogram()
    for v in samples:
        union.record_value(v)
    assert len(samples) == merged["latency"]["count"] == sum(
        d["requests"]["completed"] for d in docs) > 1000
    merged_hist = hdr.decode(merged["latency"]["histogram"])
    assert list(merged_hist.counts) == list(union.counts)
    for p in (50, 90, 99, 99.9, 100):
        assert merged["latency"]["percentiles"][f"{p:g}"] == union.get_value_at_percentile(p)
    assert merged["requests"]["completed"] == len(server.requests)
    assert merged["settings"]["connections"] == 9 and merged["settings"]["rate"] == 1000
    # Rates over the merged window, which the three shared to within a few milliseconds.
    starts = [window(d)[0] for d in docs]
    assert max(starts) - min(starts) < 0.25
    assert merged["requests_per_s"] == pytest.approx(
        merged["requests"]["completed"] / merged["duration_s"], rel=1e-3)
    assert 900 < merged["requests_per_s"] < 1100
    assert [s["name"] for s in merged["sources"]] == list(map(str, outs))

    rows = result.stdout.splitlines()
    assert rows[0].startswith("Merged 3 results @ ")
    assert [r.split()[0] for r in rows[2:6]] == [str(o)[-24:] for o in outs] + ["total"]
    assert "Requests/sec:" in result.stdout and "99.990%" in result.stdout
    page = html_path.read_text()
    assert page.count("<tr") == 1 + 3 + 1 and "<svg" in page and "total" in page


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Two real results of one load (closed loop), for the refusal tests to alter."""
    from tests.support.backends import ScriptedBackend, serve

    server = ScriptedBackend(serve(ok, keep_body=False), name="merge")
    try:
        _, outs = start_generators(server.url + "/", tmp_path_factory.mktemp("runs"),
                                   [["-c", "2", "-p", "1", "-d", "0.5s"]] * 2)
        return [json.loads(out.read_text()) for out in outs]
    finally:
        server.close()


@pytest.mark.process
def test_closed_loop_results_merge(two_runs: list[dict[str, Any]]) -> None:
    merged = merge_results([("a", two_runs[0]), ("b", two_runs[1])])
    validate(merged)
    assert merged["latency_uncorrected"] is None and merged["rate"]["requested"] is None
    assert merged["requests"]["completed"] == sum(d["requests"]["completed"] for d in two_runs)
    assert merged["latency"]["max_us"] == max(d["latency"]["max_us"] for d in two_runs)


def _shifted(doc: dict[str, Any], seconds: float) -> dict[str, Any]:
    moved = copy.deepcopy(doc)
    when = datetime.fromisoformat(doc["started_at"]) + timedelta(seconds=seconds)
    moved["started_at"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moved


def _with_setting(doc: dict[str, Any], **settings: Any) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    changed["settings"].update(settings)
    return changed


def _without_setting(doc: dict[str, Any], name: str) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    del changed["settings"][name]
    return changed


REFUSALS: list[tuple[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]], str]] = [
    ("open vs closed", lambda d: [d[0], _with_setting(d[1], mode="open", rate=100.0)],
     r"b: settings\.mode is 'open' but a has 'closed'"),
    ("another URL", lambda d: [d[0], _with_setting(d[1], url="http://127.0.0.1:1/x")],
     r"settings\.url is 'http://127\.0\.0\.1:1/x'"),
    ("another method", lambda d: [d[0], _with_setting(d[1], method="POST")], r"settings\.method"),
    ("another timeout", lambda d: [d[0], _with_setting(d[1], timeout_s=9.0)],
     r"settings\.timeout_s"),
    ("HTTP/2 vs HTTP/1.1", lambda d: [d[0], _with_setting(d[1], http2=True, streams=4)],
     r"b: settings\.http2 is True but a has False"),
    ("an older document", lambda d: [_without_setting(d[0], "streams"),
                                     _with_setting(d[1], streams=4)],
     r"b: settings\.streams is 4 but a has 1"),
    ("TLS resumption on vs off", lambda d: [d[0], _with_setting(d[1], tls_resume=True)],
     r"b: settings\.tls_resume is True but a has False"),
    ("one result", lambda d: [d[0]], "at least two results"),
    ("the same run twice", lambda d: [d[0], copy.deepcopy(d[0])], "b and a are the same run"),
    ("windows apart", lambda d: [d[0], _shifted(d[1], 0.3)], r"windows overlap over \d+%"),
    ("already merged", lambda d: [merge_results([("x", d[0]), ("y", d[1])]), d[1]],
     "a: already a merge of 2 results"),
]


@pytest.mark.process
@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refuses_what_is_not_one_load(two_runs: list[dict[str, Any]], case: Any) -> None:
    _, make, message = case
    docs = make(two_runs)
    with pytest.raises(MergeError, match=message):
        merge_results(list(zip("abc", docs, strict=False)))


@pytest.mark.process
def test_merge_command_errors_are_one_line(two_runs: list[dict[str, Any]], cli: Cli,
                                           tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(two_runs[0]))
    other = tmp_path / "open.json"
    other.write_text(json.dumps(_with_setting(two_runs[1], mode="open", rate=50.0)))
    junk = tmp_path / "junk.json"
    junk.write_text('{"format": "something else"}')
    for args, expected in (
            ([str(good), str(other)], "settings.mode is 'open'"),
            ([str(good), str(junk)], "not a veloxy bench --json result"),
            ([str(good), str(tmp_path / "missing.json")], "no such file")):
        result = cli("merge", *args)
        assert result.returncode == 2
        assert result.stderr.startswith("veloxy merge: ") and expected in result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_start_at_parsing() -> None:
    now = 1_800_000_000.0
    assert parse_start_time("1800000010.5", now) == 1_800_000_010.5
    iso = datetime.fromtimestamp(now + 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_start_time(iso, now) == now + 60
    assert parse_start_time(iso.replace("Z", "+02:00"), now) == now + 60 - 7200
    for text, message in (("08:00", "ISO 8601"), (iso.removesuffix("Z"), "give the time zone"),
                          ("nan", "not a time"), (f"{now + 2 * 86400}", "more than a day")):
        with pytest.raises(BenchInputError, match=message):
            parse_start_time(text, now)


@pytest.mark.process
def test_a_start_time_already_past_is_refused(backends: BackendStarter, cli: Cli) -> None:
    server = backends.serving(ok)
    result = cli("bench", server.url + "/", "-c", "1", "-d", "0.3s", "--start-at",
                 f"{time.time() - 5:.3f}")
    assert result.returncode == 2
    assert "passed" in result.stderr and "pick a later time" in result.stderr
    assert len(server.requests) == 0
