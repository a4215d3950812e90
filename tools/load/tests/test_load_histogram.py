"""The log-linear histogram: bucket geometry, percentile accuracy, merging."""

from __future__ import annotations

import math
import random
from array import array

import numpy as np
import pytest

from roomcast.load.histogram import BUCKETS, Histogram, bucket_bounds, bucket_index

# Relative error bound of a bucket: 1/128 above the linear range.
RESOLUTION = 1 / 128


def test_buckets_tile_the_value_range_without_gaps() -> None:
    expected_low = 0
    for i in range(BUCKETS):
        low, high = bucket_bounds(i)
        assert low == expected_low
        assert bucket_index(low) == i
        assert bucket_index(high) == i
        assert high - low <= max(0, low * RESOLUTION)
        expected_low = high + 1


def _exact(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


@pytest.mark.parametrize("p", [50, 90, 99, 99.9, 100])
def test_percentiles_are_within_the_resolution(p: float) -> None:
    rng = random.Random(7)
    # Log-normal-ish latencies from ~50 us to seconds, like a real run.
    values = [int(math.exp(rng.gauss(8, 1.5))) for _ in range(50_000)]
    h = Histogram.of(values)
    exact = _exact(values, p)
    got = h.percentile(p)
    assert exact <= got <= exact * (1 + RESOLUTION) + 1
    assert h.total == len(values)
    assert h.max == max(values)
    assert h.min == min(values)


def test_small_values_are_exact_and_negative_values_count_as_zero() -> None:
    h = Histogram.of([-5, 0, 1, 2, 3, 100])
    assert [h.percentile(p) for p in (1, 20, 50, 70, 100)] == [0, 0, 1, 3, 100]
    assert h.min == 0


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.percentile(99) == 0
    assert h.summary()["count"] == 0


def test_merge_and_sparse_round_trip_equal_recording_everything() -> None:
    rng = random.Random(3)
    a_vals = [rng.randrange(0, 10**7) for _ in range(5000)]
    b_vals = [rng.randrange(0, 10**4) for _ in range(5000)]
    a, b = Histogram.of(a_vals), Histogram.of(b_vals)
    a.merge(Histogram.from_sparse(b.to_sparse()))
    both = Histogram.of(a_vals + b_vals)
    assert a.counts == both.counts
    assert (a.total, a.sum, a.min, a.max) == (both.total, both.sum, both.min, both.max)


def test_record_many_matches_record() -> None:
    rng = random.Random(5)
    values = [0, 255, 256, 511, 512, 2**40 - 1, 2**40, 2**45, -3]
    values += [rng.randrange(0, 2**36) for _ in range(20_000)]
    one = Histogram.of(values)
    bulk = Histogram()
    bulk.record_array(np.array(values[:100], dtype=np.int64))
    bulk.record_many(array("q", values[100:]))
    assert bulk.counts == one.counts
    assert (bulk.total, bulk.sum, bulk.min, bulk.max) == (one.total, one.sum, one.min, one.max)


def test_summary_is_in_milliseconds() -> None:
    h = Histogram.of([1000] * 99 + [250_000])
    s = h.summary()
    assert s["p50"] == pytest.approx(1.0, rel=RESOLUTION)
    assert s["max"] == 250.0
    assert s["count"] == 100
