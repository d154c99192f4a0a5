"""The suite file: what it may say, the problems it reports with their key paths, and the
two suites that ship."""

from __future__ import annotations

from pathlib import Path

import pytest

from veloxy.lab.suite import SuiteError, load_suite, parse_suite

REPO = Path(__file__).resolve().parents[2]


def test_shipped_suites_load() -> None:
    seed = load_suite(REPO / "suites/seed-study.yaml")
    assert seed.reference == "go" and seed.repetitions >= 3
    assert {t.kind for t in seed.targets} >= {"direct", "veloxy", "go-default"}
    assert any(t.gc.freeze and t.gc.gen0 for t in seed.targets)
    assert any(not s.keep_alive for s in seed.scenarios)
    assert any(s.rate for s in seed.scenarios) and any(s.rate is None for s in seed.scenarios)
    assert {s.workers for s in seed.scenarios} == {1, 2}
    assert any(s.origin_delay > 0 for s in seed.scenarios)
    assert max(s.connections for s in seed.scenarios) == 1000
    peers = load_suite(REPO / "suites/peers.yaml")
    assert {t.kind for t in peers.targets} >= {"nginx", "haproxy", "veloxy", "go-tuned"}
    assert peers.pin == "split"
    assert any(s.tls and s.protocol == "http1" for s in peers.scenarios)
    assert any(s.tls and s.protocol == "h2" and s.streams > 1 for s in peers.scenarios)


def test_tls_and_h2_scenarios() -> None:
    suite = parse_suite({"targets": [{"name": "veloxy"}], "scenarios": [
        {"name": "plain"}, {"name": "tls", "tls": True},
        {"name": "h2", "tls": True, "protocol": "h2", "streams": 10, "connections": 10}]})
    plain, tls, h2 = suite.scenarios
    assert (plain.tls, plain.protocol, plain.streams, plain.scheme) == (False, "http1", 1,
                                                                        "http")
    assert tls.tls and tls.scheme == "https" and tls.protocol == "http1"
    assert (h2.protocol, h2.streams) == ("h2", 10)
    assert h2.describe().startswith("HTTP/2 x10 streams over TLS, c=10")
    assert tls.describe().startswith("HTTP/1.1 over TLS, ")
    assert plain.describe().startswith("HTTP/1.1, ")


def test_selecting_scenarios_and_targets() -> None:
    peers = load_suite(REPO / "suites/peers.yaml")
    only = peers.selected(["tls-h2-c10-m10", "keepalive-c64"], ["veloxy", "nginx"])
    # the file's order, and the reference target (go) kept: every ratio is to it
    assert [s.name for s in only.scenarios] == ["keepalive-c64", "tls-h2-c10-m10"]
    assert [t.name for t in only.targets] == ["veloxy", "go", "nginx"]
    assert peers.selected().scenarios == peers.scenarios
    with pytest.raises(SuiteError) as exc:
        peers.selected(["nope"], ["veloxy", "nginks"])
    assert exc.value.problems[0].startswith("--scenarios: no nope in this suite (it has ")
    assert exc.value.problems[1].startswith("--targets: no nginks in this suite")


def test_defaults_and_paths() -> None:
    suite = parse_suite({"targets": [{"name": "veloxy"}, {"name": "ext", "kind": "url",
                                                          "url": "http://10.0.0.1:8080/x"}],
                         "scenarios": [{"name": "s", "payload": "16k",
                                        "origin_delay": "5ms", "keep_alive": False}]})
    assert suite.reference == "veloxy" and suite.repetitions == 1
    scen = suite.scenarios[0]
    assert scen.payload == 16384 and scen.rate is None and not scen.keep_alive
    assert scen.path == "/?size=16384&delay=5ms"
    assert suite.target("ext").kind == "url" and not suite.target("ext").started
    assert suite.scaled(duration=0.5, repetitions=2).scenarios[0].duration == 0.5


@pytest.mark.parametrize(("data", "message"), [
    ({"targets": [], "scenarios": [{}]}, "targets: expected a non-empty list"),
    ({"targets": [{"name": "a", "kind": "apache"}], "scenarios": [{}]},
     "targets[0].kind: expected one of"),
    ({"targets": [{"name": "u", "kind": "url"}], "scenarios": [{}]},
     "targets[0].url: a url target needs an http:// URL"),
    ({"targets": [{"name": "veloxy"}], "scenarios": [{"rate": -5}]},
     "scenarios[0].rate: expected a positive number"),
    ({"targets": [{"name": "veloxy"}], "scenarios": [{"duration": "soon"}]},
     "scenarios[0].duration"),
    ({"targets": [{"name": "veloxy"}], "scenarios": [{"connections": 0}]},
     "scenarios[0].connections: expected an integer >= 1"),
    ({"targets": [{"name": "veloxy"}], "scenarios": [{"colour": "red"}]},
     "scenarios[0].colour: unknown key"),
    ({"targets": [{"name": "veloxy"}], "reference": "nginx", "scenarios": [{}]},
     "reference: 'nginx' is not a target"),
    ({"targets": [{"name": "veloxy"}, {"name": "veloxy"}], "scenarios": [{}]},
     "targets[1].name: 'veloxy' is used twice"),
    ({"targets": [{"name": "nginx", "gc": {"freeze": True}}], "scenarios": [{}]},
     "targets[0].gc: for veloxy targets only"),
    ({"targets": [{"name": "veloxy"}], "pin": "all", "scenarios": [{}]}, "pin: expected"),
    ({"targets": [{"name": "veloxy"}], "scenarios": [{}, {"tls": "yes"}]},
     "scenarios[1].tls: expected true or false"),
    ({"targets": [{"name": "veloxy"}], "scenarios": [{"tls": True, "protocol": "h3"}]},
     "scenarios[0].protocol: expected http1 or h2"),
    ({"targets": [{"name": "veloxy"}], "scenarios": [{"protocol": "h2"}]},
     "scenarios[0].protocol: h2 is HTTP/2 over TLS here: add tls: true"),
    ({"targets": [{"name": "veloxy"}], "scenarios": [{"streams": 10}]},
     "scenarios[0].streams: several streams per connection is HTTP/2"),
    ({"targets": [{"name": "veloxy"}], "scenarios": [{"streams": 0}]},
     "scenarios[0].streams: expected an integer >= 1"),
    ({"targets": [{"name": "veloxy"}],
      "scenarios": [{"tls": True, "protocol": "h2", "keep_alive": False}]},
     "scenarios[0].keep_alive: HTTP/2 keeps its connections open"),
])
def test_problems_name_their_key_path(data: dict[str, object], message: str) -> None:
    with pytest.raises(SuiteError) as info:
        parse_suite(data, "x.yaml")
    assert any(p.startswith(message) for p in info.value.problems), info.value.problems
    assert info.value.render().startswith("x.yaml: ")


def test_every_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("targets: [{kind: apache}]\nscenarios: [{rate: 0, workers: 0}]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    found = " | ".join(info.value.problems)
    for path_ in ("targets[0].kind", "scenarios[0].rate", "scenarios[0].workers"):
        assert path_ in found
    with pytest.raises(SuiteError, match="cannot read"):
        load_suite(tmp_path / "missing.yaml")
    path.write_text("targets: [\n")
    with pytest.raises(SuiteError, match="not valid YAML"):
        load_suite(path)
