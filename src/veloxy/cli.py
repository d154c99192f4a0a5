"""The `veloxy` command line.

Each subcommand is a small function that turns arguments into a call of the package: the
work itself lives elsewhere (serving.py, workers.py, origin.py, demo.py). Errors a user can
fix print one clear message and exit 2; no traceback unless --debug.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from veloxy import __version__
from veloxy.errors import ConfigError

EXIT_USAGE = 2

EPILOG = """\
examples:
  veloxy demo                                  measure direct vs proxied on this machine
  veloxy origin --listen 127.0.0.1:9001        a test backend (?size=16k&delay=50ms&status=404)
  veloxy serve --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9001
  veloxy serve --config veloxy.yaml --workers auto
  veloxy serve --config veloxy.yaml --watch    reload when the file changes
  veloxy check veloxy.yaml                     validate a config file (exit 2 on errors)

environment:
  VELOXY_LOOP=asyncio|uvloop                   force the event loop (default: uvloop if installed)
  VELOXY_PURE_PYTHON=1                         parse HTTP/1.1 with llhttp alone and HPACK with
                                               hpack alone, without the C fast lanes
                                               (`veloxy doctor` says if HTTP/1.1's is on)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veloxy",
        description="A fast HTTP reverse proxy with its own load generator and performance lab.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veloxy {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the reverse proxy",
        description="Run the reverse proxy. Flags alone build one route \"/\" to one upstream "
        "group of the --upstream URLs; with --config they override the file's listen, "
        "workers, workers_mode and admin.",
    )
    serve.add_argument("--config", "-c", metavar="FILE", help="YAML config file")
    serve.add_argument("--listen", "-l", metavar="HOST:PORT", action="append",
                       help="address to listen on (repeatable; default 127.0.0.1:8080)")
    serve.add_argument("--upstream", "-u", metavar="URL", action="append",
                       help="upstream server, e.g. http://127.0.0.1:9001 (repeatable)")
    serve.add_argument("--workers", "-w", metavar="N|auto",
                       help="worker processes (default 1; auto = usable CPUs)")
    serve.add_argument("--workers-mode", choices=["auto", "fork", "spawn"],
                       help="how workers start: fork (POSIX) or spawn fresh interpreters "
                       "handed the listening sockets (Windows); default auto")
    serve.add_argument("--admin", metavar="HOST:PORT", help="admin listener address")
    serve.add_argument("--watch", action="store_true",
                       help="reload when the --config file changes (also a Kubernetes "
                       "ConfigMap's symlink swap); an invalid new file changes nothing and "
                       "is logged")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=cmd_serve)

    check = commands.add_parser("check", help="validate a config file",
                                description="Exit 0 if FILE is valid; else print each "
                                "problem with its key path and exit 2.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(run=cmd_check)

    origin = commands.add_parser(
        "origin", help="run the built-in test backend",
        description="A small fast HTTP server for tests and benchmarks. The query string "
        "sets the answer: ?size=16k&delay=50ms&status=404&chunked=1&close=1; /echo returns "
        "the request body.",
    )
    origin.add_argument("--listen", "-l", metavar="HOST:PORT", action="append",
                        help="address to listen on (default 127.0.0.1:9001)")
    origin.add_argument("--workers", "-w", metavar="N|auto", default="1")
    origin.set_defaults(run=cmd_origin)

    demo = commands.add_parser(
        "demo", help="measure direct vs proxied, keep-alive vs close, on this machine",
        description="Start the built-in origin and veloxy on loopback, run a short load "
        "matrix, and print the table of the classic proxy study.",
    )
    size = demo.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about 15 seconds")
    size.add_argument("--full", action="store_true", help="the long version")
    demo.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    demo.add_argument("--html", metavar="OUT",
                      help="where to write the HTML report (default ./veloxy-report.html)")
    demo.set_defaults(run=cmd_demo)

    from veloxy.loadgen.cli import add_bench_parser

    add_bench_parser(commands)
    add_lab_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if args.debug:
            raise
        print(f"veloxy: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- serve -----------------------------------------------------------------------------------


def _load_serve_config(args: argparse.Namespace):
    from veloxy.config import apply_overrides, config_from_flags, load_config

    if args.config:
        if args.upstream:
            raise ConfigError([("--upstream", "give upstreams in the config file when "
                                              "--config is used")])
        config = load_config(args.config)
        return apply_overrides(config, args.listen, args.workers, args.admin,
                               args.workers_mode)
    config = config_from_flags(args.listen or ["127.0.0.1:8080"], args.upstream or [],
                               args.workers, args.admin)
    return apply_overrides(config, workers_mode=args.workers_mode)


def cmd_serve(args: argparse.Namespace) -> int:
    from veloxy.admin.launch import ProxyOps
    from veloxy.config import resolve_workers
    from veloxy.serving import announce_listening, configure_logging

    if args.watch and not args.config:
        raise ConfigError([("--watch", "needs --config FILE: there is no file to watch when "
                                       "the proxy is configured by flags")])
    config = _load_serve_config(args)
    configure_logging("debug" if args.debug else args.log_level)
    workers = resolve_workers(config.workers)
    # Metrics, reload (SIGHUP, POST /reload) and the admin listener: admin/launch.py.
    load = (lambda: _load_serve_config(args)) if args.config else None
    watch_path = args.config if args.watch else None
    with ProxyOps(config, load, workers, announce_listening, watch_path) as ops:

        def make_app(sweeper):
            from veloxy.proxy.app import ProxyApp

            return ProxyApp(ops.config, sweeper)  # the latest config, for a restarted worker

        addresses = [(a.host, a.port) for a in config.listen]
        return run_servers(addresses, workers, make_app, config.limits, "veloxy",
                           tuning=config.tuning, ops=ops, secure=_secure_listeners(config),
                           workers_mode=config.workers_mode)


def _secure_listeners(config: Any) -> dict[str, Any] | None:
    """TLS contexts (built before any worker forks: a bad certificate is a ConfigError
    here, and the workers share the session-ticket keys) and h2c flags per listener."""
    if not any(a.tls is not None or a.h2c for a in config.listen):
        return None
    from veloxy.tls.listener import listener_tls

    return {"tls": listener_tls(config.listen), "h2c": [a.h2c for a in config.listen],
            "http2": config.http2}


def _spawn_handoff(ops: Any, secure: dict[str, Any] | None
                   ) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """(extra, adopt) of workers.SpawnSupervisor / run_spawned_worker: what a spawned worker
    takes over besides its sockets, the ops' state (admin/launch.py) and the TLS listeners'
    session-ticket keys (tls/listener.py: tickets then resume on every worker)."""
    contexts = (secure or {}).get("tls") or []

    def extra() -> dict[str, Any]:
        from veloxy.tls.listener import ticket_keys

        return {"ops": ops.handoff() if ops is not None else None,
                "ticket_keys": ticket_keys(contexts)}

    def adopt(handoff: dict[str, Any]) -> None:
        from veloxy.tls.listener import adopt_ticket_keys

        if any(tls is not None for tls in contexts):
            adopt_ticket_keys(contexts, handoff["ticket_keys"])
        if ops is not None:
            ops.adopt(handoff["ops"])

    return extra, adopt


def run_servers(addresses: list[tuple[str, int]], workers: int,
                make_app: Callable, limits: object, what: str, *,
                tuning: Any = None, ops: Any = None,
                secure: dict[str, Any] | None = None, workers_mode: str = "auto") -> int:
    """One process serving `addresses`, or a supervisor of `workers` processes.

    `tuning` (config.Tuning): listen backlog and client socket buffers for the listeners,
    TCP_NODELAY and GC settings for each serving process (server.serve). `ops`
    (admin.launch.ProxyOps): the admin listener's address, served after `addresses`, and
    the hook that runs metrics, reload and the admin API in each serving process.
    `secure`: the TLS and HTTP/2 arguments of server.serve (tls, h2c, http2), from
    `_secure_listeners`. `workers_mode`: config `workers_mode` (workers.py)."""
    served = len(addresses)
    extra = ops.extra_addresses() if ops is not None else []
    addresses = addresses + extra
    from veloxy import workers as workers_mod
    from veloxy.config import DEFAULT_BACKLOG
    from veloxy.net import loop
    from veloxy.net.listen import listen_socket
    from veloxy.serving import announce_listening, apply_gc, serve

    listen_options: dict[str, Any] = {"backlog": DEFAULT_BACKLOG}
    if tuning is not None:
        listen_options = {"backlog": tuning.backlog,
                          "recv_buffer": tuning.downstream.recv_buffer,
                          "send_buffer": tuning.downstream.send_buffer}

    announced = 0

    def announce(address: str) -> None:
        nonlocal announced
        announced += 1  # the supervisor announces every address, the admin one last
        announce_listening(address, what if announced <= served else f"{what} admin")

    def attach(sockets: list[socket.socket]) -> Any:
        return ops.attach(sockets[served] if extra else None) if ops is not None else None

    def worker_main(sockets: list[socket.socket], ready: Callable[[], None]) -> None:
        loop.run(serve(sockets[:served], make_app, limits,  # type: ignore[arg-type]  # make_app returns a ProxyApp, an Application in all but name
                       ready=ready, tuning=tuning, attach=attach(sockets),
                       **(secure or {})))

    mode = workers_mod.AUTO_MODE if workers_mode == "auto" else workers_mode
    if mode == "fork" and not workers_mod.CAN_FORK:
        logging.getLogger("veloxy").warning(
            "workers_mode: fork asked, but this platform cannot fork; spawning the workers")
        mode = "spawn"
    if workers > 1 and workers_mod.is_spawned_worker():
        return workers_mod.run_spawned_worker(worker_main, adopt=_spawn_handoff(ops, secure)[1])
    if workers == 1:
        sockets = [listen_socket(host, port, **listen_options) for host, port in addresses]
        loop.run(serve(sockets[:served], make_app, limits,  # type: ignore[arg-type]  # make_app returns a ProxyApp, an Application in all but name
                       announce=announce, tuning=tuning, attach=attach(sockets),
                       **(secure or {})))
        return 0

    if mode == "spawn":
        # The workers run this same command line and pick up at is_spawned_worker() above.
        return workers_mod.SpawnSupervisor(
            addresses, workers, [sys.executable, "-m", "veloxy", *sys.argv[1:]], announce,
            listen_options=listen_options,
            on_reload=ops.supervisor_reload if ops is not None else None,
            extra=_spawn_handoff(ops, secure)[0]).run()
    if tuning is not None:
        apply_gc(tuning.gc)  # before the fork: the workers inherit a frozen heap
    return workers_mod.Supervisor(
        addresses, workers, worker_main, announce, listen_options=listen_options,
        on_reload=ops.supervisor_reload if ops is not None else None).run()


def cmd_check(args: argparse.Namespace) -> int:
    from veloxy.config import load_config

    config = load_config(args.file)
    _check_tls(config)
    routes = len(config.routes)
    servers = sum(len(group.servers) for group in config.upstreams.values())
    print(f"{args.file}: ok ({routes} routes, {len(config.upstreams)} upstream groups, "
          f"{servers} servers)")
    return 0


def _check_tls(config: Any) -> None:
    """Load every certificate, key and CA bundle the config names (ConfigError if one does
    not load), as `serve` would."""
    from veloxy.tls.client import client_context
    from veloxy.tls.listener import listener_tls

    listener_tls(config.listen)
    for name, group in config.upstreams.items():
        if any(server.secure for server in group.servers):
            client_context(group.tls, f"upstreams.{name}.tls")


# -- origin ----------------------------------------------------------------------------------


def cmd_origin(args: argparse.Namespace) -> int:
    from veloxy.config import Limits, resolve_workers
    from veloxy.config.values import parse_bind_address
    from veloxy.origin import OriginApp
    from veloxy.serving import configure_logging

    configure_logging("debug" if args.debug else "warning")
    addresses = []
    for text in args.listen or ["127.0.0.1:9001"]:
        try:
            addresses.append(parse_bind_address(text))
        except ValueError as exc:
            raise ConfigError([("--listen", str(exc))]) from None
    try:
        workers = resolve_workers(args.workers)
    except ValueError as exc:
        raise ConfigError([("--workers", str(exc))]) from None
    limits = Limits(max_body_bytes=None, idle_timeout=300.0)
    return run_servers(addresses, workers, lambda _sweeper: OriginApp(), limits,
                       "veloxy origin")


# -- demo ------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from veloxy.demo import run_demo

    mode = "quick" if args.quick else "full" if args.full else "default"
    return run_demo(mode, json_out=args.json, html_out=args.html)


# -- the performance lab: doctor, suite ------------------------------------------------------


def add_lab_parsers(commands: argparse._SubParsersAction) -> None:
    """`veloxy doctor` and `veloxy suite` (their work lives in doctor.py and lab/)."""
    from veloxy.lab.cli import add_merge_parser, add_suite_parser

    add_doctor_parser(commands)
    add_suite_parser(commands)
    commands.choices["suite"].set_defaults(run=cmd_suite)
    add_merge_parser(commands)
    commands.choices["merge"].set_defaults(run=cmd_merge)


def add_doctor_parser(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser(
        "doctor", help="check the OS settings that limit a proxy, and say what to change",
        description="Read the kernel and process limits that matter to a proxy (backlog, "
        "ephemeral ports, TIME_WAIT, file descriptors, CPU quota, event loop, the socket "
        "buffer caps against the config's tuning.*_buffer sizes; on Windows the "
        "Tcpip registry values and the IOCP loop), compare them with the planned load, and "
        "print the command that fixes each. Exit 1 when a check fails.",
    )
    doctor.add_argument("--config", "-c", metavar="FILE",
                        help="plan for this config's workers and upstream pools")
    doctor.add_argument("--connections", "-n", metavar="N", type=int,
                        help="planned concurrent client connections (default 1000)")
    doctor.add_argument("--workers", "-w", metavar="N|auto",
                        help="planned worker processes (default: the config's, else 1)")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.set_defaults(run=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from veloxy.doctor import run_doctor

    return run_doctor(args.config, args.connections, args.workers, args.json)


def cmd_suite(args: argparse.Namespace) -> int:
    from veloxy.lab.cli import run

    return run(args)


def cmd_merge(args: argparse.Namespace) -> int:
    from veloxy.lab.cli import run_merge

    return run_merge(args)
