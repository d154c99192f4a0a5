"""--hdr-log OUT: the standard HdrHistogram interval log (format version 1.3).

Why this format: HdrHistogram's own tools (HistogramLogProcessor, the Java/C/Python/Go log
readers, HdrHistogram's plotter) read it, so a run can be re-sliced by time or merged with other
runs without veloxy. One line per interval (about a second each) of the measured phase:

    #[Histogram log format version 1.3]
    #[StartTime: 1769860800.000 (seconds since epoch), Sat Jan 31 12:00:00 UTC 2026]
    "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
    0.000,1.003,12.345,HISTFAAAA...

Timestamps are seconds relative to StartTime; values in the histograms are microseconds;
Interval_Max is in milliseconds (values divided by 1000, HdrHistogram's max-value unit ratio).
The histograms are the ones latency is reported from: corrected for coordinated omission in
open-loop mode. Written by us rather than hdrh's HistogramLogWriter, whose start-time line
calls a datetime method that does not exist (hdrh 0.10.8).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TextIO

from veloxy.loadgen import histogram as hdr
from veloxy.loadgen.runner import Interval

MAX_VALUE_UNIT_RATIO = 1000.0  # microseconds -> milliseconds in the Interval_Max column


def write_log(out: TextIO, start_epoch: float, intervals: list[Interval],
              comment: str | None = None) -> None:
    stamp = datetime.fromtimestamp(start_epoch, UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    out.write("#[Histogram log format version 1.3]\n")
    if comment:
        out.write(f"#[{comment}]\n")
    out.write(f"#[StartTime: {start_epoch:.3f} (seconds since epoch), {stamp}]\n")
    out.write('"StartTimestamp","Interval_Length","Interval_Max",'
              '"Interval_Compressed_Histogram"\n')
    for interval in intervals:
        hist = interval.histogram
        peak = hist.get_max_value() / MAX_VALUE_UNIT_RATIO if hist.get_total_count() else 0.0
        out.write(f"{interval.start_s:.3f},{interval.length_s:.3f},{peak:.3f},"
                  f"{hdr.encode(hist)}\n")


def save(path: str, start_epoch: float, intervals: list[Interval], comment: str) -> None:
    with open(path, "w", encoding="ascii") as out:
        write_log(out, start_epoch, intervals, comment)
