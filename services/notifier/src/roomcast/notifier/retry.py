"""Waiting between retries of a failed step (connect, set up, write a batch).

history's consumer has the same two helpers; they belong in roomcast.common once a
third user appears (a follow-up, kept out of this service's change)."""

from __future__ import annotations

import asyncio
import contextlib

# Doubling from a quick first retry (a blip) up to a ceiling that keeps a long outage
# cheap while the recovery is still noticed within seconds.
BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0


class Backoff:
    def __init__(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        delay: float = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2.0**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
