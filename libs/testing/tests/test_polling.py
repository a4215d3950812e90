"""The shared ``eventually``: returns once the condition (async or plain) holds, fails
naming it otherwise."""

from __future__ import annotations

import time

import pytest

from roomcast.testing.polling import eventually


async def test_eventually_returns_once_the_condition_holds() -> None:
    asked = 0

    async def third_time() -> bool:
        nonlocal asked
        asked += 1
        return asked >= 3

    await eventually(third_time, "the third ask", within=5.0, poll=0.01)
    assert asked == 3


async def test_eventually_fails_naming_the_condition_after_the_deadline() -> None:
    async def never() -> bool:
        return False

    started = time.monotonic()
    with pytest.raises(AssertionError, match="the impossible"):
        await eventually(never, "the impossible", within=0.3, poll=0.05)
    assert time.monotonic() - started >= 0.3


async def test_eventually_takes_a_plain_condition_too() -> None:
    asked = 0

    def third_time() -> bool:
        nonlocal asked
        asked += 1
        return asked >= 3

    await eventually(third_time, "the third ask", within=5.0, poll=0.01)
    assert asked == 3
