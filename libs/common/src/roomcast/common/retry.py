"""Retrying a step that fails while a dependency is not up yet: the one backoff every
service uses for startup (connect to NATS, create MongoDB indexes, load a list).

A whole stack starts at once (docker compose, a fresh cluster): MongoDB or NATS may
appear seconds after a service. The service keeps trying, says what it waits for in
the log, and gives up only when it is asked to stop, so SIGTERM during a long outage
still exits at once.

API::

    Backoff(first=0.2, maximum=5.0)        delays doubling from first, capped
        .next_delay() -> float; .reset(); .attempt (failures since the last reset)
    Backoff.fixed(seconds)                 the same delay every time
    await sleep_unless(stop, seconds)      sleep, or less if ``stop`` is set
    await retry_until_ready(what, attempt, *, errors, stop=None, backoff=None,
                            log=...) -> T | None
        ``attempt()``'s value once it succeeds; None if ``stop`` was set first (for
        an attempt that itself returns None, check ``stop``). Only ``errors`` are
        retried (anything else is a bug and propagates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# The default backoff: a quick first retry (a dependency starting a moment later, a
# blip), doubling up to a ceiling that keeps a long outage cheap (one attempt and one
# log line per 5 s) while its end is still noticed within seconds.
BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0

_log = logging.getLogger(__name__)


class Backoff:
    """Delays between attempts: ``first * 2**attempt``, at most ``maximum``."""

    def __init__(
        self, first: float = BACKOFF_FIRST_SECONDS, maximum: float = BACKOFF_MAX_SECONDS
    ) -> None:
        if first <= 0 or maximum < first:
            raise ValueError("need 0 < first <= maximum")
        self.first = first
        self.maximum = maximum
        self.attempt = 0

    @classmethod
    def fixed(cls, seconds: float) -> Backoff:
        return cls(first=seconds, maximum=seconds)

    def next_delay(self) -> float:
        """The delay before the next attempt; counts this failure."""
        # Past the ceiling the exponent no longer matters (and must not overflow).
        exponent = min(self.attempt, 64)
        delay = min(self.maximum, self.first * 2.0**exponent)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """After a success: the next failure starts from ``first`` again."""
        self.attempt = 0


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def retry_until_ready(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    errors: tuple[type[BaseException], ...],
    stop: asyncio.Event | None = None,
    backoff: Backoff | None = None,
    log: logging.Logger = _log,
) -> T | None:
    """Call ``attempt`` until it returns (its value) or ``stop`` is set (None).

    Each failure with one of ``errors`` is logged as a warning naming ``what`` and
    waits the backoff's next delay (cut short by ``stop``). Without ``stop`` it retries
    until it succeeds or the task is cancelled.
    """
    backoff = backoff or Backoff()
    while stop is None or not stop.is_set():
        try:
            return await attempt()
        except errors as exc:
            delay = backoff.next_delay()
            log.warning(
                "%s not reachable yet; retrying in %.1f s",
                what,
                delay,
                extra={"error": repr(exc), "attempt": backoff.attempt},
            )
        if stop is None:
            await asyncio.sleep(delay)
        else:
            await sleep_unless(stop, delay)
    return None
