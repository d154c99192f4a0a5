"""A veloxy fleet on one machine: three instances in three network namespaces behind HAProxy
in TCP mode (health checks on each instance's admin /healthz), an origin in a fourth, and
`veloxy bench` generators in namespaces of their own, started together with --start-at and
merged with `veloxy merge`.

What it shows (issue 16):
- a rolling restart (SIGTERM, drain, start) of each instance in turn under keep-alive load
  loses no request: limits.shutdown_delay keeps the instance serving while /healthz says
  503, HAProxy ejects it, and every answer closes its connection so the clients reconnect to
  the others;
- kill -9 of one instance fails only the requests that were in flight on it, and HAProxy
  ejects it: no request sent after the kill fails (HAProxy redispatches refused connects);
- a reload pushed to all three (new file, SIGHUP) keeps serving without a failed request;
- the merged p99 of two generators is the p99 of the union of their samples.

Bounded: about a minute, a few hundred requests per second, all inside the namespaces.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fleet.network import SUBNET, HAProxyStats, Network, Process, missing_requirements
from tests.support.proc import SRC, child_env
from veloxy.loadgen import histogram as hdr
from veloxy.loadgen.worker import RAW_SAMPLES_ENV

pytestmark = [pytest.mark.timeout(120), pytest.mark.process]

ORIGIN = f"{SUBNET}.2"
BALANCER = f"{SUBNET}.20"
PROXIES = {1: f"{SUBNET}.11", 2: f"{SUBNET}.12", 3: f"{SUBNET}.13"}
GENERATORS = {"gen1": 31, "gen2": 32}
TARGET = f"http://{BALANCER}:8080/"
#: After SIGTERM, serve on this long: HAProxy needs fall x inter (2 x 200 ms) to eject.
SHUTDOWN_DELAY_S = 1.5

HAPROXY_CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    maxconn 4096
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # A refused connect (an instance gone) is tried again on another instance.
    retries 3
    option redispatch 1
frontend veloxy
    bind {balancer}:8080
    default_backend proxies
backend proxies
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server check port 9901 inter 200ms fall 2 rise 2
{servers}
"""


def proxy_config(generation: int) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [{"match": {"path_prefix": "/"}, "upstream": "origin"}]
    if generation:
        routes.insert(0, {"match": {"path_prefix": f"/v{generation + 1}/"},
                          "upstream": "origin", "strip_prefix": True})
    return {"listen": ["0.0.0.0:8080"], "admin": "0.0.0.0:9901", "workers": 1,
            "limits": {"shutdown_delay": f"{SHUTDOWN_DELAY_S}s", "shutdown_timeout": "5s"},
            "routes": routes,
            "upstreams": {"origin": {"servers": [f"http://{ORIGIN}:9001"]}}}


class Fleet:
    def __init__(self, net: Network, workdir: Path) -> None:
        self.net = net
        self.workdir = workdir
        self.ns = {i: net.node(f"p{i}", int(ip.rsplit(".", 1)[1])) for i, ip in PROXIES.items()}
        self.gen_ns = {name: net.node(name, host) for name, host in GENERATORS.items()}
        origin_ns = net.node("origin", 2)
        balancer_ns = net.node("lb", 20)
        net.veloxy(origin_ns, ["origin", "--listen", f"{ORIGIN}:9001"], "origin") \
            .wait_for("listening on", 20)
        self.proxies: dict[int, Process] = {}
        for i in PROXIES:
            self.write_config(i, 0)
            self.start(i)
        socket_path = workdir / "haproxy.sock"
        servers = "\n".join(f"    server p{i} {ip}:8080" for i, ip in PROXIES.items())
        config = workdir / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(socket=socket_path, balancer=BALANCER,
                                                servers=servers))
        self.haproxy = net.run(balancer_ns, ["haproxy", "-db", "-f", str(config)], "haproxy")
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert time.monotonic() < deadline, self.haproxy.output
            time.sleep(0.05)
        self.stats = HAProxyStats(socket_path)
        for i in PROXIES:
            self.stats.wait_status("proxies", f"p{i}", "UP", 10)

    def config_path(self, i: int) -> Path:
        return self.workdir / f"p{i}.yaml"

    def write_config(self, i: int, generation: int) -> None:
        self.config_path(i).write_text(yaml.safe_dump(proxy_config(generation)))

    def start(self, i: int) -> None:
        proc = self.net.veloxy(self.ns[i], ["serve", "--config", str(self.config_path(i))],
                               f"p{i}")
        proc.wait_for("admin listening on", 20)
        self.proxies[i] = proc

    def sessions(self) -> dict[str, int]:
        """Connections HAProxy has made to each instance so far (stot)."""
        return {name: int(row["stot"]) for name, row in self.stats.servers("proxies").items()}

    def admin_get(self, i: int, path: str) -> Any:
        """GET an instance's admin listener from a generator's namespace (the test process
        is outside the network)."""
        code = ("import json, sys, urllib.request; print(urllib.request.urlopen("
                f"'http://{PROXIES[i]}:9901{path}', timeout=5).read().decode())")
        out = subprocess.run(["ip", "netns", "exec", self.gen_ns["gen1"], sys.executable, "-c",
                              code], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def generators(self, tag: str, args: list[str], start_in: float = 4.0
                   ) -> tuple[float, list[tuple[Process, Path]]]:
        """One `veloxy bench` per generator namespace, all with one --start-at; returns the
        start (epoch) and (process, --json path) pairs."""
        start = time.time() + start_in
        runs = []
        for name, netns in self.gen_ns.items():
            out = self.workdir / f"{tag}-{name}.json"
            raw = self.workdir / f"{tag}-{name}.raw"
            proc = self.net.veloxy(netns, ["bench", TARGET, "--start-at", f"{start:.3f}",
                                           "--json", str(out), "--timeout", "3s", *args],
                                   f"{tag}-{name}", env={RAW_SAMPLES_ENV: str(raw)})
            runs.append((proc, out))
        return start, runs

    @staticmethod
    def results(runs: list[tuple[Process, Path]], timeout: float = 60) -> list[dict[str, Any]]:
        docs = []
        for proc, out in runs:
            assert proc.wait(timeout) == 0, proc.output
            docs.append(json.loads(out.read_text()))
        return docs


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("fleet")
    workdir.chmod(0o755)
    net = Network(workdir)
    try:
        yield Fleet(net, workdir)
    finally:
        net.close()


def sleep_until(epoch: float) -> None:
    time.sleep(max(0.0, epoch - time.time()))


def record(fleet: Fleet, name: str, figures: dict[str, Any]) -> None:
    """Figures for docs/BENCHMARKS.md, printed with -s and kept beside the results."""
    print(f"\nfleet {name}: {json.dumps(figures)}")
    (fleet.workdir / f"{name}.figures.json").write_text(json.dumps(figures, indent=2))


def test_rolling_restart_under_load_loses_nothing(fleet: Fleet) -> None:
    duration = 20.0
    start, runs = fleet.generators("rolling", ["-c", "8", "-p", "1", "-R", "150",
                                               "-d", f"{duration:g}s"])
    sleep_until(start + 1.0)
    ejected_after, served_since = {}, {}
    for i in PROXIES:
        old = fleet.proxies[i]
        old.signal(signal.SIGTERM)
        ejected_after[i] = fleet.stats.wait_status("proxies", f"p{i}", "DOWN", 3.0)
        assert old.wait(SHUTDOWN_DELAY_S + 10) == 0, old.output
        assert "draining for" in old.output
        fleet.start(i)
        fleet.stats.wait_status("proxies", f"p{i}", "UP", 10.0)
        served_since[i] = fleet.sessions()[f"p{i}"]
    restarts_done = time.time()
    docs = fleet.results(runs)
    assert restarts_done < start + duration - 1, "the restarts outlasted the load"
    for doc in docs:
        assert doc["errors"]["total"] == 0, doc["errors"]
        assert doc["requests"]["failed"] == 0 and doc["requests"]["completed"] > 0.9 * 150 * \
            duration
    # Clients moved off each later instance reconnected to the restarted ones too. (Not to
    # the last: kept-alive connections stay where they are until something moves them.)
    after = fleet.sessions()
    assert all(after[f"p{i}"] > served_since[i] for i in list(PROXIES)[:-1]), \
        (served_since, after)
    assert all(t < SHUTDOWN_DELAY_S for t in ejected_after.values()), ejected_after

    # The two generators' results, merged: the merged histogram is that of every sample.
    paths = [out for _, out in runs]
    merged_path = fleet.workdir / "rolling-merged.json"
    merge = subprocess.run([sys.executable, "-m", "veloxy", "merge", *map(str, paths),
                            "--json", str(merged_path)], capture_output=True, text=True,
                           timeout=30, env=child_env(None), cwd=str(SRC.parent))
    assert merge.returncode == 0, merge.stderr
    merged = json.loads(merged_path.read_text())
    union = hdr.new_histogram()
    samples = 0
    for raw in sorted(fleet.workdir.glob("rolling-gen*.raw.*")):
        for value in raw.read_text().split():
            union.record_value(int(value))
            samples += 1
    assert samples == merged["latency"]["count"] == sum(d["latency"]["count"] for d in docs)
    assert merged["latency"]["percentiles"]["99"] == union.get_value_at_percentile(99)
    assert list(hdr.decode(merged["latency"]["histogram"]).counts) == list(union.counts)
    record(fleet, "rolling", {
        "requests": merged["requests"]["completed"], "failed": merged["requests"]["failed"],
        "errors": merged["errors"]["total"], "requests_per_s": merged["requests_per_s"],
        "p50_us": merged["latency"]["percentiles"]["50"],
        "p99_us": merged["latency"]["percentiles"]["99"], "max_us": merged["latency"]["max_us"],
        "per_source_p99_us": [s["latency"]["percentiles"]["99"] for s in merged["sources"]],
        "ejected_after_s": {f"p{i}": round(t, 3) for i, t in ejected_after.items()},
        "merge_output": merge.stdout.splitlines()[:5]})


def test_kill_9_fails_only_what_was_in_flight(fleet: Fleet) -> None:
    # Closed loop: every connection always has a request out, so the connections HAProxy
    # holds to the victim bound the requests that can fail with it.
    start, runs = fleet.generators("kill", ["-c", "4", "-p", "1", "-d", "6s"])
    sleep_until(start + 2.0)
    open_to_victim = int(fleet.stats.servers("proxies")["p2"]["scur"])
    fleet.proxies[2].signal(signal.SIGKILL)
    ejected = fleet.stats.wait_status("proxies", "p2", "DOWN", 3.0)
    docs = fleet.results(runs)
    failed = sum(d["requests"]["failed"] for d in docs)
    completed = sum(d["requests"]["completed"] for d in docs)
    assert open_to_victim >= 1
    # (+1: reading HAProxy's count and the kill are two steps, and on a loaded machine one
    # more connection to the victim can open between them; seen once in CI-like runs)
    assert 1 <= failed <= open_to_victim + 1, (failed, open_to_victim,
                                               [d["errors"] for d in docs])
    assert failed <= 8  # never more than the requests in flight: 2 generators x 4 connections
    assert sum(d["errors"]["connect"] for d in docs) == 0  # refused connects: redispatched

    # Ejected: with p2 still dead, a fresh load fails nothing.
    start, runs = fleet.generators("after-kill", ["-c", "4", "-p", "1", "-R", "200", "-d", "2s"])
    after = fleet.results(runs)
    assert all(d["errors"]["total"] == 0 and d["requests"]["completed"] > 0 for d in after)
    fleet.start(2)
    fleet.stats.wait_status("proxies", "p2", "UP", 10.0)
    record(fleet, "kill9", {"requests": completed, "failed": failed,
                            "connections_on_victim": open_to_victim,
                            "ejected_after_s": round(ejected, 3)})


def test_reload_pushed_to_all_keeps_serving(fleet: Fleet) -> None:
    start, runs = fleet.generators("reload", ["-c", "8", "-p", "1", "-R", "150", "-d", "6s"])
    sleep_until(start + 2.0)
    for i in PROXIES:
        fleet.write_config(i, 1)
        fleet.proxies[i].signal(signal.SIGHUP)
    docs = fleet.results(runs)
    for doc in docs:
        assert doc["errors"]["total"] == 0, doc["errors"]
        assert doc["requests"]["completed"] > 0.9 * 150 * 6
    for i in PROXIES:
        status = fleet.admin_get(i, "/status")
        assert [w["config_generation"] for w in status["workers"]["list"]] == [1], status
        assert "/v2/" in json.dumps(status["routes"])
    record(fleet, "reload", {"requests": sum(d["requests"]["completed"] for d in docs),
                             "errors": sum(d["errors"]["total"] for d in docs)})
