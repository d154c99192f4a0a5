"""Ratios of a `veloxy suite --json` result against any of its targets, per repetition.

`veloxy suite` reports ratios against the suite's `reference` (the Go proxy in
seed-study.yaml); the tuning knobs are compared with the default veloxy instead. This reads
the JSON and prints, per scenario and target, median [min-max] over repetitions of req/s,
p99, max and CPU µs/request, and of each target's ratio to REFERENCE *in the same
repetition* (the drift of a shared machine cancels out of a ratio taken minutes apart).

    python benchmarks/suite_ratios.py seed.json --reference veloxy [--targets a,b,...]
    python benchmarks/suite_ratios.py seed.json --reference veloxy --markdown
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable


def _spread(values: Iterable[float | None]) -> tuple[float, float, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return min(vals), statistics.median(vals), max(vals)


def _metric(cell: dict, name: str) -> float | None:
    if name in ("p99", "max", "p50"):
        value = cell["latency_us"].get(name)
        return None if value is None else value / 1000.0  # ms
    value = cell.get(name)
    return None if value is None else float(value)


METRICS = (("requests_per_s", "req/s", "{:,.0f}"), ("p99", "p99 ms", "{:.2f}"),
           ("max", "max ms", "{:.1f}"), ("cpu_us_per_request", "CPU µs/req", "{:.1f}"))
RATIOS = (("requests_per_s", "req/s ratio"), ("p99", "p99 ratio"),
          ("cpu_us_per_request", "CPU ratio"))


def rows(doc: dict, reference: str, targets: list[str] | None) -> list[list[str]]:
    cells = [c for c in doc["cells"] if not c.get("skipped")]
    by = {(c["scenario"], c["target"], c["rep"]): c for c in cells}
    names = targets or [t["name"] for t in doc["suite"]["targets"]]
    out = []
    for scenario in [s["name"] for s in doc["suite"]["scenarios"]]:
        for target in names:
            mine = [c for c in cells if c["scenario"] == scenario and c["target"] == target]
            if not mine:
                continue
            row = [scenario, target, str(len(mine))]
            for name, _, fmt in METRICS:
                s = _spread(_metric(c, name) for c in mine)
                row.append("-" if s is None else
                           f"{fmt.format(s[1])} [{fmt.format(s[0])}-{fmt.format(s[2])}]")
            for name, _ in RATIOS:
                per_rep = []
                for c in mine:
                    ref = by.get((scenario, reference, c["rep"]))
                    a, b = _metric(c, name), ref and _metric(ref, name)
                    if a is not None and b:
                        per_rep.append(a / b)
                s = _spread(per_rep)
                row.append("-" if s is None else f"{s[1]:.2f} [{s[0]:.2f}-{s[2]:.2f}]")
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json")
    parser.add_argument("--reference", required=True)
    parser.add_argument("--targets", help="comma-separated targets to show (default all)")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args(argv)
    with open(args.json, encoding="utf-8") as f:
        doc = json.load(f)
    header = ["scenario", "target", "reps", *[m[1] for m in METRICS], *[r[1] for r in RATIOS]]
    table = rows(doc, args.reference, args.targets.split(",") if args.targets else None)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in table:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        for row in [header, *table]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"\n{doc['suite']['name']}, started {doc['started_at']}, {doc['machine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
