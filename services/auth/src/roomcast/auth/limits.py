"""Attempt limits on login and registration, and which client an attempt comes from."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from roomcast.auth import metrics
from roomcast.auth.errors import TooManyAttempts
from roomcast.common.proxies import IpNetwork, client_address
from roomcast.common.ratelimit import KeyedRateLimiter

# Keys remembered per limiter; beyond this the least recently seen are forgotten (which
# only ever forgives). 100k buckets are a few tens of MB at most.
MAX_TRACKED_KEYS = 100_000


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IpNetwork]) -> str:
    """The address to account an attempt to (see roomcast.common.proxies)."""
    return client_address(peer, forwarded_for, trusted)


class AttemptLimiter:
    """Two token buckets per endpoint: one per client IP, one per username."""

    def __init__(
        self,
        endpoint: str,
        *,
        attempts: int,
        per_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self._by_ip = KeyedRateLimiter(
            capacity=attempts, per_seconds=per_seconds, max_keys=MAX_TRACKED_KEYS, clock=clock
        )
        self._by_username = KeyedRateLimiter(
            capacity=attempts, per_seconds=per_seconds, max_keys=MAX_TRACKED_KEYS, clock=clock
        )

    def check(self, ip: str, username_key: str) -> None:
        """Record an attempt, or raise :class:`TooManyAttempts` with the wait."""
        wait = self._by_ip.hit(ip)
        key = "ip"
        if wait == 0:
            wait = self._by_username.hit(username_key)
            key = "username"
        if wait > 0:
            metrics.RATE_LIMITED.labels(self.endpoint, key).inc()
            raise TooManyAttempts(
                f"too many {self.endpoint} attempts; retry in {math.ceil(wait)} s", retry_after=wait
            )
