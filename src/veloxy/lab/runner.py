"""Running a suite: one origin, every target in front of it, every cell interleaved.

Why interleaved: a laptop warms up, a neighbour starts a build, TIME_WAIT sockets pile up.
Run all of target A and then all of B, and the drift lands on B. Here every repetition runs
each scenario against every target, in an order rotated per repetition, so drift hits all
targets alike and the min-max over repetitions shows how large it was.

One cell = a warm-up run (not measured: pools fill, caches warm, the JIT-less interpreter
still has its own warm-up in allocator arenas) and a measured run of `veloxy bench` (the
Python API, as the demo drives it). During the measured run a thread samples the target's
process tree from /proc every 200 ms: CPU (user+system, all workers) and resident memory.
CPU µs per request = the tree's CPU seconds over the measured run / requests completed.

Targets are started lazily, one instance per (target, workers, TLS or not), and kept until
the end: the scenarios' payload and origin delay are in the request URL, so only `workers`
and `tls` need a new process (HTTP/1.1 and HTTP/2 over TLS share one: ALPN picks). TLS
instances all present one certificate made for the run (peers.make_tls_files), which the
generator verifies against its CA. A target that cannot start is skipped with its reason;
the others still run.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veloxy.lab.peers import TlsFiles, make_tls_files, peer_command
from veloxy.lab.procs import HOST, Child, Proc, Sampler, StartError, free_port, tree_cpu_seconds
from veloxy.lab.suite import ScenarioSpec, Suite, TargetSpec

Log = Callable[[str], None]


@dataclass
class Instance:
    """A running target: where to send requests and which process tree to charge."""

    target: str
    url: str  # without the path
    pid: int | None
    note: str = ""


@dataclass
class CellResult:
    scenario: str
    target: str
    rep: int
    order: int
    url: str
    requests_per_s: float = 0.0
    completed: int = 0
    errors: int = 0
    latency_us: dict[str, float] = field(default_factory=dict)
    spectrum: list[list[float]] = field(default_factory=list)  # [percentile, value_us]
    timeline: list[dict[str, float]] = field(default_factory=list)
    cpu_us_per_request: float | None = None
    cpu_percent: float | None = None
    cpu_timeline: list[list[float]] = field(default_factory=list)  # [t_s, percent of a core]
    rss_mib_max: float | None = None
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _cpu_sets(pin: str) -> tuple[list[int] | None, list[int] | None]:
    """(client CPUs, proxy CPUs) for pin=split: CPU 0 for the generator and the origin, the
    rest for the proxy under test; (None, None) when not pinning or not possible."""
    if pin != "split":
        return None, None
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(cpus) < 2:
        return None, None
    import shutil

    if shutil.which("taskset") is None:
        return None, None
    return cpus[:1], cpus[1:]


class Lab:
    """Starts and stops the processes of one suite run and runs its cells."""

    def __init__(self, suite: Suite, log: Log, workdir: Path | None = None) -> None:
        self.suite = suite
        self.log = log
        self.stack = ExitStack()
        self.procs: list[Proc] = []
        self.instances: dict[tuple[str, int, bool], Instance | str] = {}
        self._tls: TlsFiles | str | None = None
        self.client_cpus, self.proxy_cpus = _cpu_sets(suite.pin)
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="veloxy-suite-")
            self.stack.enter_context(tmp)
            workdir = Path(tmp.name)
        self.workdir = workdir
        self.origin_port = 0
        self.origin_pid = 0
        self._affinity: set[int] | None = None

    # -- processes --------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        if self.client_cpus is not None:
            # This process and the generator it forks stay off the proxy's cores.
            self._affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self.client_cpus)
            self.stack.callback(os.sched_setaffinity, 0, self._affinity)
        self.stack.callback(self._stop_procs)
        if any(t.kind != "url" for t in self.suite.targets):
            origin = Child(["origin", "--listen", f"{HOST}:0", "--workers",
                            str(self.suite.origin_workers)], "veloxy origin listening on",
                           cpus=self.client_cpus)
            self.stack.callback(origin.stop)
            self.origin_port = origin.wait_ready()
            self.origin_pid = origin.pid
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _stop_procs(self) -> None:
        for proc in reversed(list(self.procs)):
            proc.stop()

    def tls_files(self) -> TlsFiles | str:
        """The run's certificate (made on first use), or why TLS cannot run."""
        if self._tls is None:
            self._tls = make_tls_files(self.workdir)
        return self._tls

    def instance(self, target: TargetSpec, workers: int, tls: bool = False) -> Instance | str:
        """The running instance of `target` with `workers` (terminating TLS if `tls`),
        started on first use; a string says why it cannot run."""
        key = (target.name, workers if target.started else 0, tls)
        if key not in self.instances:
            try:
                self.instances[key] = self._start(target, workers, tls)
            except StartError as exc:
                self.instances[key] = str(exc)
            if isinstance(self.instances[key], str):
                self.log(f"{target.name}: skipped: {self.instances[key]}")
        return self.instances[key]

    def _start(self, target: TargetSpec, workers: int, tls: bool = False) -> Instance | str:
        origin = f"http://{HOST}:{self.origin_port}"
        files: TlsFiles | None = None
        if tls:
            if target.kind == "direct":
                return "the origin speaks cleartext only (TLS scenarios are for proxies)"
            if target.kind == "url":
                return "a url target is driven as given (http://): not in TLS scenarios"
            made = self.tls_files()
            if isinstance(made, str):
                return made
            files = made
        if target.kind == "direct":
            return Instance(target.name, origin, self.origin_pid,
                            "CPU = the origin's own")
        if target.kind == "url":
            assert target.url is not None
            return Instance(target.name, target.url.rstrip("/"), None, "not sampled")
        if target.kind == "veloxy":
            return self._start_veloxy(target, workers, origin, files)
        port = free_port()
        spec = peer_command(target.kind, self.workdir, port, self.origin_port,
                            workers=workers, connections=max(
                                s.connections for s in self.suite.scenarios), tls=files)
        if isinstance(spec, str):
            return spec
        tag = f"{target.name}-w{workers}{'-tls' if tls else ''}"
        proc = Proc(tag, spec.argv, self.workdir / f"{tag}.log", env=spec.env,
                    cpu=",".join(map(str, self.proxy_cpus)) if self.proxy_cpus else None,
                    registry=self.procs)
        try:
            proc.start()
        except OSError as exc:
            return f"cannot start {spec.argv[0]}: {exc}"
        why = proc.wait_ready(port, 15.0, spec.ready_pattern)
        if why is not None:
            tail = proc.tail(3).replace("\n", " | ")
            proc.stop()
            return f"{why}: {tail}"
        return Instance(target.name, f"{'https' if tls else 'http'}://{HOST}:{port}", proc.pid)

    def _start_veloxy(self, target: TargetSpec, workers: int, origin: str,
                      tls: TlsFiles | None = None) -> Instance:
        args = ["serve", "--workers", str(workers), "--log-level", "warning"]
        config = target_config(target)
        if tls is not None:
            # a TLS listener is only said in a config file (--listen is cleartext); it
            # replaces any listen: of the target's config
            config = dict(config or {}, listen=[{"address": f"{HOST}:0", "tls": {
                "cert": str(tls.cert), "key": str(tls.key)}}])
        else:
            args += ["--listen", f"{HOST}:0"]
        if config is not None:
            path = self.workdir / f"{target.name}-w{workers}{'-tls' if tls else ''}.yaml"
            write_config(path, config, origin)
            args += ["--config", str(path)]
        else:
            args += ["--upstream", origin]
        args += list(target.args)
        env = dict(os.environ, **dict(target.env))
        child = Child(args, "veloxy listening on", env=env, cpus=self.proxy_cpus)
        self.stack.callback(child.stop)
        port = child.wait_ready()
        return Instance(target.name, f"{'https' if tls else 'http'}://{HOST}:{port}", child.pid)

    # -- cells ------------------------------------------------------------------------------

    def run_cell(self, scenario: ScenarioSpec, target: TargetSpec, rep: int,
                 order: int) -> CellResult:
        inst = self.instance(target, scenario.workers, scenario.tls)
        if isinstance(inst, str):
            return CellResult(scenario.name, target.name, rep, order, "", skipped=inst)
        from veloxy.loadgen.settings import BenchInputError

        path = scenario.path if target.kind != "url" else _url_path(target.url or "")
        url = inst.url + path
        try:
            return measure(url, scenario, self.suite.warmup, inst.pid, target.name, rep, order,
                           ca=str(self._tls.ca) if isinstance(self._tls, TlsFiles) else None)
        except BenchInputError as exc:  # unreachable (a url target down, a crashed peer)
            self.log(f"{target.name}: {scenario.name}: skipped: {exc}")
            return CellResult(scenario.name, target.name, rep, order, url, skipped=str(exc))


def _url_path(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def target_config(target: TargetSpec) -> dict[str, Any] | None:
    """The config document of a veloxy target: its `config:` with the `gc:` shorthand
    written as the server's own `tuning.gc` keys; None when neither is given."""
    config = target.config
    if target.gc.active:
        config = copy.deepcopy(config or {})
        gc_settings = config.setdefault("tuning", {}).setdefault("gc", {})
        gc_settings["freeze_after_start"] = target.gc.freeze
        if target.gc.gen0 is not None:
            gc_settings["gen0_threshold"] = target.gc.gen0
    return config


def write_config(path: Path, config: dict[str, Any], origin: str) -> None:
    """A veloxy config from a suite's `config:` mapping: "{upstream}" in any string becomes
    the origin's URL, and a mapping without upstreams gets one route to the origin."""
    import yaml

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{upstream}", origin)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    data = fill(config)
    if "upstreams" not in data:
        data["upstreams"] = {"origin": {"servers": [origin]}}
    if "routes" not in data:
        data["routes"] = [{"match": {"path_prefix": "/"},
                           "upstream": next(iter(data["upstreams"]))}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def measure(url: str, scenario: ScenarioSpec, warmup: float, pid: int | None, target: str,
            rep: int, order: int,
            progress: Callable[[float], None] | None = None,
            ca: str | None = None) -> CellResult:
    """Warm up, then one measured `veloxy bench` run with the target's tree sampled.

    `progress` (the demo's progress bar) gets the fraction of the cell done, 0 to 1; `ca`
    verifies an https:// target's certificate."""
    from veloxy.loadgen import histogram as hdr
    from veloxy.loadgen.report import document
    from veloxy.loadgen.runner import run_bench
    from veloxy.loadgen.settings import BenchSettings

    timeout = max(2.0, scenario.origin_delay * 4 + 2.0)
    settings = BenchSettings(url=url, connections=scenario.connections,
                             duration=scenario.duration, processes=scenario.processes,
                             rate=scenario.rate, close=not scenario.keep_alive,
                             timeout=timeout, ca=ca if url.startswith("https:") else None,
                             http2=scenario.protocol == "h2", streams=scenario.streams)
    total = warmup + scenario.duration

    def tick(offset: float) -> Callable[[Any], None] | None:
        if progress is None:
            return None
        report = progress  # bound here: mypy cannot narrow `progress` inside the closure
        return lambda p: report(min(1.0, (offset + p.elapsed) / total) if total > 0 else 1.0)

    if warmup > 0 and run_bench(settings.with_(duration=warmup),
                                progress=tick(0.0)).interrupted:
        raise KeyboardInterrupt
    sampler = Sampler(pid) if pid else None
    cpu0 = tree_cpu_seconds(pid) if pid else 0.0
    if sampler:
        sampler.start()
    # hdr_log set: the workers cut 1 s interval histograms (kept in memory, nothing written).
    outcome = run_bench(settings.with_(hdr_log=os.devnull), progress=tick(warmup))
    cpu1 = tree_cpu_seconds(pid) if pid else 0.0
    result = CellResult(scenario.name, target, rep, order, url)
    if sampler:
        sampler.finish()
        usage = sampler.summary()
        result.cpu_timeline = [[t, c] for t, c in zip(usage["t_s"], usage["cpu_percent"],
                                                      strict=False)]
        result.rss_mib_max = usage["rss_mib_max"]
    if outcome.interrupted:
        raise KeyboardInterrupt
    doc = document(outcome)
    lat = doc["latency"]
    result.requests_per_s = float(doc["requests_per_s"])
    result.completed = outcome.completed
    result.errors = int(doc["errors"]["total"])
    result.latency_us = {"mean": lat["mean_us"], "max": lat["max_us"],
                         **{f"p{k}": v for k, v in lat["percentiles"].items()}}
    result.spectrum = [[p["percentile"], p["value_us"]] for p in lat["spectrum"]]
    result.warnings = list(doc["generator"]["warnings"])
    t0 = outcome.intervals[0].start_s if outcome.intervals else 0.0
    for iv in outcome.intervals:
        s = hdr.summary(iv.histogram)
        pct: Any = s["percentiles"]
        count = int(s["count"])  # type: ignore[call-overload]  # summary values are typed loosely (object)
        result.timeline.append({"t_s": round(iv.start_s - t0 + iv.length_s, 3),
                                "p50_us": pct["50"], "p99_us": pct["99"],
                                "max_us": s["max_us"],  # type: ignore[dict-item]  # summary values are typed loosely (object)
                                "requests_per_s": round(count / iv.length_s, 1)
                                if iv.length_s > 0 else 0.0})
    elapsed = outcome.elapsed_s + outcome.drain_s
    if pid and outcome.completed:
        result.cpu_us_per_request = round((cpu1 - cpu0) * 1e6 / outcome.completed, 2)
        result.cpu_percent = round(100 * (cpu1 - cpu0) / elapsed, 1) if elapsed > 0 else None
    return result


def run_suite(suite: Suite, log: Log, workdir: Path | None = None) -> list[CellResult]:
    """Every cell of the suite, interleaved across targets, rotated per repetition."""
    cells: list[CellResult] = []
    total = suite.repetitions * len(suite.scenarios) * len(suite.targets)
    with Lab(suite, log, workdir) as lab:
        n = 0
        for rep in range(suite.repetitions):
            for scenario in suite.scenarios:
                k = rep % len(suite.targets)
                order = list(suite.targets[k:]) + list(suite.targets[:k])
                for position, target in enumerate(order):
                    n += 1
                    started = time.monotonic()
                    cell = lab.run_cell(scenario, target, rep, position)
                    cells.append(cell)
                    if cell.skipped:
                        continue
                    p99 = cell.latency_us.get("p99", 0) / 1000
                    cpu = (f", {cell.cpu_us_per_request:.1f} µs CPU/req"
                           if cell.cpu_us_per_request is not None else "")
                    log(f"[{n}/{total}] rep {rep + 1} {scenario.name} {target.name}: "
                        f"{cell.requests_per_s:,.0f} req/s, p99 {p99:.2f} ms, "
                        f"{cell.errors} errors{cpu} ({time.monotonic() - started:.1f} s)")
    return cells
