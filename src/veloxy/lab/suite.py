"""The model of a `veloxy suite` file: targets x scenarios x repetitions, checked once.

Why a file and not flags: an experiment worth running is worth re-running the same way next
month, by CI, or on somebody else's machine; a YAML file says what was measured and is diffed
like code. Every problem is reported with its key path ("scenarios[2].rate: ...") before any
process starts.

    name: seed-study
    reference: go              # ratios are against this target
    repetitions: 3
    warmup: 1s                 # per cell, not measured (load at the scenario's settings)
    pin: split                 # proxies on CPUs 1.., generator and origin on CPU 0; or none
    origin: {workers: 1}       # the built-in origin every started target fronts
    targets:
      - {name: direct, kind: direct}            # the origin itself
      - {name: veloxy, kind: veloxy, config: {upstreams: ...}, gc: {freeze: true}}
      - {name: nginx, kind: nginx}              # also haproxy, go, go-default, go-bufpool
      - {name: remote, kind: url, url: "http://10.0.0.5:8080/"}
    scenarios:
      - name: ka-c1000-fixed
        connections: 1000
        rate: 2000             # omit (or null) for closed loop: as fast as it answers
        duration: 10s
        payload: 100           # response body bytes (the origin's ?size=)
        keep_alive: true       # false: Connection: close, a new connection per request
        workers: 1             # worker processes / threads of every started target
        origin_delay: 0ms      # the origin waits this long before answering (?delay=)
      - name: h2-tls-c10-m10
        tls: true              # every started target terminates TLS (one certificate, made
                               # with trustme for the run; the generator verifies it)
        protocol: h2           # http1 (default) or h2: HTTP/2 over TLS (ALPN h2)
        streams: 10            # h2: requests in flight per connection (h2load's -m)
        connections: 10

Targets of kind `url` are driven as they are (payload and delay cannot be set there) and have
no process to sample. TLS scenarios skip `direct` (the origin speaks cleartext) and `url`
targets (an http:// URL), each with its reason in the report. Durations accept "500ms", "10s", "1m".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veloxy.config.values import parse_duration, parse_size
from veloxy.lab.peers import PEERS

KINDS = ("direct", "veloxy", "url", *PEERS)


class SuiteError(ValueError):
    """The suite file has problems: one line per problem, each with its key path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        return "\n".join(f"{self.source}: {p}" for p in self.problems)


@dataclass(frozen=True)
class GcTuning:
    """The Python analogue of the study's GC section: freeze the start-up heap, raise gen0."""

    freeze: bool = False
    gen0: int | None = None

    @property
    def active(self) -> bool:
        return self.freeze or self.gen0 is not None


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kind: str
    url: str | None = None
    config: dict[str, Any] | None = None  # veloxy: a config document, upstreams filled in
    args: tuple[str, ...] = ()  # veloxy: extra `serve` flags
    env: tuple[tuple[str, str], ...] = ()
    gc: GcTuning = field(default_factory=GcTuning)

    @property
    def started(self) -> bool:
        """True when the lab starts a process for it (everything but direct and url)."""
        return self.kind not in ("direct", "url")


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    connections: int = 64
    rate: float | None = None
    duration: float = 5.0
    payload: int = 100
    keep_alive: bool = True
    workers: int = 1
    origin_delay: float = 0.0
    processes: int = 1  # load generator processes
    tls: bool = False  # the started targets terminate TLS; the generator speaks https://
    protocol: str = "http1"  # or "h2": HTTP/2 (over TLS: ALPN h2)
    streams: int = 1  # h2: requests in flight on each connection

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def path(self) -> str:
        """The request path asking the origin for this payload and delay."""
        query = f"/?size={self.payload}"
        if self.origin_delay:
            query += f"&delay={round(self.origin_delay * 1000)}ms"
        return query

    def describe(self) -> str:
        load = f"{self.rate:,.0f} req/s" if self.rate else "closed loop"
        conn = "keep-alive" if self.keep_alive else "close"
        extra = f", delay {self.origin_delay * 1000:g} ms" if self.origin_delay else ""
        wire = ("HTTP/2" + (f" x{self.streams} streams" if self.streams > 1 else "")
                if self.protocol == "h2" else "HTTP/1.1")
        wire += " over TLS" if self.tls else ""
        return (f"{wire}, c={self.connections}, {load}, {conn}, {self.payload} B, "
                f"{self.workers} worker(s){extra}")


@dataclass(frozen=True)
class Suite:
    name: str
    targets: tuple[TargetSpec, ...]
    scenarios: tuple[ScenarioSpec, ...]
    reference: str
    repetitions: int = 1
    warmup: float = 1.0
    pin: str = "none"
    origin_workers: int = 1
    source: str = ""
    description: str = ""

    def target(self, name: str) -> TargetSpec:
        return next(t for t in self.targets if t.name == name)

    def scaled(self, duration: float | None = None, repetitions: int | None = None,
               warmup: float | None = None) -> Suite:
        """The same suite with every scenario's duration (and the reps, warm-up) replaced:
        for tests and quick looks."""
        from dataclasses import replace

        scenarios = self.scenarios if duration is None else tuple(
            replace(s, duration=duration) for s in self.scenarios)
        return replace(self, scenarios=scenarios,
                       repetitions=self.repetitions if repetitions is None else repetitions,
                       warmup=self.warmup if warmup is None else warmup)

    def selected(self, scenarios: list[str] | None = None,
                 targets: list[str] | None = None) -> Suite:
        """The same suite with only the named scenarios and targets (in the file's order);
        the reference target stays in, since every ratio is to it. An unknown name is a
        SuiteError naming the flag and the names the file has."""
        from dataclasses import replace

        problems = []
        for flag, wanted, have in (("--scenarios", scenarios, [s.name for s in self.scenarios]),
                                   ("--targets", targets, [t.name for t in self.targets])):
            unknown = [name for name in wanted or () if name not in have]
            if unknown:
                problems.append(f"{flag}: no {', '.join(unknown)} in this suite (it has "
                                f"{', '.join(have)})")
        if problems:
            raise SuiteError(self.source or self.name, problems)
        keep_targets = None if targets is None else set(targets) | {self.reference}
        return replace(
            self,
            scenarios=tuple(s for s in self.scenarios if scenarios is None or s.name in scenarios),
            targets=tuple(t for t in self.targets
                          if keep_targets is None or t.name in keep_targets))


# -- parsing ------------------------------------------------------------------------------------


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, "expected a mapping")
            return {}
        return value

    def known(self, data: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else str(key),
                          f"unknown key (expected one of {', '.join(sorted(allowed))})")

    def integer(self, data: dict[str, Any], key: str, path: str, default: int,
                minimum: int = 1) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"{path}.{key}", f"expected an integer >= {minimum}, got {value!r}")
            return default
        return value

    def duration(self, data: dict[str, Any], key: str, path: str, default: float,
                 positive: bool = True) -> float:
        if key not in data:
            return default
        try:
            value = parse_duration(data[key])
        except ValueError as exc:
            self.fail(f"{path}.{key}", str(exc))
            return default
        if positive and value <= 0:
            self.fail(f"{path}.{key}", "must be longer than 0s")
            return default
        return value


_TOP = {"name", "description", "reference", "repetitions", "warmup", "pin", "origin",
        "targets", "scenarios"}
_TARGET = {"name", "kind", "url", "config", "args", "env", "gc"}
_SCENARIO = {"name", "connections", "rate", "duration", "payload", "keep_alive", "workers",
             "origin_delay", "processes", "tls", "protocol", "streams"}
PROTOCOLS = ("http1", "h2")


def parse_suite(data: object, source: str = "<suite>") -> Suite:
    """A YAML document (already loaded) -> Suite, or SuiteError listing every problem."""
    c = _Checker()
    top = c.mapping(data, "(top level)")
    c.known(top, "", _TOP)
    targets = [_target(c, raw, f"targets[{i}]") for i, raw in
               enumerate(_list(c, top.get("targets"), "targets"))]
    scenarios = [_scenario(c, raw, f"scenarios[{i}]") for i, raw in
                 enumerate(_list(c, top.get("scenarios"), "scenarios"))]
    for what, names_in in (("targets", [t.name for t in targets]),
                           ("scenarios", [s.name for s in scenarios])):
        seen: set[str] = set()
        for i, item_name in enumerate(names_in):
            if item_name in seen:
                c.fail(f"{what}[{i}].name", f"{item_name!r} is used twice")
            seen.add(item_name)
    names = [t.name for t in targets]
    reference = top.get("reference", names[0] if names else "")
    if names and reference not in names:
        c.fail("reference", f"{reference!r} is not a target (targets: {', '.join(names)})")
    pin = top.get("pin", "none")
    if pin not in ("none", "split"):
        c.fail("pin", f"expected none or split, got {pin!r}")
    origin = c.mapping(top.get("origin", {}), "origin")
    c.known(origin, "origin", {"workers"})
    suite = Suite(
        name=str(top.get("name") or Path(source).stem), targets=tuple(targets),
        scenarios=tuple(scenarios), reference=str(reference),
        repetitions=c.integer(top, "repetitions", "", 1),
        warmup=c.duration(top, "warmup", "", 1.0, positive=False), pin=str(pin),
        origin_workers=c.integer(origin, "workers", "origin", 1), source=source,
        description=str(top.get("description") or ""),
    )
    if c.problems:
        raise SuiteError(source, [p.lstrip(".") for p in c.problems])
    return suite


def _list(c: _Checker, value: object, path: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        c.fail(path, "expected a non-empty list")
        return []
    return value


def _target(c: _Checker, raw: object, path: str) -> TargetSpec:
    data = c.mapping(raw, path)
    c.known(data, path, _TARGET)
    name = str(data.get("name") or data.get("kind") or f"target{path}")
    kind = data.get("kind", name if name in KINDS else None)
    if kind not in KINDS:
        c.fail(f"{path}.kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
        kind = "url"
    url = data.get("url")
    if kind == "url":
        if not isinstance(url, str) or not url.startswith("http://"):
            c.fail(f"{path}.url", "a url target needs an http:// URL")
    elif url is not None:
        c.fail(f"{path}.url", f"only for kind url (this target is {kind})")
    config = data.get("config")
    if config is not None and (kind != "veloxy" or not isinstance(config, dict)):
        c.fail(f"{path}.config", "a mapping, for veloxy targets only")
        config = None
    args = data.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        c.fail(f"{path}.args", "expected a list of strings")
        args = []
    env = data.get("env", {})
    if not isinstance(env, dict):
        c.fail(f"{path}.env", "expected a mapping of names to values")
        env = {}
    gc_raw = c.mapping(data.get("gc", {}), f"{path}.gc")
    c.known(gc_raw, f"{path}.gc", {"freeze", "gen0"})
    gen0 = gc_raw.get("gen0")
    if gen0 is not None and (isinstance(gen0, bool) or not isinstance(gen0, int) or gen0 < 1):
        c.fail(f"{path}.gc.gen0", f"expected an integer >= 1, got {gen0!r}")
        gen0 = None
    if gc_raw and kind != "veloxy":
        c.fail(f"{path}.gc", "for veloxy targets only")
    return TargetSpec(name=name, kind=str(kind), url=url if isinstance(url, str) else None,
                      config=config, args=tuple(args),
                      env=tuple((str(k), str(v)) for k, v in env.items()),
                      gc=GcTuning(freeze=bool(gc_raw.get("freeze", False)), gen0=gen0))


def _scenario(c: _Checker, raw: object, path: str) -> ScenarioSpec:
    data = c.mapping(raw, path)
    c.known(data, path, _SCENARIO)
    rate = data.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                             or rate <= 0):
        c.fail(f"{path}.rate", f"expected a positive number of requests/s or null, got {rate!r}")
        rate = None
    payload = data.get("payload", 100)
    try:
        payload = parse_size(payload)
    except ValueError as exc:
        c.fail(f"{path}.payload", str(exc))
        payload = 100
    keep_alive = data.get("keep_alive", True)
    if not isinstance(keep_alive, bool):
        c.fail(f"{path}.keep_alive", f"expected true or false, got {keep_alive!r}")
        keep_alive = True
    connections = c.integer(data, "connections", path, 64)
    processes = c.integer(data, "processes", path, 1)
    if processes > connections:
        c.fail(f"{path}.processes", "more generator processes than connections")
    tls = data.get("tls", False)
    if not isinstance(tls, bool):
        c.fail(f"{path}.tls", f"expected true or false, got {tls!r}")
        tls = False
    protocol = data.get("protocol", "http1")
    if protocol not in PROTOCOLS:
        c.fail(f"{path}.protocol", f"expected http1 or h2, got {protocol!r}")
        protocol = "http1"
    streams = c.integer(data, "streams", path, 1)
    if protocol == "h2":
        if not tls:
            c.fail(f"{path}.protocol", "h2 is HTTP/2 over TLS here: add tls: true (h2c "
                   "scenarios are not supported)")
        if not keep_alive:
            c.fail(f"{path}.keep_alive", "HTTP/2 keeps its connections open (many streams "
                   "each): drop keep_alive: false")
    elif streams > 1:
        c.fail(f"{path}.streams", "several streams per connection is HTTP/2: add "
               "protocol: h2 (HTTP/1.1 has one request in flight)")
    return ScenarioSpec(
        name=str(data.get("name") or path), connections=connections,
        rate=float(rate) if rate is not None else None,
        duration=c.duration(data, "duration", path, 5.0), payload=payload,
        keep_alive=keep_alive, workers=c.integer(data, "workers", path, 1),
        origin_delay=c.duration(data, "origin_delay", path, 0.0, positive=False),
        processes=processes, tls=tls, protocol=str(protocol), streams=streams,
    )


def load_suite(path: str | Path) -> Suite:
    """Read a suite file; SuiteError for a missing file, bad YAML or bad content."""
    import yaml

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(source, [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SuiteError(source, [f"not valid YAML: {exc}"]) from None
    return parse_suite(data, source)
