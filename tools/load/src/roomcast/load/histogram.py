"""A log-linear latency histogram (HdrHistogram-like), small and dependency-free.

Values are non-negative integers (the load tool records microseconds). Values below
``2**SUB_BITS`` get one bucket each; every higher power-of-two range ``[2**k, 2**(k+1))``
is split into ``2**SUB_BITS / 2`` equal buckets, so a value is known to within
``1 / 2**(SUB_BITS-1)`` of itself (0.78 % with SUB_BITS = 8), at any magnitude.

Recording is one ``bit_length`` and one list increment; histograms from several
processes merge by adding counts (sent between processes as sparse ``{index: count}``).
A percentile is reported as the highest value of its bucket (never lower than the true
value, like HdrHistogram's "highest equivalent value"), capped at the exact maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

try:  # numpy comes with the `load` extra (matplotlib); without it, a plain loop
    import numpy as np
except ImportError:  # pragma: no cover - exercised only in a minimal install
    np = None  # type: ignore[assignment]

# 2**8 = 256 buckets below 256, then 128 buckets per power of two: 0.78 % resolution.
SUB_BITS = 8
_HALF = 1 << (SUB_BITS - 1)  # buckets per power of two above the linear range
_LINEAR = 1 << SUB_BITS
# Largest recordable value: 2**40 us is 12.7 days, far beyond any latency worth
# recording; larger values are clamped into the last bucket (max stays exact).
MAX_BITS = 40
BUCKETS = _LINEAR + (MAX_BITS - SUB_BITS) * _HALF
_MAX_VALUE = (1 << MAX_BITS) - 1


def bucket_index(value: int) -> int:
    """The bucket of ``value`` (clamped to [0, 2**MAX_BITS - 1])."""
    if value < _LINEAR:
        return value if value > 0 else 0
    if value > _MAX_VALUE:
        value = _MAX_VALUE
    shift = value.bit_length() - SUB_BITS
    return _LINEAR + (shift - 1) * _HALF + ((value >> shift) - _HALF)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest value that land in bucket ``index``."""
    if index < _LINEAR:
        return index, index
    shift = (index - _LINEAR) // _HALF + 1
    sub = (index - _LINEAR) % _HALF + _HALF
    low = sub << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts of values in log-linear buckets, with exact count, min, max and sum."""

    __slots__ = ("counts", "max", "min", "sum", "total")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * BUCKETS
        self.total = 0
        self.sum = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        """Record one value; negative values (clock skew between hosts) count as 0."""
        if value < 0:
            value = 0
        if value < _LINEAR:
            self.counts[value] += 1
        else:
            self.counts[bucket_index(value)] += 1
        if self.total == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.total += 1
        self.sum += value

    def record_many(self, values: Sequence[int]) -> None:
        """Record many values at once (the receivers' hot path only appends raw
        latencies to an array, binned here once per second): vectorised with numpy
        when it is installed, else one by one."""
        if not values:
            return
        if np is None:
            for v in values:
                self.record(v)
            return
        self.record_array(np.array(values, dtype=np.int64))

    def record_array(self, values: Any) -> None:
        """Record a numpy int64 array of values."""
        if values.size == 0:
            return
        raw = np.maximum(values.astype(np.int64), 0)
        v = np.minimum(raw, _MAX_VALUE)
        bits = np.frexp(v.astype(np.float64))[1].astype(np.int64)  # bit_length, exact
        shift = np.maximum(bits - SUB_BITS, 1)
        high = _LINEAR + (shift - 1) * _HALF + ((v >> shift) - _HALF)
        idx = np.where(v < _LINEAR, v, high)
        binned = np.bincount(idx, minlength=BUCKETS)
        counts = self.counts
        for i in np.flatnonzero(binned).tolist():
            counts[i] += int(binned[i])
        self._merge_stats(int(raw.size), int(raw.sum()), int(raw.min()), int(raw.max()))

    def merge(self, other: Histogram) -> None:
        if other.total == 0:
            return
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self._merge_stats(other.total, other.sum, other.min, other.max)

    def _merge_stats(self, total: int, sum_: int, min_: int, max_: int) -> None:
        if self.total == 0 or min_ < self.min:
            self.min = min_
        self.max = max(self.max, max_)
        self.total += total
        self.sum += sum_

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0-100): the smallest bucket holding the
        ceil(p% of total)-th value, reported as that bucket's highest value (at most max)."""
        if self.total == 0:
            return 0
        if p <= 0:
            return self.min
        rank = max(1, math.ceil(self.total * min(p, 100.0) / 100.0))
        seen = 0
        for i, c in enumerate(self.counts):
            if c:
                seen += c
                if seen >= rank:
                    return max(self.min, min(bucket_bounds(i)[1], self.max))
        return self.max

    def mean(self) -> float:
        return self.sum / self.total if self.total else 0.0

    def reset(self) -> None:
        self.counts = [0] * BUCKETS
        self.total = self.sum = self.min = self.max = 0

    # --- exchange between processes ------------------------------------------------

    def to_sparse(self) -> dict[str, object]:
        """A compact, picklable/JSON-able form: only the non-empty buckets."""
        return {
            "buckets": {i: c for i, c in enumerate(self.counts) if c},
            "total": self.total,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
        }

    def merge_sparse(self, data: Mapping[str, object]) -> None:
        total = int(data["total"])  # type: ignore[call-overload]
        if total == 0:
            return
        buckets = data["buckets"]
        assert isinstance(buckets, Mapping)
        for i, c in buckets.items():
            self.counts[int(i)] += int(c)
        self._merge_stats(
            total,
            int(data["sum"]),  # type: ignore[call-overload]
            int(data["min"]),  # type: ignore[call-overload]
            int(data["max"]),  # type: ignore[call-overload]
        )

    @classmethod
    def from_sparse(cls, data: Mapping[str, object]) -> Histogram:
        h = cls()
        h.merge_sparse(data)
        return h

    @classmethod
    def of(cls, values: Iterable[int]) -> Histogram:
        h = cls()
        for v in values:
            h.record(v)
        return h

    def summary(self, scale: float = 1e-3) -> dict[str, float | int]:
        """p50/p90/p99/p99.9/max (and count, mean), values multiplied by ``scale``
        (default: microseconds to milliseconds)."""
        return {
            "count": self.total,
            "mean": round(self.mean() * scale, 3),
            "p50": round(self.percentile(50) * scale, 3),
            "p90": round(self.percentile(90) * scale, 3),
            "p99": round(self.percentile(99) * scale, 3),
            "p99_9": round(self.percentile(99.9) * scale, 3),
            "max": round(self.max * scale, 3),
        }
