"""The access log (JSON to a file, combined to stdout) and W3C trace-context propagation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.observe.conftest import admin_port, post_reload
from tests.support.backends import ok_script
from tests.support.client import Client, get
from tests.support.config import prefix_routes, proxy_config

pytestmark = [pytest.mark.timeout(40), pytest.mark.process]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def read_lines(path: Path, n: int, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_json_access_log_and_traceparent(start_proxy, make_backend, tmp_path):
    backend = make_backend(ok_script(b"hello"))
    log_path = tmp_path / "access.json"
    config = proxy_config(backend, routes=prefix_routes({"/app/": "default"}))
    config["access_log"] = {"path": str(log_path), "format": "json"}
    config["tracing"] = {}
    config["admin"] = "127.0.0.1:0"
    proxy = start_proxy(config=config)
    with Client(proxy.port) as c:
        kept = c.request("GET", "/app/kept?q=1", headers=[
            ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("tracestate", "congo=t61rcWkgMzE")])
        fresh = c.request("GET", "/app/fresh", headers=[("tracestate", "orphan=1")])
        bad = c.request("GET", "/app/bad", headers=[("traceparent", "00-xyz-123-01")])
        missing = c.request("GET", "/nowhere")
    assert (kept.status, fresh.status, bad.status, missing.status) == (200, 200, 200, 404)
    upstream = {r.target: r for r in backend.wait_requests(3)}

    # Kept: the client's trace id and flags, a new span id of the proxy's, tracestate as is.
    got = upstream["/app/kept?q=1"]
    assert len(got.head.get_all("traceparent")) == 1
    m = TRACEPARENT_RE.match(got.head.get("traceparent").decode())
    assert m and m.group(1) == TRACE_ID and m.group(3) == "01"
    assert m.group(2) != PARENT_ID and m.group(2) != "0" * 16
    assert got.head.get("tracestate") == b"congo=t61rcWkgMzE"
    # Started by the proxy: a new trace, sampled; a tracestate without traceparent dropped.
    new_ids = []
    for target in ("/app/fresh", "/app/bad"):
        got = upstream[target]
        m = TRACEPARENT_RE.match(got.head.get("traceparent").decode())
        assert m and m.group(3) == "01" and m.group(1) != "0" * 32, target
        assert got.head.get("tracestate") is None
        new_ids.append(m.group(1))
    assert len(set(new_ids)) == 2 and TRACE_ID not in new_ids

    lines = read_lines(log_path, 4)
    assert len(lines) == 4, lines
    entries = [json.loads(line) for line in lines]
    assert [e["path"] for e in entries] == ["/app/kept?q=1", "/app/fresh", "/app/bad",
                                           "/nowhere"]
    first = entries[0]
    assert set(first) == {"time", "client", "method", "path", "status", "bytes", "duration",
                          "route", "upstream", "upstream_duration", "trace_id"}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", first["time"])
    assert first["client"] == "127.0.0.1" and first["method"] == "GET"
    assert first["status"] == 200 and first["route"] == "/app/"
    assert first["bytes"] == len(kept.raw_head) + len(kept.body)
    assert first["upstream"] == f"127.0.0.1:{backend.port}"
    assert 0 < first["upstream_duration"] <= first["duration"] < 5
    assert first["trace_id"] == TRACE_ID
    assert [e["trace_id"] for e in entries[1:3]] == new_ids
    last = entries[3]
    assert last["status"] == 404 and last["route"] is None and last["upstream"] is None
    assert last["upstream_duration"] is None
    assert last["bytes"] == len(missing.raw_head) + len(missing.body)

    # Reload reopens the log: after the file is moved away (rotation), lines go to a new one.
    rotated = log_path.rename(tmp_path / "access.json.1")
    code, result = post_reload(admin_port(proxy))
    assert code == 200, result
    assert get(proxy.port, "/app/after").status == 200
    lines = read_lines(log_path, 1)
    assert len(lines) == 1 and json.loads(lines[0])["path"] == "/app/after"
    assert len(rotated.read_text().splitlines()) == 4


def test_combined_access_log_on_stdout(start_proxy, make_backend):
    backend = make_backend(ok_script(b"hi"))
    config = proxy_config(backend)
    config["access_log"] = {"format": "combined"}
    proxy = start_proxy(config=config)
    resp = get(proxy.port, '/p?x="1"', headers=[("Referer", "http://r.example/"),
                                                ("User-Agent", "tester/1.0")])
    assert resp.status == 200
    deadline = time.monotonic() + 5
    while not proxy.stdout_lines and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(proxy.stdout_lines) == 1, proxy.stdout_lines
    line = proxy.stdout_lines[0]
    size = len(resp.raw_head) + len(resp.body)
    pattern = (r'^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
               r'"GET /p\?x=\\x221\\x22 HTTP/1\.1" 200 ' + str(size)
               + r' "http://r\.example/" "tester/1\.0"$')
    assert re.match(pattern, line), line
