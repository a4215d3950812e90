"""Attempt limits on login and registration, and which client an attempt comes from.

Three rules, so that an attacker cannot keep a chosen user from logging in:

- per client address, across usernames (``ip``): one address cannot spray many names;
- per (username, client address) (``username``): one address cannot hammer one name,
  while the same name from any other address keeps its own budget, so bad tries on
  "alice" from address A never refuse alice at address B;
- per username, across addresses: a progressive delay (:class:`UsernameBackoff`), never
  a refusal. Recent failures on a name make every attempt on it wait
  ``base * 2**(failures - free)`` seconds (capped) before its password is checked, which
  slows guessing spread over many addresses while the owner still gets in, late by at
  most the cap.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from roomcast.auth import metrics
from roomcast.auth.errors import TooManyAttempts
from roomcast.common.proxies import IpNetwork, client_address
from roomcast.common.ratelimit import KeyedRateLimiter

# Keys remembered per limiter; beyond this the least recently seen are forgotten (which
# only ever forgives). 100k buckets are a few tens of MB at most.
MAX_TRACKED_KEYS = 100_000

Sleep = Callable[[float], Awaitable[None]]


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IpNetwork]) -> str:
    """The address to account an attempt to (see roomcast.common.proxies)."""
    return client_address(peer, forwarded_for, trusted)


class AttemptLimiter:
    """Token buckets per endpoint: one per client address, one per (username, address)."""

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
        self._by_username_ip = KeyedRateLimiter(
            capacity=attempts, per_seconds=per_seconds, max_keys=MAX_TRACKED_KEYS, clock=clock
        )

    def check(self, ip: str, username_key: str) -> None:
        """Record an attempt, or raise :class:`TooManyAttempts` with the wait."""
        wait = self._by_ip.hit(ip)
        key = "ip"
        if wait == 0:
            # NUL cannot occur in a canonical username: the pair key is unambiguous.
            wait = self._by_username_ip.hit(f"{username_key}\0{ip}")
            key = "username"
        if wait > 0:
            metrics.RATE_LIMITED.labels(self.endpoint, key).inc()
            raise TooManyAttempts(
                f"too many {self.endpoint} attempts; retry in {math.ceil(wait)} s", retry_after=wait
            )


class UsernameBackoff:
    """Progressive delay per username from its recent failures, whatever the address.

    Failures decay: one is forgiven every ``forgive_seconds``, so a name nobody attacks
    returns to no delay. The first ``free_failures`` cost nothing (a human mistyping).
    """

    def __init__(
        self,
        *,
        free_failures: int,
        base_seconds: float,
        max_seconds: float,
        forgive_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.free_failures = free_failures
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.forgive_seconds = forgive_seconds
        self._clock = clock
        self._sleep = sleep
        # username -> (failures as of `at`, at)
        self._failures: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def failures(self, username_key: str) -> float:
        entry = self._failures.get(username_key)
        if entry is None:
            return 0.0
        count, at = entry
        return max(0.0, count - (self._clock() - at) / self.forgive_seconds)

    def delay(self, username_key: str) -> float:
        """Seconds the next attempt on ``username_key`` waits."""
        excess = math.floor(self.failures(username_key)) - self.free_failures
        if excess < 0:
            return 0.0
        return min(self.max_seconds, self.base_seconds * 2.0**excess)

    async def wait(self, username_key: str) -> None:
        delay = self.delay(username_key)
        if delay > 0:
            metrics.LOGIN_DELAYED.inc()
            await self._sleep(delay)

    def failed(self, username_key: str) -> None:
        self._failures[username_key] = (self.failures(username_key) + 1, self._clock())
        self._failures.move_to_end(username_key)
        if len(self._failures) > MAX_TRACKED_KEYS:
            self._failures.popitem(last=False)
