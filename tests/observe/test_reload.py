"""Hot reload with two workers under continuous load: POST /reload and SIGHUP swap routes
and upstreams without losing a request; an invalid file changes nothing and says why."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from tests.observe.conftest import post_reload, scrape, status, value
from tests.support.backends import ok_script
from tests.support.client import Client, get
from tests.support.config import prefix_routes, proxy_config, write_config

pytestmark = [pytest.mark.timeout(40), pytest.mark.process]


def config_path(proxy) -> Path:
    return Path(proxy.args[proxy.args.index("--config") + 1])


def rewrite(proxy, config: dict) -> None:
    write_config(config_path(proxy), {**config, "admin": "127.0.0.1:0"})


class Load:
    """Threads sending requests until stopped, half on fresh connections, half kept alive;
    each result is (start time, status or exception, body)."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.results: list[tuple[float, object, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
                         for i in range(threads)]

    def _run(self, keep_alive: bool) -> None:
        client: Client | None = None
        i = 0
        while not self._stop.is_set():
            i += 1
            start = time.monotonic()
            try:
                if keep_alive:
                    if client is None:
                        client = Client(self.port, timeout=5)
                    resp = client.request("GET", f"/load/{i}")
                    if resp.header("connection") == "close":
                        client.close()
                        client = None
                else:
                    resp = get(self.port, f"/load/{i}", timeout=5)
                outcome: object = resp.status
                body = resp.body
            except Exception as exc:  # collected: the test fails on any
                outcome, body = exc, b""
                if client is not None:
                    client.close()
                    client = None
            with self._lock:
                self.results.append((start, outcome, body))
        if client is not None:
            client.close()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_more(self, n: int, timeout: float = 5.0) -> None:
        target = self.count() + n
        deadline = time.monotonic() + timeout
        while self.count() < target and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.count() >= target, "the load stalled"


def wait_generation(admin: int, generation: int, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = status(admin)
        gens = [w["config_generation"] for w in info["workers"]["list"]]
        if len(gens) == 2 and all(g == generation for g in gens):
            return info
        assert time.monotonic() < deadline, f"workers at generations {gens}"
        time.sleep(0.05)


def invalid_file_changes_nothing(proxy, admin: int, valid: dict) -> None:
    """An invalid file (a route to an unknown group, then bad YAML): 400 with the problem
    named by its key path, logged; no worker reloads and the routes stay."""
    broken = {**valid, "routes": prefix_routes({"/": "nope"})}
    rewrite(proxy, broken)
    code, result = post_reload(admin)
    assert code == 400 and result["ok"] is False
    assert 'routes.0.upstream: unknown upstream "nope"' in result["error"], result
    config_path(proxy).write_text("routes: [\n")
    code, result = post_reload(admin)
    assert code == 400 and "invalid YAML" in result["error"], result
    assert get(proxy.port, "/x/1").body == b"A"
    assert [w["config_generation"] for w in status(admin)["workers"]["list"]] == [0, 0]
    assert "config reload refused" in proxy.stderr and "unknown upstream" in proxy.stderr
    assert value(scrape(admin), "veloxy_config_reloads_total", result="error") == 2
    assert value(scrape(admin), "veloxy_config_reloads_total", result="ok") == 0


@pytest.mark.parametrize("workers_mode", ["fork", "spawn"])
def test_reload_under_load_with_two_workers(proxy_with_admin, make_backend, start_proxy,
                                            workers_mode):
    # spawn: POST /reload and SIGHUP reach the workers through the supervisor's pipes
    start_proxy.workers_mode = workers_mode
    a = make_backend(ok_script(b"A"), name="a")
    b = make_backend(ok_script(b"B"), name="b")
    to_a = proxy_config({"a": a, "b": b}, routes=prefix_routes({"/": "a"}))
    to_b = proxy_config({"a": a, "b": b}, routes=prefix_routes({"/": "b"}))
    # The group itself changes too (a new server list), so its pools are replaced.
    to_b_moved = proxy_config({"a": b, "b": b}, routes=prefix_routes({"/": "a"}))
    proxy, admin = proxy_with_admin(to_a, workers=2)
    with Load(proxy.port) as load:
        load.wait_more(50)
        invalid_file_changes_nothing(proxy, admin, to_a)
        load.wait_more(50)
        rewrite(proxy, to_b)
        code, result = post_reload(admin)
        after_post = time.monotonic()
        assert code == 200 and result["ok"], result
        assert sorted(w["index"] for w in result["workers"]) == [0, 1]
        assert all(w["generation"] == 1 and w["error"] is None for w in result["workers"])
        load.wait_more(100)
        # SIGHUP to the supervisor: every worker reloads.
        rewrite(proxy, to_b_moved)
        before_hup = time.monotonic()
        proxy.send_signal(signal.SIGHUP)
        wait_generation(admin, 2)
        after_hup = time.monotonic()
        load.wait_more(100)
    failures = [(t, o) for t, o, _ in load.results if o != 200]
    assert not failures, f"{len(failures)} of {len(load.results)} requests failed: {failures[:5]}"
    assert len(load.results) >= 250
    assert {body for _, _, body in load.results} == {b"A", b"B"}
    started_between = [body for t, _, body in load.results if after_post < t < before_hup]
    assert started_between and set(started_between) == {b"B"}
    assert {body for t, _, body in load.results if t > after_hup} == {b"B"}
    # The old group's pool was retired: its server now gets no connection from veloxy.
    samples = scrape(admin)
    assert value(samples, "veloxy_config_reloads_total", result="ok") == 4  # 2 workers x 2
    old = {"upstream": "a", "server": f"127.0.0.1:{a.port}"}
    assert value(samples, "veloxy_upstream_requests_total", **old, code="200") > 0
    assert ("veloxy_upstream_healthy", tuple(sorted(old.items()))) not in samples
    assert value(samples, "veloxy_upstream_healthy", upstream="a",
                 server=f"127.0.0.1:{b.port}") == 1
