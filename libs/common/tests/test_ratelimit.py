"""Keyed token buckets: each key has its own budget refilled over time, and memory is
bounded by forgetting the least recently used key (which only ever forgives)."""

from __future__ import annotations

from roomcast.common.ratelimit import KeyedRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_key_has_its_own_budget_refilled_over_time() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(capacity=2, per_seconds=10, clock=clock)
    assert [limiter.hit("a"), limiter.hit("a")] == [0.0, 0.0]
    assert limiter.hit("a") == 5.0  # one token comes back every 5 s
    assert limiter.hit("b") == 0.0
    clock.now += 5.0
    assert limiter.hit("a") == 0.0


def test_past_max_keys_the_least_recently_used_key_is_forgiven() -> None:
    clock = Clock()
    limiter = KeyedRateLimiter(capacity=1, per_seconds=60, max_keys=2, clock=clock)
    limiter.hit("old")
    limiter.hit("busy")
    assert limiter.hit("old") > 0  # used again: now "busy" is the least recent
    limiter.hit("new")  # a third key pushes "busy" out
    assert limiter.hit("old") > 0  # still remembered, still limited
    assert limiter.hit("busy") == 0.0  # forgotten: a full bucket again
