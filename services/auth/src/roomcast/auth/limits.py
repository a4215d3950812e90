"""Attempt limits on login and registration, and which client an attempt comes from.

Three rules, so that an attacker cannot keep a chosen user from logging in:

- per client address, across usernames (``ip``): one address cannot spray many names;
- per (username, client address) (``username``): one address cannot hammer one name,
  while the same name from any other address keeps its own budget, so bad tries on
  "alice" from address A never refuse alice at address B;
- per username, across addresses: a progressive delay (:class:`UsernameBackoff`).
  Recent failures on a name make each attempt on it cost ``base * 2**(failures -
  free)`` seconds (capped). Addresses that already failed on the name share its time
  slots, one check per delay, so guessing spread over many addresses in parallel is
  paced rather than checked in one batch after the wait; every other address (the
  owner's) only waits the delay and is never refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cachetools import FIFOCache

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


@dataclass(slots=True)
class _NameState:
    """One username's recent failures (as of ``at``) and the end of its last slot."""

    failures: float
    at: float
    next_slot: float


class UsernameBackoff:
    """Per-username pacing of password checks, whatever the address.

    Failures on a name decay (one forgiven every ``forgive_seconds``); past the first
    ``free_failures`` each attempt costs ``delay`` = ``base * 2**(failures - free)``
    seconds, capped at ``max_seconds``. How an attempt pays it depends on its address:

    - from an address that failed on this name within ``address_memory_seconds`` (a
      guesser, after its first try): it takes the name's next **time slot**. Slots are
      ``delay`` apart and handed out in arrival order across all such addresses, so
      parallel guesses are checked one per ``delay``, not together. A slot further away
      than ``max_seconds`` is not given: the attempt is refused (429, with the wait),
      so nobody waits longer than the cap and the queue holds no more than the cap's
      worth of attempts;
    - from any other address (the owner at home or on a new network): it waits
      ``delay`` and is checked, never queued behind the guessing and never refused, so
      the owner gets in at most ``max_seconds`` late.

    A successful login resets the name (no delay, no queue) and forgets that its address
    ever failed. Memory is bounded: at most ``MAX_TRACKED_KEYS`` names and as many
    (name, address) pairs, least recently seen forgotten first (which only forgives).
    """

    def __init__(
        self,
        *,
        free_failures: int,
        base_seconds: float,
        max_seconds: float,
        forgive_seconds: float,
        address_memory_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.free_failures = free_failures
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.forgive_seconds = forgive_seconds
        self.address_memory_seconds = address_memory_seconds
        self._clock = clock
        self._sleep = sleep
        # Least recently stored dropped first: cachetools' FIFOCache moves a key to the
        # end when it is stored again, and a read does not move it.
        self._names: FIFOCache[str, _NameState] = FIFOCache(MAX_TRACKED_KEYS)
        # "name\0address" -> when that address last failed on that name.
        self._failed_at: FIFOCache[str, float] = FIFOCache(MAX_TRACKED_KEYS)

    def failures(self, username_key: str) -> float:
        state = self._names.get(username_key)
        if state is None:
            return 0.0
        return max(0.0, state.failures - (self._clock() - state.at) / self.forgive_seconds)

    def delay(self, username_key: str) -> float:
        """Seconds the next attempt on ``username_key`` costs."""
        excess = math.floor(self.failures(username_key)) - self.free_failures
        if excess < 0:
            return 0.0
        return min(self.max_seconds, self.base_seconds * 2.0**excess)

    def _suspect(self, pair: str, now: float) -> bool:
        failed_at = self._failed_at.get(pair)
        return failed_at is not None and now - failed_at < self.address_memory_seconds

    async def wait(self, username_key: str, address: str) -> None:
        """Wait until this attempt may be checked, or raise :class:`TooManyAttempts`."""
        now = self._clock()
        delay = self.delay(username_key)
        if self._suspect(_pair(username_key, address), now):
            state = self._state(username_key, now)
            slot = max(now, state.next_slot) + delay
            if slot - now > self.max_seconds:
                metrics.RATE_LIMITED.labels("login", "username_queue").inc()
                wait = slot - now - self.max_seconds
                raise TooManyAttempts(
                    f"too many login attempts on this name; retry in {math.ceil(wait)} s",
                    retry_after=wait,
                )
            state.next_slot = slot
            delay = slot - now
        if delay > 0:
            metrics.LOGIN_DELAYED.inc()
            await self._sleep(delay)

    def failed(self, username_key: str, address: str) -> None:
        now = self._clock()
        failures = self.failures(username_key) + 1
        state = self._state(username_key, now)
        state.failures, state.at = failures, now
        self._failed_at[_pair(username_key, address)] = now

    def succeeded(self, username_key: str, address: str) -> None:
        """The owner got in: the name is no longer under suspicion, nor is the address."""
        self._names.pop(username_key, None)
        self._failed_at.pop(_pair(username_key, address), None)

    def _state(self, username_key: str, now: float) -> _NameState:
        state = self._names.get(username_key)
        if state is None:
            state = _NameState(failures=0.0, at=now, next_slot=now)
        self._names[username_key] = state  # now the most recently seen
        return state


def _pair(username_key: str, address: str) -> str:
    # NUL cannot occur in a canonical username: the pair key is unambiguous.
    return f"{username_key}\0{address}"
