"""Waiting in a test for a condition held by another process (an HTTP answer, a
document in MongoDB, a metric): poll it with a deadline, never a fixed sleep.

There is no event to wait on across a process boundary, so the condition is asked
again every ``poll`` seconds until it holds; past ``within`` seconds the test fails
with an ``AssertionError`` naming what it waited for.

    await eventually(lambda: inbox_has(alice, 2), "alice's two notifications")

The condition may be a coroutine function (it asks another process) or a plain one
(it reads state an in-process fake or client keeps, updated by other tasks).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

# How long a condition may take to hold: generous for a loaded 2-core CI machine (a
# whole stack of services sharing it), where a delivery normally takes milliseconds.
EVENTUALLY_WITHIN_SECONDS = 30.0
# Between two asks: short next to any deadline a test cares about, long enough that
# the polling (an HTTP request, a query) adds no noticeable load to the processes it asks.
EVENTUALLY_POLL_SECONDS = 0.1


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    what: str,
    *,
    within: float = EVENTUALLY_WITHIN_SECONDS,
    poll: float = EVENTUALLY_POLL_SECONDS,
) -> None:
    """Ask ``check`` until it returns true; ``AssertionError`` naming ``what`` once
    ``within`` seconds have passed without it holding."""
    deadline = time.monotonic() + within
    # Polling another process's state: there is no event to wait on.
    while not await _holds(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(poll)


async def _holds(check: Callable[[], Awaitable[bool]] | Callable[[], bool]) -> bool:
    answer = check()
    return bool(await answer) if inspect.isawaitable(answer) else bool(answer)
