"""--script FILE.py: request() shapes every request, response() sees every answer, setup()
runs once per connection, and a hook that raises stops the run with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.loadgen.conftest import ok
from tests.support.backends import BackendStarter, Conn, Request, ScriptedBackend, response, serve
from veloxy.loadgen.report import document
from veloxy.loadgen.runner import run_bench
from veloxy.loadgen.settings import BenchInputError, BenchSettings

SCRIPT = '''
def setup(ctx):
    ctx["n"] = 0
    ctx["token"] = "t%d" % ctx["id"]

def request(ctx):
    ctx["n"] += 1
    return ("POST", "/item/%d/%d" % (ctx["id"], ctx["n"]),
            {"Authorization": "Bearer " + ctx["token"]}, "n=%d" % ctx["n"])

def response(status, headers, body, ctx):
    assert headers["x-echo"] == body.decode()
    return status == 200
'''


def echo(req: Request, conn: Conn) -> bytes:
    body = req.body
    status = 404 if req.target.endswith("/3") else 200
    return response(status, body, [("X-Echo", body.decode())])


def test_script_hooks_shape_requests_and_judge_responses(backends: BackendStarter,
                                                         tmp_path: Path) -> None:
    script = tmp_path / "hooks.py"
    script.write_text(SCRIPT)
    server = ScriptedBackend(serve(echo), name="echo")  # keeps bodies
    backends.started.append(server)
    outcome = run_bench(BenchSettings(url=server.url + "/", connections=3, duration=0.5,
                                      processes=1, script=str(script)))
    doc = document(outcome)
    got = server.requests
    assert doc["requests"]["completed"] == len(got) > 10
    for req in got:
        assert req.method == "POST"
        _, _, conn_id, n = req.target.split("/")
        assert req.head.get("authorization") == f"Bearer t{conn_id}".encode()
        assert req.body == f"n={n}".encode()
    # Each connection numbered its own requests from 1 (setup() ran per connection).
    by_conn: dict[str, list[int]] = {}
    for req in got:
        _, _, conn_id, n = req.target.split("/")
        by_conn.setdefault(conn_id, []).append(int(n))
    assert sorted(by_conn) == ["0", "1", "2"]
    assert all(sorted(ns) == list(range(1, len(ns) + 1)) for ns in by_conn.values())
    # response() returned False for the 404s: rejected, and counted as non-2xx too.
    assert doc["requests"]["rejected"] == 3 == doc["errors"]["status"]


def test_a_hook_raising_during_the_run_stops_it(backends: BackendStarter, tmp_path: Path) -> None:
    script = tmp_path / "late.py"
    script.write_text("calls = 0\n"
                      "def request():\n"
                      "    global calls\n"
                      "    calls += 1\n"
                      "    if calls > 20:\n"
                      "        raise KeyError('session expired')\n"
                      "    return 'GET', '/'\n")
    server = backends.serving(ok)
    with pytest.raises(BenchInputError, match=r"late\.py: request\(\) raised KeyError"):
        run_bench(BenchSettings(url=server.url + "/", connections=2, duration=5.0,
                                processes=2, script=str(script)))


@pytest.mark.parametrize("source, message", [
    ("def request(a, b): return 'GET', '/'", "request() must take 0 or 1 parameters"),
    ("def request(): return 42", "must return (method, path"),
    ("def request(): return 'GET', 'no slash here ok?'", "bad path"),
    ("def request(): return 'G T', '/'", "bad method"),
    ("x = 1", "defines none of"),
    ("def setup(): raise RuntimeError('no db')", "setup() raised RuntimeError: no db"),
    ("def request(:", "line 1"),
])
def test_bad_scripts_are_refused_before_the_run(source: str, message: str, backends: BackendStarter,
                                                tmp_path: Path) -> None:
    server = backends.serving(ok)
    script = tmp_path / "s.py"
    script.write_text(source)
    with pytest.raises(BenchInputError) as info:
        run_bench(BenchSettings(url=server.url + "/", connections=1, duration=0.2,
                                processes=1, script=str(script)))
    assert message in str(info.value)
    assert len(server.requests) == 0
