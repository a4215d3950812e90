"""In-process rate limiting: token buckets keyed by a bounded set of keys."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache


@dataclass(slots=True)
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; ``take`` spends one."""

    capacity: float
    rate: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, capacity: float, rate: float, now: float) -> TokenBucket:
        return cls(capacity, rate, capacity, now)

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens; return 0 if allowed, else seconds until it would be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class KeyedRateLimiter:
    """A token bucket per key (client IP, username...). Memory is bounded: the least
    recently used keys are dropped past ``max_keys``, which only ever forgives."""

    def __init__(
        self,
        *,
        capacity: float,
        per_seconds: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.rate = capacity / per_seconds
        self.max_keys = max_keys
        self._clock = clock
        # A lookup counts as a use; past max_keys the least recently used is dropped.
        self._buckets: LRUCache[str, TokenBucket] = LRUCache(max_keys)

    def hit(self, key: str) -> float:
        """Record one attempt; return 0 if allowed, else the seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket.full(self.capacity, self.rate, now)
            self._buckets[key] = bucket
        return bucket.take(now)
