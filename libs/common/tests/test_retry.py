"""The startup retry helper: delays double up to a ceiling and start over after a
success; a step is retried until it works, stops at once when asked, and never
swallows an error it was not told to expect."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from roomcast.common.retry import Backoff, retry_until_ready, sleep_unless

# A stop must end a wait far sooner than the wait itself.
LONG_WAIT_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 2.0


def test_delays_double_from_first_up_to_the_ceiling_and_start_over_after_reset() -> None:
    backoff = Backoff(first=0.2, maximum=5.0)
    assert [backoff.next_delay() for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert backoff.attempt == 8
    backoff.reset()
    assert backoff.next_delay() == 0.2


def test_a_long_outage_stays_at_the_ceiling() -> None:
    backoff = Backoff(first=0.2, maximum=5.0)
    for _ in range(10_000):
        delay = backoff.next_delay()
    assert delay == 5.0


def test_a_fixed_backoff_waits_the_same_every_time() -> None:
    backoff = Backoff.fixed(1.0)
    assert {backoff.next_delay() for _ in range(5)} == {1.0}


def test_nonsense_delays_are_refused() -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(first=0.0)
    with pytest.raises(ValueError, match="first"):
        Backoff(first=2.0, maximum=1.0)


async def test_a_step_is_retried_until_it_works_and_each_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def connect() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionRefusedError("not yet")
        return "connected"

    with caplog.at_level(logging.WARNING, logger="roomcast.common.retry"):
        result = await retry_until_ready(
            "NATS", connect, errors=(OSError,), backoff=Backoff.fixed(0.001)
        )
    assert result == "connected"
    assert calls == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3
    assert all(w.startswith("NATS not reachable yet") for w in warnings)


async def test_stop_ends_the_wait_at_once_and_answers_none() -> None:
    stop = asyncio.Event()
    calls = 0

    async def never() -> int:
        nonlocal calls
        calls += 1
        raise TimeoutError

    task = asyncio.ensure_future(
        retry_until_ready(
            "MongoDB",
            never,
            errors=(TimeoutError,),
            stop=stop,
            backoff=Backoff.fixed(LONG_WAIT_SECONDS),
        )
    )
    deadline = time.monotonic() + STOP_DEADLINE_SECONDS
    while calls == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0)
    started = time.monotonic()
    stop.set()
    assert await asyncio.wait_for(task, STOP_DEADLINE_SECONDS) is None
    assert time.monotonic() - started < STOP_DEADLINE_SECONDS
    assert calls == 1


async def test_a_step_already_stopped_is_not_attempted() -> None:
    stop = asyncio.Event()
    stop.set()

    async def attempt() -> int:
        raise AssertionError("must not run")

    assert await retry_until_ready("x", attempt, errors=(OSError,), stop=stop) is None


async def test_an_unexpected_error_is_not_retried() -> None:
    calls = 0

    async def broken() -> int:
        nonlocal calls
        calls += 1
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        await retry_until_ready("x", broken, errors=(OSError,), backoff=Backoff.fixed(0.001))
    assert calls == 1


async def test_sleep_unless_returns_when_stop_is_set() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_soon(stop.set)
    started = time.monotonic()
    await sleep_unless(stop, LONG_WAIT_SECONDS)
    assert time.monotonic() - started < STOP_DEADLINE_SECONDS
