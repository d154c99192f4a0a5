"""The batch recorder puts every value where HdrHistogram would, and merging the histograms of
several processes gives exactly the histogram of all their samples."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veloxy.loadgen import histogram as hdr

VALUES = st.integers(min_value=0, max_value=hdr.HIGHEST_US)


@given(VALUES)
def test_counts_index_is_hdrhistograms(value: int) -> None:
    reference = hdr.new_histogram()
    assert hdr.counts_index(value) == reference._counts_index_for(value)


def test_counts_index_at_bucket_edges() -> None:
    reference = hdr.new_histogram()
    edges = [0, 1, 2047, 2048, 2049, 4095, 4096] + [(1 << b) + d for b in range(11, 32)
                                                     for d in (-1, 0, 1)]
    for value in edges:
        assert hdr.counts_index(value) == reference._counts_index_for(value), value


@settings(max_examples=50)
@given(st.lists(VALUES, max_size=300))
def test_record_batch_equals_record_value(values: list[int]) -> None:
    ours, reference = hdr.new_histogram(), hdr.new_histogram()
    assert hdr.record_batch(ours, values) == len(values)
    for v in values:
        reference.record_value(v)
    assert list(ours.counts) == list(reference.counts)
    assert ours.get_total_count() == reference.get_total_count()
    if values:
        assert ours.get_min_value() == reference.get_min_value()
        assert ours.get_max_value() == reference.get_max_value()


def test_values_beyond_an_hour_are_clamped_not_lost() -> None:
    hist = hdr.new_histogram()
    hdr.record_batch(hist, [hdr.HIGHEST_US * 3, 5])
    assert hist.get_total_count() == 2
    assert hist.get_max_value() >= hdr.HIGHEST_US


def _latency_like(rng: random.Random, n: int) -> list[int]:
    """Mostly sub-millisecond, a tail to seconds: the shape a benchmark produces."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.9:
            out.append(int(rng.lognormvariate(5.5, 0.6)))
        elif r < 0.999:
            out.append(int(rng.uniform(1_000, 50_000)))
        else:
            out.append(int(rng.uniform(500_000, 3_000_000)))
    return out


def test_merged_process_histograms_equal_one_histogram_of_all_samples() -> None:
    rng = random.Random(7)
    samples = _latency_like(rng, 60_000)
    # Split as N worker processes would see them, each in several flushes.
    processes = 4
    shares: list[list[int]] = [[] for _ in range(processes)]
    for v in samples:
        shares[rng.randrange(processes)].append(v)
    encoded = []
    for share in shares:
        hist = hdr.new_histogram()
        for i in range(0, len(share), 997):
            hdr.record_batch(hist, share[i:i + 997])
        encoded.append(hdr.encode(hist))  # what a worker sends to the coordinator
    merged = hdr.merge(encoded)

    whole = hdr.new_histogram()
    for v in samples:
        whole.record_value(v)  # the reference implementation, one value at a time

    assert merged.get_total_count() == len(samples)
    assert list(merged.counts) == list(whole.counts)
    for p in (*hdr.REPORT_PERCENTILES, 12.5, 99.999):
        assert merged.get_value_at_percentile(p) == whole.get_value_at_percentile(p), p
    assert merged.get_max_value() == whole.get_max_value()
    assert merged.get_min_value() == whole.get_min_value()
    assert hdr.summary(merged) == hdr.summary(whole)


def test_summary_of_an_empty_histogram() -> None:
    summary = hdr.summary(hdr.new_histogram())
    assert summary["count"] == 0
    assert set(summary["percentiles"]) == {"50", "75", "90", "99", "99.9", "99.99", "100"}
    assert hdr.spectrum(hdr.new_histogram()) == []


def test_summary_matches_hdrhistogram() -> None:
    """The one-pass summary gives hdrh's own percentiles, mean and stdev."""
    hist = hdr.new_histogram()
    hdr.record_batch(hist, [*_latency_like(random.Random(3), 20_000), 0, 1])
    summary = hdr.summary(hist)
    assert summary["percentiles"] == {
        f"{p:g}": hist.get_value_at_percentile(p) for p in hdr.REPORT_PERCENTILES}
    assert summary["mean_us"] == pytest.approx(hist.get_mean_value(), abs=0.001)
    assert summary["stdev_us"] == pytest.approx(hist.get_stddev(), abs=0.001)
    assert (summary["min_us"], summary["max_us"]) == (hist.get_min_value(),
                                                      hist.get_max_value())
