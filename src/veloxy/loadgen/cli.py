"""`veloxy bench`: argument parsing, the live progress line, output files and exit codes.

Why this lives in loadgen and not in veloxy/cli.py: the bench command has many options and its
own error rules, and the top-level CLI only registers it (`add_bench_parser`). Exit codes:

    0    the run completed (warnings about a suspect result do not change it)
    1    --fail-on-regression found a regression, or the generator itself failed
    2    bad input: a bad option, URL, header, body file, script, baseline, an unreachable
         server or a certificate that does not verify; one line on stderr naming the
         problem, no traceback unless --debug
    130  interrupted by Ctrl-C (the partial results are printed first)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Load-test an HTTP/1.1 server, as wrk and wrk2 do, with honest latency; over TLS for an
https:// URL (the certificate verified, as a browser would: --ca, --sni, --insecure).
--h2 speaks HTTP/2 instead, as h2load does: h2c with prior knowledge for http://, ALPN h2
for https://, with -m N streams in flight on each connection.

Closed loop by default (each connection sends its next request when the answer arrives);
-R RATE holds a constant total rate instead and measures latency from each request's intended
send time, so a stalled server shows its stall in the percentiles (coordinated omission
corrected; the uncorrected histogram is kept too, see --latency).
"""

EPILOG = """\
examples:
  veloxy bench http://127.0.0.1:8080/ -c 64 -d 10s --latency
  veloxy bench http://127.0.0.1:8080/ -R 5000 -d 30s --json run.json --hdr-log run.hlog
  veloxy bench http://127.0.0.1:8080/ --baseline run.json --fail-on-regression 5
  veloxy bench http://127.0.0.1:8080/api --body req.json -H "Content-Type: application/json"
  veloxy bench https://127.0.0.1:8443/ --ca ca.pem --sni www.example.test -c 32 -d 10s
  veloxy bench --h2 http://127.0.0.1:8080/ -c 10 -m 10 -p 2 -d 10s     (h2c, as h2load -m 10)
  veloxy bench --h2 https://127.0.0.1:8443/ --ca ca.pem -c 10 -m 10 -R 20000 --latency
  veloxy bench http://10.0.0.1:8080/ -d 30s --start-at 2026-12-07T08:00:00Z --json gen1.json
      (on each of several machines; then: veloxy merge gen*.json --html fleet.html)

exit status: 0 done, 1 regression (or the generator failed), 2 bad input, 130 interrupted.
The --json format is documented in src/veloxy/loadgen/result.schema.json.
"""


def add_bench_parser(commands: Any) -> argparse.ArgumentParser:
    """Register `bench` on the top-level subparsers."""
    bench = commands.add_parser(
        "bench", help="load-test a server (wrk/wrk2-style, honest latency)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("url", metavar="URL", help="http[s]://host[:port]/path")
    bench.add_argument("-c", "--connections", type=int, default=64, metavar="N",
                       help="connections kept open (default 64)")
    bench.add_argument("-d", "--duration", default="10s", metavar="DURATION",
                       help="measured time, e.g. 10s, 1m (default 10s)")
    bench.add_argument("-p", "-t", "--processes", type=int, default=None, metavar="N",
                       help="generator processes, each with its share of the connections "
                       "(default: usable CPUs; -t as in wrk)")
    bench.add_argument("-R", "--rate", type=float, default=None, metavar="RATE",
                       help="open loop: total requests per second (wrk2 semantics)")
    bench.add_argument("--close", action="store_true",
                       help="send Connection: close: one connection per request")
    bench.add_argument("-H", "--header", action="append", default=[], metavar='"NAME: VALUE"',
                       help="add a request header (repeatable)")
    # -m is hey's and ab's method and h2load's streams: a number (never a method anyone
    # uses, though RFC 9110 allows digits) means streams; --method is always the method
    bench.add_argument("-m", dest="m", default=None, metavar="METHOD|N",
                       help="request method, or a number N: h2load's -m, --streams N")
    bench.add_argument("--method", default=None, metavar="METHOD",
                       help="request method (default GET, or POST with --body)")
    bench.add_argument("--h2", action="store_true", dest="http2",
                       help="HTTP/2: h2c (prior knowledge) for http://, ALPN h2 for https://")
    bench.add_argument("--streams", type=int, default=None, metavar="N",
                       help="--h2: requests in flight on each connection (default 1; "
                       "h2load's -m)")
    bench.add_argument("--body", metavar="FILE", help="send FILE's bytes as the request body")
    bench.add_argument("--script", metavar="FILE.py",
                       help="Python hooks request()/response()/setup() (see loadgen/script.py)")
    bench.add_argument("--timeout", default="2s", metavar="DURATION",
                       help="connect and response timeout; counted as an error (default 2s)")
    bench.add_argument("--warmup", default="0s", metavar="DURATION",
                       help="run this long first without measuring (default 0s)")
    bench.add_argument("--start-at", metavar="TIME",
                       help="begin the load at this wall-clock time (ISO 8601 with zone, e.g. "
                       "2026-12-07T08:00:00Z, or epoch seconds), so that several generators "
                       "measure the same window; their --json results go to `veloxy merge`")
    bench.add_argument("--latency", action="store_true",
                       help="print the latency percentiles (50 to 100)")
    bench.add_argument("--json", metavar="OUT", dest="json_out",
                       help="write the whole result as JSON (see result.schema.json)")
    bench.add_argument("--hdr-log", metavar="OUT",
                       help="write the HdrHistogram interval log (1 s intervals, microseconds)")
    bench.add_argument("--baseline", metavar="FILE",
                       help="compare with an earlier --json result")
    bench.add_argument("--fail-on-regression", type=float, metavar="PCT",
                       help="exit 1 if requests/s drop or p99 rises by more than PCT percent")
    bench.add_argument("-k", "--insecure", action="store_true",
                       help="https: do not verify the server's certificate (test servers)")
    bench.add_argument("--ca", metavar="FILE",
                       help="https: verify the server with the CA certificates in FILE (PEM) "
                            "instead of the system's")
    bench.add_argument("--sni", metavar="NAME",
                       help="https: the name sent by SNI and checked against the certificate "
                            "(default: the URL's host)")
    bench.add_argument("--tls-resume", action=argparse.BooleanOptionalAction, default=None,
                       help="https: offer each new connection the TLS session of the last "
                            "one of its process (tickets), to measure resumed handshakes; "
                            "--no-tls-resume (the default): a full handshake each time")

    def error(message: str) -> NoReturn:
        _die(message)

    bench.error = error  # one line, not usage + line
    parse_known = bench.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        # A subparser hands unknown options up to the top-level parser, which would print
        # its usage; refuse them here, in one line.
        parsed, extras = parse_known(args, namespace)
        if extras:
            _die(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    bench.parse_known_args = parse_known_args
    bench.set_defaults(run=cmd_bench)
    return bench


def _die(message: str) -> NoReturn:
    print(f"veloxy bench: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def settings_from_args(args: argparse.Namespace) -> Any:
    """Namespace -> BenchSettings; BenchInputError with a one-line message on bad input."""
    from veloxy.config.values import parse_duration
    from veloxy.loadgen.settings import (
        BenchInputError,
        BenchSettings,
        parse_header,
        parse_start_time,
    )

    def duration(flag: str, value: str) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise BenchInputError(f"{flag}: {exc}") from None

    headers = tuple(parse_header(h) for h in args.header)
    body = None
    if args.body:
        try:
            with open(args.body, "rb") as f:
                body = f.read()
        except OSError as exc:
            raise BenchInputError(f"--body {args.body}: {exc.strerror or exc}") from None
    streams = args.streams
    given_method = args.method
    if args.m is not None and args.m.isdigit():  # h2load's -m N
        if streams is not None:
            raise BenchInputError(f"-m {args.m} and --streams {streams}: give one")
        streams = int(args.m)
    elif args.m is not None:
        if given_method is not None and given_method != args.m:
            raise BenchInputError(f"-m {args.m} and --method {given_method}: give one")
        given_method = args.m
    method = (given_method or ("POST" if body is not None else "GET")).upper()
    for flag, path in (("--json", args.json_out), ("--hdr-log", args.hdr_log)):
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise BenchInputError(f"{flag} {path}: cannot write in {folder}")
    processes = args.processes
    if processes is None:
        from veloxy.config.cpus import usable_cpus

        processes = max(1, min(usable_cpus(), args.connections))
    if args.script and not os.path.isfile(args.script):
        raise BenchInputError(f"script {args.script}: no such file")
    if args.ca and not os.path.isfile(args.ca):
        raise BenchInputError(f"--ca {args.ca}: no such file")
    return BenchSettings(
        url=args.url, connections=args.connections, duration=duration("-d", args.duration),
        processes=processes, rate=args.rate, close=args.close, headers=headers, method=method,
        body=body, body_file=args.body, script=args.script,
        timeout=duration("--timeout", args.timeout), warmup=duration("--warmup", args.warmup),
        latency=args.latency, json_out=args.json_out, hdr_log=args.hdr_log,
        baseline=args.baseline, fail_on_regression=args.fail_on_regression,
        start_at=parse_start_time(args.start_at) if args.start_at else None,
        insecure=args.insecure, ca=args.ca, server_name=args.sni, tls_resume=args.tls_resume,
        http2=args.http2, streams=streams if streams is not None else 1,
    )


class LiveProgress:
    """One line on stderr, rewritten in place (only used when stderr is a terminal)."""

    def __init__(self, duration: float, warmup: float) -> None:
        self.duration = duration
        self.warmup = warmup
        self.shown = False

    def __call__(self, p: Any) -> None:
        if p.phase == "warmup":
            clock = f"warm-up {p.elapsed:4.1f}s/{self.warmup:g}s"
        else:
            clock = f"{max(0.0, p.elapsed - self.warmup):5.1f}s/{self.duration:g}s"
        line = (f"  {clock}  {p.completed:,} requests  {p.rate:,.0f} req/s  "
                f"{p.errors:,} errors")
        sys.stderr.write("\r\x1b[2K" + line)
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            self.shown = False


def cmd_bench(args: argparse.Namespace) -> int:
    debug = bool(getattr(args, "debug", False))
    progress: LiveProgress | None = None
    try:
        from veloxy.loadgen.report import (
            compare,
            comparison_text,
            document,
            load_baseline,
            text,
            write_json,
        )
        from veloxy.loadgen.runner import BenchRunError, is_tty, run_bench
        from veloxy.loadgen.settings import BenchInputError
    except ImportError as exc:  # pragma: no cover - a broken install
        print(f"veloxy bench: {exc}", file=sys.stderr)
        return 1
    try:
        settings = settings_from_args(args)
        baseline = load_baseline(settings.baseline) if settings.baseline else None
        if is_tty():
            progress = LiveProgress(settings.duration, settings.warmup)
        outcome = run_bench(settings, progress=progress, debug=debug)
    except BenchInputError as exc:
        if progress is not None:
            progress.clear()
        if debug:
            raise
        print(f"veloxy bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BenchRunError as exc:
        if progress is not None:
            progress.clear()
        print(f"veloxy bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if progress is not None:
            progress.clear()
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        print(f"veloxy bench: internal error: {type(exc).__name__}: {exc} "
              "(--debug shows the traceback)", file=sys.stderr)
        return 1
    if progress is not None:
        progress.clear()
    doc = document(outcome)
    comparison = None
    if baseline is not None:
        comparison = compare(baseline, doc, settings.baseline, settings.fail_on_regression)
        doc["baseline"] = comparison
    print(text(doc, latency=settings.latency))
    if comparison is not None:
        print(comparison_text(comparison))
    try:
        if settings.json_out:
            write_json(settings.json_out, doc)
        if settings.hdr_log:
            from veloxy.loadgen.hdrlog import save

            save(settings.hdr_log, outcome.started_at, outcome.intervals,
                 f"veloxy bench {settings.target.url}: latency in microseconds")
    except OSError as exc:
        print(f"veloxy bench: cannot write output: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.flush()
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    if comparison is not None and comparison["regressions"]:
        return EXIT_REGRESSION
    return 0
