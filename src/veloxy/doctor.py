"""`veloxy doctor`: the operating-system settings that limit a proxy, and what to change.

Why: most "the proxy is slow" reports on a fresh machine are not the proxy. A listen backlog
capped at 128 turns a burst of connects into 1 s SYN retransmits (the max latency column of
every benchmark), 1024 file descriptors stop a proxy at ~500 clients, a small ephemeral port
range plus TIME_WAIT makes upstream connects fail under churn, and a CPU quota below the
worker count throttles the whole cgroup every 100 ms. Each of those is one command to fix,
once somebody says which. With `--config`, the file's `tuning:` section is checked too: a
backlog shorter than the planned connections, and fixed socket buffer sizes above
net.core.rmem_max / wmem_max (the kernel cuts them silently).

Shape (so the checks are testable without the machine they describe):

    reader (LinuxReader: /proc/sys, resource, /proc/net/sockstat;  WindowsReader: winreg)
        -> readings (plain frozen dataclasses: numbers, None when unknown)
    Plan (what the proxy will be asked to carry: connections, workers, upstream pools)
    checks: pure functions (readings, plan) -> Finding(ok | warn | fail, current,
            recommended, why, command)
    render: a rich table, or --json

Exit status: 0 when nothing fails (warnings included), 1 when a check fails. "fail" is kept
for settings that break the planned load outright (too few descriptors or ports, a
select()-based loop on Windows); everything that costs latency or headroom is "warn".
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from veloxy.config import DEFAULT_BACKLOG

Status = Literal["ok", "warn", "fail"]

#: Descriptors a process needs beyond its connections: listeners, the loop's own, logs, pipes.
FD_MARGIN = 64
#: The study's figure (1000 connections), used when neither --connections nor a config says.
DEFAULT_CONNECTIONS = 1000
PERSIST_FILE = "/etc/sysctl.d/90-veloxy.conf"
TCPIP_KEY = r"SYSTEM\CurrentControlSet\Services\Tcpip\Parameters"
#: Windows defaults when a registry value is absent (Vista and later).
WINDOWS_DYNAMIC_PORTS = 16384  # 49152-65535
WINDOWS_TIME_WAIT_DEFAULT = 120
#: select() on Windows handles at most 512 sockets (FD_SETSIZE as CPython builds it).
WINDOWS_SELECT_LIMIT = 512


@dataclass(frozen=True)
class Finding:
    """One check's verdict; `command` is what to run when the status is not ok."""

    check: str
    status: Status
    current: str
    recommended: str
    why: str
    command: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """The load the proxy is planned for, from --connections/--workers or a config file.

    `upstream_per_server` is the most connections one worker may open to one upstream server
    (the pool's max_connections, but never more than the clients that can need one);
    `upstream_loopback` says whether every upstream is on this machine (tcp_tw_reuse=2
    then suffices).
    """

    connections: int = DEFAULT_CONNECTIONS
    workers: int = 1
    workers_auto: bool = False
    upstream_servers: int = 1
    upstream_per_server: int = DEFAULT_CONNECTIONS
    upstream_loopback: bool = False
    source: str = "defaults"
    #: tuning.backlog, and the largest SO_RCVBUF / SO_SNDBUF configured on either side
    #: (tuning.downstream / tuning.upstream; None = the kernel's autotuning).
    backlog: int = DEFAULT_BACKLOG
    recv_buffer: int | None = None
    send_buffer: int | None = None
    #: limits.max_connections (None: sized from RLIMIT_NOFILE at start, net/accept.py).
    max_connections: int | None = None

    @property
    def clients_per_worker(self) -> int:
        # SO_REUSEPORT spreads connections by a hash of the 4-tuple, not evenly: allow 25 %.
        if self.workers <= 1:
            return self.connections
        return min(self.connections, math.ceil(self.connections / self.workers * 1.25))

    @property
    def fds_per_worker(self) -> int:
        upstream = min(self.clients_per_worker, self.upstream_per_server) * self.upstream_servers
        return self.clients_per_worker + upstream + FD_MARGIN

    @property
    def ports_per_upstream(self) -> int:
        """Ephemeral ports the proxy needs toward one upstream server (all workers); never
        more than the clients, since each client needs at most one upstream connection."""
        return min(self.connections,
                   self.workers * min(self.clients_per_worker, self.upstream_per_server))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(fds_per_worker=self.fds_per_worker,
                    ports_per_upstream=self.ports_per_upstream)
        return data


def plan_from(config_path: str | None, connections: int | None,
              workers: str | None) -> Plan:
    """The Plan for the command-line flags; a config file gives workers and upstream pools."""
    from veloxy.config import resolve_workers

    conns = connections if connections is not None else DEFAULT_CONNECTIONS
    if config_path is None:
        value = workers or "1"
        return Plan(connections=conns, workers=resolve_workers(value),
                    workers_auto=value == "auto", upstream_per_server=conns,
                    source="flags" if connections is not None or workers else "defaults")
    from veloxy.config import load_config

    config = load_config(config_path)
    raw_workers: Any = workers if workers is not None else config.workers
    servers = [(s, g.pool.max_connections) for g in config.upstreams.values()
               for s in g.servers]
    loopback = bool(servers) and all(_is_loopback(_server_host(s)) for s, _ in servers)
    per_server = max((cap for _, cap in servers), default=conns)
    sides = (config.tuning.downstream, config.tuning.upstream)
    return Plan(connections=conns, workers=resolve_workers(raw_workers),
                workers_auto=raw_workers == "auto", upstream_servers=max(1, len(servers)),
                upstream_per_server=min(conns, per_server), upstream_loopback=loopback,
                source=config_path, backlog=config.tuning.backlog,
                recv_buffer=max((s.recv_buffer for s in sides if s.recv_buffer), default=None),
                send_buffer=max((s.send_buffer for s in sides if s.send_buffer), default=None),
                max_connections=config.limits.max_connections)


def _server_host(server: Any) -> str:
    return str(getattr(server, "host", ""))


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


# -- Linux --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinuxReadings:
    """What a Linux machine says; None where it could not be read."""

    somaxconn: int | None = None
    tcp_max_syn_backlog: int | None = None
    port_range: tuple[int, int] | None = None
    tcp_tw_reuse: int | None = None
    tcp_fin_timeout: int | None = None
    file_max: int | None = None
    nr_open: int | None = None
    nofile_soft: int | None = None
    nofile_hard: int | None = None
    usable_cpus: int = 1
    cpu_quota: float | None = None
    loop: str = "asyncio"
    httptools: str | None = None  # its version, None when missing
    fast_lane: str | None = None  # "on", or why it is off (None: not built)
    hpack_lane: str | None = None  # the same for the C HPACK lane (HTTP/2)
    time_wait: int | None = None
    rmem_max: int | None = None
    wmem_max: int | None = None


class LinuxReader:
    """Reads LinuxReadings from /proc (a different root for tests) and `resource`."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc

    def _int(self, relative: str) -> int | None:
        try:
            return int((self.proc / relative).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def port_range(self) -> tuple[int, int] | None:
        try:
            low, high = (self.proc / "sys/net/ipv4/ip_local_port_range").read_text().split()
            return int(low), int(high)
        except (OSError, ValueError):
            return None

    def time_wait(self) -> int | None:
        """TIME_WAIT sockets (IPv4 and IPv6 share the count), from /proc/net/sockstat."""
        try:
            text = (self.proc / "net/sockstat").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("TCP:"):
                words = line.split()
                if "tw" in words:
                    return int(words[words.index("tw") + 1])
        return None

    def read(self) -> LinuxReadings:
        from veloxy.config.cpus import cgroup_cpu_limit, usable_cpus
        from veloxy.net.loop import loop_name

        soft = hard = None
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ImportError, OSError, ValueError):
            pass
        return LinuxReadings(
            somaxconn=self._int("sys/net/core/somaxconn"),
            tcp_max_syn_backlog=self._int("sys/net/ipv4/tcp_max_syn_backlog"),
            port_range=self.port_range(),
            tcp_tw_reuse=self._int("sys/net/ipv4/tcp_tw_reuse"),
            tcp_fin_timeout=self._int("sys/net/ipv4/tcp_fin_timeout"),
            file_max=self._int("sys/fs/file-max"),
            nr_open=self._int("sys/fs/nr_open"),
            nofile_soft=_unlimited(soft), nofile_hard=_unlimited(hard),
            usable_cpus=usable_cpus(self.proc / "self"),
            cpu_quota=cgroup_cpu_limit(self.proc / "self"),
            loop=_safe_loop_name(loop_name),
            httptools=_httptools_version(),
            fast_lane=fast_lane_state(),
            hpack_lane=hpack_lane_state(),
            time_wait=self.time_wait(),
            rmem_max=self._int("sys/net/core/rmem_max"),
            wmem_max=self._int("sys/net/core/wmem_max"),
        )


def _unlimited(value: int | None) -> int | None:
    """RLIM_INFINITY (-1) as a very large number, so comparisons stay simple."""
    if value is None:
        return None
    return 2**62 if value < 0 else value


def _safe_loop_name(loop_name: Callable[[], str]) -> str:
    try:
        return loop_name()
    except RuntimeError as exc:  # VELOXY_LOOP=uvloop without uvloop
        return f"error: {exc}"


def _httptools_version() -> str | None:
    try:
        import httptools
    except ImportError:
        return None
    return str(getattr(httptools, "__version__", "installed"))


def _sysctl(name: str, value: str) -> str:
    return (f'sudo sysctl -w {name}="{value}" && echo "{name} = {value}" | '
            f"sudo tee -a {PERSIST_FILE}")


def check_somaxconn(r: LinuxReadings, plan: Plan) -> Finding:
    name = "net.core.somaxconn"
    backlog = plan.backlog
    why = (f"caps the listen backlog veloxy asks for ({backlog}, tuning.backlog); a burst of "
           "connects beyond it is dropped and retried by the client after 1 s, which shows "
           "as max latency")
    if r.somaxconn is None:
        return Finding(name, "warn", "unknown", f">= {backlog}", why)
    need = min(backlog, max(plan.connections, 128))
    ok = r.somaxconn >= backlog or r.somaxconn >= plan.connections
    return Finding(name, "ok" if ok else "warn", str(r.somaxconn), f">= {need}", why,
                   None if ok else _sysctl(name, str(backlog)))


def check_backlog(r: LinuxReadings, plan: Plan) -> Finding:
    """The config's own listen backlog against the planned connections (any platform)."""
    name = "tuning.backlog"
    need = min(DEFAULT_BACKLOG, plan.connections)
    why = (f"the accept queue of each listener; {plan.connections} clients connecting at "
           "once (a restart, a load balancer reconnecting) overflow a shorter one, and each "
           "dropped connect waits 1 s for its retry")
    ok = plan.backlog >= need
    return Finding(name, "ok" if ok else "warn", str(plan.backlog), f">= {need}", why,
                   None if ok else f"set `tuning: {{backlog: {DEFAULT_BACKLOG}}}` in "
                   f"{plan.source if plan.source not in ('flags', 'defaults') else 'the config'}")


def _check_buffer_max(name: str, limit: int | None, wanted: int | None, key: str,
                      option: str) -> Finding:
    if wanted is None:
        current = "unknown" if limit is None else str(limit)
        return Finding(name, "ok", current, f"no {key} configured",
                       f"caps {option}; no buffer size is configured (tuning.*.{key}), so "
                       "the kernel autotunes each socket's buffer and this limit is not used")
    why = (f"caps {option}: a tuning.*.{key} of {wanted} above it is silently cut to it")
    command = _sysctl(name, str(wanted))
    if limit is None:
        return Finding(name, "warn", "unknown", f">= {wanted}", why, command)
    ok = limit >= wanted
    return Finding(name, "ok" if ok else "warn", str(limit), f">= {wanted}", why,
                   None if ok else command)


def check_rmem_max(r: LinuxReadings, plan: Plan) -> Finding:
    return _check_buffer_max("net.core.rmem_max", r.rmem_max, plan.recv_buffer,
                             "recv_buffer", "SO_RCVBUF")


def check_wmem_max(r: LinuxReadings, plan: Plan) -> Finding:
    return _check_buffer_max("net.core.wmem_max", r.wmem_max, plan.send_buffer,
                             "send_buffer", "SO_SNDBUF")


def check_syn_backlog(r: LinuxReadings, plan: Plan) -> Finding:
    name = "net.ipv4.tcp_max_syn_backlog"
    why = ("half-open connections the kernel queues per listener; when full (and without "
           "syncookies) new SYNs are dropped and the client waits 1-3 s to retry")
    if r.tcp_max_syn_backlog is None:
        return Finding(name, "warn", "unknown", f">= {DEFAULT_BACKLOG}", why)
    need = min(DEFAULT_BACKLOG, max(plan.connections, 128))
    ok = r.tcp_max_syn_backlog >= need
    return Finding(name, "ok" if ok else "warn", str(r.tcp_max_syn_backlog), f">= {need}",
                   why, None if ok else _sysctl(name, str(DEFAULT_BACKLOG)))


def check_port_range(r: LinuxReadings, plan: Plan) -> Finding:
    name = "net.ipv4.ip_local_port_range"
    need = plan.ports_per_upstream
    why = (f"every upstream connection takes an ephemeral port per destination: {need} "
           f"planned to each upstream server ({plan.workers} worker(s)), and a closed one "
           "keeps its port in TIME_WAIT for 60 s, so churn needs headroom")
    command = _sysctl(name, "1024 65535")
    if r.port_range is None:
        return Finding(name, "warn", "unknown", f">= {2 * need} ports", why, command)
    low, high = r.port_range
    size = high - low + 1
    current = f"{low}-{high} ({size} ports)"
    return _grade_ports(name, size, need, current, why, command)


def _grade_ports(name: str, ports: int, need: int, current: str, why: str,
                 command: str) -> Finding:
    """Ephemeral ports against the connections planned: fewer than needed fails, fewer than
    twice as many (room for TIME_WAIT) warns; Linux and Windows alike."""
    wanted = f">= {2 * need} ports"
    if ports < need:
        return Finding(name, "fail", current, wanted, why, command)
    if ports < 2 * need:
        return Finding(name, "warn", current, wanted, why, command)
    return Finding(name, "ok", current, wanted, why)


def check_tw_reuse(r: LinuxReadings, plan: Plan) -> Finding:
    name = "net.ipv4.tcp_tw_reuse"
    why = ("lets a new outgoing (upstream) connection reuse a port still in TIME_WAIT when "
           "TCP timestamps make it safe; 2 (the kernel default) does so for loopback only")
    command = _sysctl(name, "1")
    value = r.tcp_tw_reuse
    if value is None:
        return Finding(name, "warn", "unknown", "1", why, command)
    if value == 1 or (value == 2 and plan.upstream_loopback):
        return Finding(name, "ok", str(value), "1" if value == 1 else "1 or 2", why)
    return Finding(name, "warn", str(value), "1", why, command)


def check_fin_timeout(r: LinuxReadings, plan: Plan) -> Finding:
    name = "net.ipv4.tcp_fin_timeout"
    why = ("how long a connection we closed waits in FIN_WAIT_2 for a peer that vanished; "
           "at 60 s, clients that disappear hold sockets and memory for a minute")
    if r.tcp_fin_timeout is None:
        return Finding(name, "warn", "unknown", "<= 30", why)
    ok = r.tcp_fin_timeout <= 30
    return Finding(name, "ok" if ok else "warn", f"{r.tcp_fin_timeout} s", "<= 30 s", why,
                   None if ok else _sysctl(name, "15"))


def check_file_max(r: LinuxReadings, plan: Plan) -> Finding:
    name = "fs.file-max"
    need = plan.fds_per_worker * plan.workers
    why = (f"descriptors for the whole system; the proxy alone needs about {need} "
           f"({plan.workers} worker(s) x {plan.fds_per_worker}: clients, upstream "
           "connections and a margin)")
    command = _sysctl(name, str(max(need * 4, 1_048_576)))
    if r.file_max is None:
        return Finding(name, "warn", "unknown", f">= {need * 4}", why, command)
    if r.file_max < need:
        return Finding(name, "fail", str(r.file_max), f">= {need * 4}", why, command)
    if r.file_max < need * 4:
        return Finding(name, "warn", str(r.file_max), f">= {need * 4}", why, command)
    return Finding(name, "ok", str(r.file_max), f">= {need * 4}", why)


def check_nofile(r: LinuxReadings, plan: Plan) -> Finding:
    name = "ulimit -n (RLIMIT_NOFILE)"
    need = plan.fds_per_worker
    why = (f"descriptors per process: each worker needs about {need} "
           f"({plan.clients_per_worker} clients + their upstream connections + {FD_MARGIN}); "
           "past the limit accept() fails with EMFILE and clients see resets")
    soft, hard = r.nofile_soft, r.nofile_hard
    if soft is None:
        return Finding(name, "warn", "unknown", f">= {need}", why, f"ulimit -n {need}")
    shown = f"soft {_fmt_limit(soft)}, hard {_fmt_limit(hard)}"
    if soft >= need:
        return Finding(name, "ok", shown, f">= {need}", why)
    want = max(need, 65536)
    if hard is not None and hard >= need:
        command = (f"ulimit -n {min(want, hard)}  (in the shell or unit that starts veloxy; "
                   f"systemd: LimitNOFILE={want})")
    else:
        cap = f" (fs.nr_open is {r.nr_open})" if r.nr_open is not None else ""
        command = (f"raise the hard limit{cap}: /etc/security/limits.conf "
                   f"'* - nofile {want}' or systemd LimitNOFILE={want}, then ulimit -n {want}")
    return Finding(name, "fail", shown, f">= {need}", why, command)


def check_max_connections(r: LinuxReadings, plan: Plan) -> Finding:
    """limits.max_connections against `ulimit -n`: each client connection may need an
    upstream one beside it (to each upstream server at most the pool's cap), plus the
    process's own descriptors; beyond the limit accept() fails with EMFILE."""
    from veloxy.net.accept import default_max_connections

    name = "limits.max_connections vs ulimit -n"
    soft = r.nofile_soft
    if plan.max_connections is None:
        if soft is None or soft >= 2**62:
            return Finding(name, "ok", "default (no descriptor limit)", "-",
                           "the default follows the descriptor limit")
        cap = default_max_connections(soft)
        return Finding(name, "ok", f"default: {cap} per worker ((nofile - 64) // 2)",
                       f"<= {soft} descriptors", "sized from ulimit -n at start, leaving "
                       "one descriptor per client for its upstream connection")
    cap = plan.max_connections
    upstream = min(cap, plan.upstream_per_server) * plan.upstream_servers
    need = cap + upstream + FD_MARGIN
    current = f"{cap} per worker (needs about {need} descriptors: {cap} clients + " \
              f"{upstream} upstream + {FD_MARGIN})"
    why = ("past the descriptor limit accept() fails with EMFILE (veloxy then backs off) "
           "and proxied requests fail for want of an upstream connection")
    if soft is None:
        return Finding(name, "warn", current, f"ulimit -n >= {need}", why)
    if soft >= need:
        return Finding(name, "ok", current, f"ulimit -n >= {need}", why)
    fits = max(16, (soft - FD_MARGIN) // (1 + plan.upstream_servers))
    return Finding(name, "warn", current, f"ulimit -n >= {need}", why,
                   f"ulimit -n {need}, or limits.max_connections: {fits}, or leave it out "
                   "(sized from ulimit -n)")


def _fmt_limit(value: int | None) -> str:
    if value is None:
        return "unknown"
    return "unlimited" if value >= 2**62 else str(value)


def check_cpu(r: LinuxReadings, plan: Plan) -> Finding:
    name = "CPU quota vs workers"
    quota = "no quota" if r.cpu_quota is None else f"quota {r.cpu_quota:g} CPUs"
    current = f"{plan.workers} worker(s); {r.usable_cpus} usable CPU(s), {quota}"
    why = ("more busy workers than the CPUs the cgroup may use makes the kernel throttle the "
           "whole group every 100 ms period: a latency spike at p99 and max each time")
    if plan.workers > r.usable_cpus:
        return Finding(name, "warn", current, f"workers <= {r.usable_cpus}", why,
                       f"workers: auto (or --workers {r.usable_cpus})")
    if r.cpu_quota is not None and r.cpu_quota != math.floor(r.cpu_quota):
        return Finding(name, "warn", current, f"a whole number of CPUs ({math.ceil(r.cpu_quota)})",
                       "a fractional quota leaves a worker that is throttled part of every "
                       "period; veloxy rounds down, so the fraction is paid for and unused",
                       f"docker update --cpus {math.ceil(r.cpu_quota)} CONTAINER "
                       "(or the orchestrator's CPU limit)")
    return Finding(name, "ok", current, f"workers <= {r.usable_cpus}", why)


def check_loop(r: LinuxReadings, plan: Plan) -> Finding:
    name = "event loop"
    why = ("uvloop (libuv) roughly halves the loop's share of each request's CPU against the "
           "stdlib selector loop")
    if r.loop == "uvloop":
        return Finding(name, "ok", "uvloop", "uvloop", why)
    if r.loop.startswith("error"):
        return Finding(name, "fail", r.loop, "uvloop", why, "pip install uvloop")
    forced = os.environ.get("VELOXY_LOOP", "").strip().lower() == "asyncio"
    return Finding(name, "warn", r.loop, "uvloop", why,
                   "unset VELOXY_LOOP" if forced else "pip install uvloop")


def check_httptools(r: LinuxReadings | WindowsReadings, plan: Plan) -> Finding:
    name = "httptools (llhttp parser)"
    why = "veloxy parses HTTP/1.1 with llhttp through httptools; without it nothing runs"
    if r.httptools is None:
        return Finding(name, "fail", "missing", "installed", why, "pip install httptools")
    return Finding(name, "ok", r.httptools, "installed", why)


def _lane_state(in_use: bool, module: object) -> str | None:
    """"on", "off: VELOXY_PURE_PYTHON is set", or None when the C extension is not built."""
    if in_use:
        return "on"
    if module is not None:
        return "off: VELOXY_PURE_PYTHON is set"
    return None


def _lane_finding(name: str, why: str, state: str | None,
                  r: LinuxReadings | WindowsReadings) -> Finding:
    if state == "on":
        return Finding(name, "ok", "on", "on", why)
    if state is not None:
        return Finding(name, "warn", state, "on", why, "unset VELOXY_PURE_PYTHON")
    return Finding(name, "warn", "not built", "on", why, _build_command(r))


def fast_lane_state() -> str | None:
    """The HTTP/1.1 fast lane's (h1/_fastpath): see _lane_state."""
    from veloxy.h1 import parser

    return _lane_state(parser.FAST_LANE, parser._fastpath)


def check_fast_lane(r: LinuxReadings | WindowsReadings, plan: Plan) -> Finding:
    name = "C fast lane (h1/_fastpath)"
    why = ("heads of the common case parsed in C: less CPU per proxied request than the "
           "Python parsers alone (docs/BENCHMARKS.md, \"The C fast lane\")")
    return _lane_finding(name, why, r.fast_lane, r)


def _build_command(r: LinuxReadings | WindowsReadings) -> str:
    """How to get the C extensions (both lanes) built."""
    compiler = ("the Microsoft C++ Build Tools" if isinstance(r, WindowsReadings)
                else "a C compiler and the Python headers (Debian: apt-get install gcc "
                     "python3-dev)")
    return (f"install {compiler}, then reinstall veloxy (pip install --force-reinstall "
            "--no-deps --no-binary veloxy veloxy, or pip install -e . in a checkout)")


def hpack_lane_state() -> str | None:
    """The C HPACK lane's (http2/_hpack): see _lane_state."""
    from veloxy.http2 import hpack_lane

    return _lane_state(hpack_lane.HPACK_LANE, hpack_lane._hpack)


def check_hpack_lane(r: LinuxReadings | WindowsReadings, plan: Plan) -> Finding:
    name = "C HPACK lane (http2/_hpack)"
    why = ("HTTP/2 header blocks decoded and encoded in C: less CPU per HTTP/2 request than "
           "hpack's Python code (docs/BENCHMARKS.md, \"HTTP/2: where the CPU goes and the C "
           "HPACK lane\")")
    return _lane_finding(name, why, r.hpack_lane, r)


def check_time_wait(r: LinuxReadings, plan: Plan) -> Finding:
    name = "TIME_WAIT sockets now"
    why = ("sockets closed in the last 60 s; near the ephemeral port range they make new "
           "upstream connects fail with EADDRNOTAVAIL")
    if r.time_wait is None:
        return Finding(name, "ok", "unknown", "well below the port range", why)
    size = (r.port_range[1] - r.port_range[0] + 1) if r.port_range else 28232
    ok = r.time_wait < size // 2
    return Finding(name, "ok" if ok else "warn", str(r.time_wait), f"< {size // 2}", why,
                   None if ok else "find the churn: ss -tan state time-wait | "
                   "awk '{print $4}' | sort | uniq -c | sort -rn | head; then "
                   + _sysctl("net.ipv4.tcp_tw_reuse", "1"))


LINUX_CHECKS: tuple[Callable[[LinuxReadings, Plan], Finding], ...] = (
    check_somaxconn, check_syn_backlog, check_port_range, check_tw_reuse, check_fin_timeout,
    check_file_max, check_nofile, check_max_connections, check_cpu, check_loop,
    check_httptools, check_fast_lane, check_hpack_lane,
    check_time_wait,
    check_backlog, check_rmem_max, check_wmem_max,
)


# -- Windows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowsReadings:
    """Tcpip\\Parameters registry values (None = absent: the default applies) and the loop."""

    max_user_port: int | None = None
    tcp_timed_wait_delay: int | None = None
    tcp_num_connections: int | None = None
    loop: str = "ProactorEventLoop"
    httptools: str | None = None
    fast_lane: str | None = None
    hpack_lane: str | None = None


class WindowsReader:
    """Reads WindowsReadings; `query(name) -> int | None` is injectable (winreg by default)."""

    def __init__(self, query: Callable[[str], int | None] | None = None) -> None:
        self.query = query or _winreg_query

    def read(self) -> WindowsReadings:
        return WindowsReadings(
            max_user_port=self.query("MaxUserPort"),
            tcp_timed_wait_delay=self.query("TcpTimedWaitDelay"),
            tcp_num_connections=self.query("TcpNumConnections"),
            loop=windows_loop_class(),
            httptools=_httptools_version(),
            fast_lane=fast_lane_state(),
            hpack_lane=hpack_lane_state(),
        )


def _winreg_query(name: str) -> int | None:
    try:
        import winreg
    except ImportError:
        return None
    reg: Any = winreg  # its functions exist on Windows only; typed as Any elsewhere
    try:
        with reg.OpenKey(reg.HKEY_LOCAL_MACHINE, TCPIP_KEY) as key:
            value, _kind = reg.QueryValueEx(key, name)
            return int(value)
    except (OSError, ValueError, TypeError):
        return None


def windows_loop_class() -> str:
    """The class of the loop veloxy would run on (ProactorEventLoop = IOCP)."""
    from veloxy.net.loop import new_event_loop

    try:
        loop = new_event_loop()
    except RuntimeError as exc:
        return f"error: {exc}"
    try:
        return type(loop).__name__
    finally:
        loop.close()


def _reg(name: str, value: int) -> str:
    return (f'reg add "HKLM\\{TCPIP_KEY}" /v {name} /t REG_DWORD /d {value} /f  '
            "(then reboot)")


def check_max_user_port(r: WindowsReadings, plan: Plan) -> Finding:
    name = "MaxUserPort"
    need = plan.ports_per_upstream
    why = (f"ephemeral ports for outgoing (upstream) connections: {need} planned per upstream "
           "server, and each closed one stays in TIME_WAIT; absent = the dynamic range "
           f"(49152-65535, {WINDOWS_DYNAMIC_PORTS} ports)")
    command = ("netsh int ipv4 set dynamicport tcp start=10000 num=55535  (or "
               + _reg(name, 65534) + ")")
    ports = (r.max_user_port - 1024 + 1) if r.max_user_port is not None else \
        WINDOWS_DYNAMIC_PORTS
    current = ("not set (dynamic range, 16384 ports)" if r.max_user_port is None
               else f"{r.max_user_port} ({ports} ports)")
    return _grade_ports(name, ports, need, current, why, command)


def check_timed_wait_delay(r: WindowsReadings, plan: Plan) -> Finding:
    name = "TcpTimedWaitDelay"
    why = ("seconds a closed connection holds its port in TIME_WAIT; with the default, upstream "
           "churn exhausts the port range in minutes")
    value = r.tcp_timed_wait_delay
    current = (f"not set (default {WINDOWS_TIME_WAIT_DEFAULT} s)" if value is None
               else f"{value} s")
    effective = WINDOWS_TIME_WAIT_DEFAULT if value is None else value
    if effective <= 60:
        return Finding(name, "ok", current, "30-60 s", why)
    return Finding(name, "warn", current, "30 s", why, _reg(name, 30))


def check_num_connections(r: WindowsReadings, plan: Plan) -> Finding:
    name = "TcpNumConnections"
    need = (plan.connections + plan.ports_per_upstream * plan.upstream_servers) + FD_MARGIN
    why = (f"the most TCP connections open at once on the machine; the proxy plans about {need} "
           "(clients plus upstream connections); absent = 16,777,214")
    value = r.tcp_num_connections
    current = "not set (16777214)" if value is None else str(value)
    if value is not None and value < need:
        return Finding(name, "fail", current, f">= {need}", why, _reg(name, 16777214))
    return Finding(name, "ok", current, f">= {need}", why)


def check_windows_loop(r: WindowsReadings, plan: Plan) -> Finding:
    name = "event loop (IOCP)"
    why = ("on Windows the Proactor loop uses I/O completion ports; the selector loop uses "
           f"select(), limited to {WINDOWS_SELECT_LIMIT} sockets and O(n) per wake-up")
    if "Proactor" in r.loop:
        return Finding(name, "ok", r.loop, "ProactorEventLoop", why)
    status: Status = "fail" if plan.connections * 2 >= WINDOWS_SELECT_LIMIT or \
        r.loop.startswith("error") else "warn"
    return Finding(name, status, r.loop, "ProactorEventLoop", why,
                   "unset VELOXY_LOOP and do not set a selector event loop policy")


WINDOWS_CHECKS: tuple[Callable[[WindowsReadings, Plan], Finding], ...] = (
    check_max_user_port, check_timed_wait_delay, check_num_connections, check_windows_loop,
    check_httptools, check_fast_lane, check_hpack_lane,
)


# -- running and reporting ----------------------------------------------------------------------


@dataclass
class Report:
    platform: str
    plan: Plan
    findings: list[Finding] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(f.status == "fail" for f in self.findings) else 0

    def to_json(self) -> dict[str, Any]:
        counts = {s: sum(1 for f in self.findings if f.status == s) for s in ("ok", "warn",
                                                                             "fail")}
        return {"format": "veloxy-doctor", "version": 1, "platform": self.platform,
                "plan": self.plan.to_json(), "findings": [f.to_json() for f in self.findings],
                "summary": counts, "exit_code": self.exit_code}


def diagnose_linux(readings: LinuxReadings, plan: Plan) -> list[Finding]:
    return [check(readings, plan) for check in LINUX_CHECKS]


def diagnose_windows(readings: WindowsReadings, plan: Plan) -> list[Finding]:
    return [check(readings, plan) for check in WINDOWS_CHECKS]


def diagnose(plan: Plan, platform: str | None = None) -> Report:
    """Read this machine (Linux or Windows) and run every check for its platform."""
    platform = platform or sys.platform
    if platform == "win32":
        return Report("windows", plan, diagnose_windows(WindowsReader().read(), plan))
    return Report("linux" if platform.startswith("linux") else platform, plan,
                  diagnose_linux(LinuxReader().read(), plan))


_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def render(report: Report, console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    p = report.plan
    title = escape(f"veloxy doctor ({report.platform}): planned for {p.connections} "
                   f"connections, {p.workers} worker(s) from {p.source}")
    table = Table(title=title, show_lines=False)
    for name in ("check", "status", "current", "recommended", "why"):
        table.add_column(name, overflow="fold")
    for f in report.findings:
        table.add_row(escape(f.check), f"[{_STYLE[f.status]}]{f.status}[/]", escape(f.current),
                      escape(f.recommended), escape(f.why))
    console.print(table)
    todo = [f for f in report.findings if f.status != "ok" and f.command]
    if todo:
        console.print("To change:")
        for f in todo:
            console.print(f"  [{_STYLE[f.status]}]{escape(f.check)}[/]: {escape(f.command or '')}",
                          soft_wrap=True, highlight=False)
    summary = report.to_json()["summary"]
    console.print(f"{summary['ok']} ok, {summary['warn']} warn, {summary['fail']} fail")


def run_doctor(config: str | None, connections: int | None, workers: str | None,
               as_json: bool, out: Any = None) -> int:
    """`veloxy doctor`; returns the exit code (0, or 1 when a check fails)."""
    if connections is not None and connections < 1:
        print("veloxy doctor: --connections must be at least 1", file=sys.stderr)
        return 2
    try:
        plan = plan_from(config, connections, workers)
    except ValueError as exc:
        print(f"veloxy doctor: {exc}", file=sys.stderr)
        return 2
    report = diagnose(plan)
    stream = out or sys.stdout
    if as_json:
        json.dump(report.to_json(), stream, indent=2)
        stream.write("\n")
    else:
        from rich.console import Console

        console = Console(file=stream, width=None if stream.isatty() else 140)
        render(report, console)
    return report.exit_code
