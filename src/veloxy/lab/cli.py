"""`veloxy suite FILE.yaml`: run an experiment, print its tables, write JSON/HTML, keep and
compare baselines. Also `veloxy merge`: several generators' bench results made one (the merge
itself is loadgen/merge.py; this module adds its command and HTML page).

Exit codes:

    0    the suite ran (and no regression was found, or none was asked to fail the run)
    1    --fail-on-regression and a gated metric regressed beyond the noise band
    2    bad input: the suite file, a baseline name, an output path (one message per problem)
    130  interrupted by Ctrl-C (every process the suite started is stopped first)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def add_suite_parser(commands: Any) -> None:
    suite = commands.add_parser(
        "suite", help="run a declarative benchmark suite (targets x scenarios x repetitions)",
        description="Start the built-in origin and every target of FILE in front of it, run "
        "each scenario against each target (interleaved, rotated per repetition), sample "
        "each target's CPU and memory, and report medians with min-max over repetitions and "
        "ratios to the reference target.",
    )
    suite.add_argument("file", metavar="FILE.yaml")
    suite.add_argument("--json", metavar="OUT", help="write every cell and the summary as JSON")
    suite.add_argument("--html", metavar="OUT", help="write a self-contained HTML report")
    suite.add_argument("--duration", metavar="SECONDS", type=float,
                       help="override every scenario's duration (quick looks)")
    suite.add_argument("--reps", metavar="N", type=int, help="override the repetitions")
    suite.add_argument("--scenarios", metavar="A,B", type=_names,
                       help="run only these scenarios of the file")
    suite.add_argument("--targets", metavar="A,B", type=_names,
                       help="run only these targets (the file's reference target stays in)")
    suite.add_argument("--warmup", metavar="SECONDS", type=float, help="override the warm-up")
    suite.add_argument("--save-baseline", metavar="NAME", help="store the result as NAME")
    suite.add_argument("--compare", metavar="NAME", help="compare with the stored baseline NAME")
    suite.add_argument("--baseline-dir", metavar="DIR",
                       help="where baselines live (default $VELOXY_BASELINE_DIR or "
                       ".veloxy/baselines)")
    suite.add_argument("--threshold", metavar="PERCENT", type=float, default=5.0,
                       help="a change smaller than this is never a regression (default 5)")
    suite.add_argument("--fail-on-regression", action="store_true",
                       help="exit 1 when --compare finds a regression")
    suite.add_argument("--workdir", metavar="DIR", help="keep configs and logs here")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from veloxy.lab import report
    from veloxy.lab.runner import run_suite
    from veloxy.lab.suite import SuiteError, load_suite

    err = Console(stderr=True, highlight=False)
    if not err.is_terminal:
        err = Console(stderr=True, highlight=False, width=200)  # a log file: no wrapping
    try:
        suite = load_suite(args.file).scaled(args.duration, args.reps, args.warmup).selected(
            args.scenarios, args.targets)
        for flag, value in (("--duration", args.duration), ("--warmup", args.warmup)):
            if value is not None and (value < 0 or (flag == "--duration" and value == 0)):
                raise SuiteError(flag, ["must be a positive number of seconds"])
        if args.reps is not None and args.reps < 1:
            raise SuiteError("--reps", ["must be at least 1"])
    except SuiteError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_USAGE
    directory = report.baseline_dir(args.baseline_dir)
    baseline = None
    try:
        if args.compare:
            baseline = report.load_baseline(directory, args.compare)
        if args.save_baseline:
            report._baseline_path(directory, args.save_baseline)
    except ValueError as exc:
        print(f"veloxy suite: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.fail_on_regression and not args.compare:
        print("veloxy suite: --fail-on-regression needs --compare NAME", file=sys.stderr)
        return EXIT_USAGE
    workdir = Path(args.workdir) if args.workdir else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    cells_total = suite.repetitions * len(suite.scenarios) * len(suite.targets)
    per_cell = suite.warmup + max(s.duration for s in suite.scenarios) + 1.0
    err.print(f"veloxy suite {suite.name}: {cells_total} cells, about "
              f"{cells_total * per_cell / 60:.1f} min")
    started = time.time()
    try:
        cells = run_suite(suite, lambda line: err.print(line, markup=False), workdir)
    except KeyboardInterrupt:
        err.print("veloxy suite: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a start failure of the origin, a generator crash
        from veloxy.lab.procs import StartError
        from veloxy.loadgen.runner import BenchRunError
        from veloxy.loadgen.settings import BenchInputError

        if isinstance(exc, StartError | BenchRunError | BenchInputError):
            print(f"veloxy suite: {exc}", file=sys.stderr)
            return EXIT_REGRESSION if isinstance(exc, BenchRunError) else EXIT_USAGE
        raise
    doc = report.document(suite, cells, started)
    if baseline is not None:
        doc["comparison"] = report.compare(baseline, doc, args.compare, args.threshold)
    console = Console(width=None if sys.stdout.isatty() else 160)
    report.render(doc, console)
    if doc["comparison"] is not None:
        report.render_comparison(doc["comparison"], console)
    try:
        if args.json:
            report.write_json(args.json, doc)
        if args.html:
            from veloxy.lab.html import write_html

            write_html(args.html, doc)
            console.print(f"HTML report: {args.html}")
        if args.save_baseline:
            path = report.save_baseline(directory, args.save_baseline, doc)
            console.print(f"baseline saved: {path}")
    except OSError as exc:
        print(f"veloxy suite: cannot write: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.fail_on_regression and doc["comparison"]["regressions"]:
        return EXIT_REGRESSION
    return 0


# -- veloxy merge ---------------------------------------------------------------------------------

MERGE_DESCRIPTION = """\
Merge the --json results of several `veloxy bench` generators that loaded one target at the
same time (started with one --start-at TIME) into one result, exactly: latency histograms
added (the merged p99 is the p99 of every sample), counts and errors summed, rates over the
merged window. Prints one row per generator and the total, then the merged report.

Refused (exit 2): results of different loads (open vs closed loop, URL, method, body,
headers, keep-alive, script, timeout), windows that did not coincide, an already merged file,
the same run twice.
"""

MERGE_EPILOG = """\
example, three generators and then the merge:
  veloxy bench http://10.0.0.1:8080/ -d 30s --start-at 2026-12-07T08:00:00Z --json gen1.json
  ...
  veloxy merge gen1.json gen2.json gen3.json --json fleet.json --html fleet.html
"""


def add_merge_parser(commands: Any) -> None:
    merge = commands.add_parser(
        "merge", help="merge the --json results of several bench generators exactly",
        description=MERGE_DESCRIPTION, epilog=MERGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    merge.add_argument("results", metavar="RESULT.json", nargs="+",
                       help="`veloxy bench --json` files, at least two")
    merge.add_argument("--json", metavar="OUT", dest="json_out",
                       help="write the merged result (a bench result with a `sources` list)")
    merge.add_argument("--html", metavar="OUT", help="write a self-contained HTML page")
    merge.add_argument("--latency", action="store_true",
                       help="also print the merged latency percentiles")


def run_merge(args: argparse.Namespace) -> int:
    from veloxy.loadgen.merge import MergeError, load_result, merge_results, sources_table
    from veloxy.loadgen.report import text, write_json

    try:
        named = [(path, load_result(path)) for path in args.results]
        doc = merge_results(named)
    except MergeError as exc:
        print(f"veloxy merge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(sources_table(doc))
    print(text(doc, latency=args.latency))
    try:
        if args.json_out:
            write_json(args.json_out, doc)
        if args.html:
            from veloxy.lab.merge_html import write_merge_html

            write_merge_html(args.html, doc)
    except OSError as exc:
        print(f"veloxy merge: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
