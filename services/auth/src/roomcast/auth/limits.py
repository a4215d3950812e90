"""Attempt limits on login and registration, and which client an attempt comes from."""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Sequence

from roomcast.auth import metrics
from roomcast.auth.errors import TooManyAttempts
from roomcast.auth.settings import IpNetwork
from roomcast.common.ratelimit import KeyedRateLimiter

# Keys remembered per limiter; beyond this the least recently seen are forgotten (which
# only ever forgives). 100k buckets are a few tens of MB at most.
MAX_TRACKED_KEYS = 100_000
# A forwarded address longer than any IPv6 text form is junk; it is cut to this length
# before it becomes a rate-limit key.
MAX_ADDRESS_LENGTH = 64


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IpNetwork]) -> str:
    """The address to account an attempt to.

    The TCP peer, unless the peer is a trusted proxy: then the right-most address of
    ``X-Forwarded-For`` that is not itself a trusted proxy (addresses to its left were
    written by the client and can be anything).
    """
    if not peer:
        return "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop[:MAX_ADDRESS_LENGTH]
    # Every hop is a trusted proxy: the left-most is the closest thing to a client.
    return hops[0][:MAX_ADDRESS_LENGTH] if hops else peer


def _is_trusted(address: str, trusted: Sequence[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


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
