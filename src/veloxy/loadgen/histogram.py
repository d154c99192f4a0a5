"""HDR latency histograms: 1 µs to 1 h at 3 significant digits, recorded in batches, merged exactly.

Why not call `HdrHistogram.record_value` per request: the hdrhistogram package is pure Python
there, a real share of a small request's budget (docs/BENCHMARKS.md, "How veloxy bench
measures"). The hot path only
appends integer microseconds to a list; a few times a second `record_batch` counts the list
with `collections.Counter` (C code) and adds each *distinct* value to the histogram's counts
array with the same bucket arithmetic as HdrHistogram (`counts_index`, tested against the
package for every value class). Latencies cluster, so distinct values are few.

Merging across processes is exact: every histogram has the same geometry, the workers send
their histograms in the standard compressed encoding ("HISTFAAA..."), and the coordinator adds
the counts arrays (the package's C `add_array`). Nothing is resampled or averaged.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3

# Geometry of a (1, 1 h, 3 digits) histogram: 2048 sub-buckets, unit magnitude 0.
_SUB_BUCKET_HALF_MAG = 10
_SUB_BUCKET_MASK = (1 << (_SUB_BUCKET_HALF_MAG + 1)) - 1  # 2047
_SUB_BUCKET_HALF = 1 << _SUB_BUCKET_HALF_MAG  # 1024
_BITS = _SUB_BUCKET_HALF_MAG + 1

#: The percentiles of the text report and of the JSON "percentiles" object.
REPORT_PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def counts_index(value: int) -> int:
    """HdrHistogram's counts-array index of `value` (unit magnitude 0, 3 digits)."""
    bucket = (value | _SUB_BUCKET_MASK).bit_length() - _BITS
    return ((bucket + 1) << _SUB_BUCKET_HALF_MAG) + (value >> bucket) - _SUB_BUCKET_HALF


def record_batch(hist: HdrHistogram, values: Iterable[int]) -> int:
    """Add integer microsecond values to `hist`; returns how many. Values above one hour are
    clamped to one hour (never dropped: a lost sample would hide the worst case)."""
    return record_counts(hist, Counter(values))


def record_counts(hist: HdrHistogram, tally: Counter[int] | dict[int, int]) -> int:
    """`record_batch` for values already counted (value -> count), to feed several histograms
    from one count."""
    if not tally:
        return 0
    counts = hist.counts
    total = 0
    low, high = hist.min_value, hist.max_value
    for value, n in tally.items():
        if value < 0:
            value = 0
        elif value > HIGHEST_US:
            value = HIGHEST_US
        bucket = (value | _SUB_BUCKET_MASK).bit_length() - _BITS
        counts[((bucket + 1) << _SUB_BUCKET_HALF_MAG) + (value >> bucket) - _SUB_BUCKET_HALF] += n
        total += n
        if value < low:
            low = value
        if value > high:
            high = value
    hist.min_value, hist.max_value = low, high
    hist.total_count += total
    return total


def encode(hist: HdrHistogram) -> str:
    """The standard compressed, base64 encoding (what --hdr-log and the JSON carry)."""
    return hist.encode().decode("ascii")


def decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


def merge(encoded: Iterable[str]) -> HdrHistogram:
    """One histogram holding every count of the given encoded histograms."""
    total = new_histogram()
    for text in encoded:
        if text:
            total.add(decode(text))
    return total


def _recorded(hist: HdrHistogram) -> list[tuple[int, int]]:
    """(counts index, count) of every non-empty bucket, in value order: one pass in C-backed
    list operations instead of hdrh's per-bucket iterator objects (0.3 s -> a few ms)."""
    return [(i, c) for i, c in enumerate(list(hist.counts)) if c]


def summary(hist: HdrHistogram) -> dict[str, object]:
    """Mean, stdev, min, max and the report percentiles, in microseconds (JSON-ready).

    Same definitions as hdrh (percentile = highest value equivalent to the bucket reaching the
    target count; mean and stdev over bucket midpoints), computed in one pass."""
    count = hist.get_total_count()
    if count == 0:
        return {"count": 0, "min_us": 0, "mean_us": 0.0, "stdev_us": 0.0, "max_us": 0,
                "percentiles": {_pkey(p): 0 for p in REPORT_PERCENTILES}}
    recorded = _recorded(hist)
    mids = [(hist._hdr_median_equiv_value(hist.get_value_from_index(i)), c) for i, c in recorded]
    mean = sum(m * c for m, c in mids) / count
    stdev = math.sqrt(sum((m - mean) * (m - mean) * c for m, c in mids) / count)
    percentiles: dict[str, int] = {}
    targets = [(p, hist.get_target_count_at_percentile(p)) for p in REPORT_PERCENTILES]
    total = 0
    k = 0
    for i, c in recorded:
        total += c
        while k < len(targets) and total >= targets[k][1]:
            percentiles[_pkey(targets[k][0])] = hist.get_highest_equivalent_value(
                hist.get_value_from_index(i))
            k += 1
        if k == len(targets):
            break
    return {
        "count": count,
        "min_us": hist.get_min_value(),
        "mean_us": round(mean, 3),
        "stdev_us": round(stdev, 3),
        "max_us": hist.get_max_value(),
        "percentiles": percentiles,
    }


def spectrum(hist: HdrHistogram, ticks_per_half_distance: int = 5) -> list[dict[str, float]]:
    """The full percentile spectrum (HdrHistogram's percentile iteration, as wrk2 prints it)."""
    if hist.get_total_count() == 0:
        return []
    return [
        {"percentile": round(item.percentile_level_iterated_to, 6),
         "value_us": item.value_iterated_to,
         "count": item.total_count_to_this_value}
        for item in hist.get_percentile_iterator(ticks_per_half_distance)
    ]


def within_stdev_percent(hist: HdrHistogram, mean: float, stdev: float) -> float:
    """Share of samples within mean ± stdev (wrk's "+/- Stdev" column), in percent."""
    count = hist.get_total_count()
    if count == 0:
        return 0.0
    low, high = mean - stdev, mean + stdev
    inside = 0
    for i, c in _recorded(hist):
        if low <= hist.get_highest_equivalent_value(hist.get_value_from_index(i)) <= high:
            inside += c
    return 100.0 * inside / count


def _pkey(p: float) -> str:
    return f"{p:g}"
