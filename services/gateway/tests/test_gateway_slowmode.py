"""Slow mode's shared pace against a real nats-server: two gateways' gates (separate
NATS connections, as two processes have) share one interval per user and room."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from roomcast.common.natsconn import connect_nats
from roomcast.gateway.errors import SlowModeRefused
from roomcast.gateway.realtime.slowmode import SlowMode


def oid() -> str:
    return uuid.uuid4().hex[:24]


async def test_two_gateways_share_one_interval(nats_url: str) -> None:
    nc_a = await connect_nats(nats_url, name="gateway-a-test")
    nc_b = await connect_nats(nats_url, name="gateway-b-test")
    a, b = SlowMode(nc_a), SlowMode(nc_b)
    room, user, other = oid(), oid(), oid()
    try:
        await a.admit(room, user, "m1", 2)
        # The same user through the other gateway, inside the interval: refused.
        with pytest.raises(SlowModeRefused) as refused:
            await b.admit(room, user, "m2", 2)
        assert 0 < refused.value.retry_after <= 2
        # A resend of the accepted message (lost ack) is let through.
        await b.admit(room, user, "m1", 2)
        # Other users and other rooms have their own pace.
        await b.admit(room, other, "m1", 2)
        await b.admit(oid(), user, "m3", 2)
        # After retry_after, the next one goes through (on either gateway).
        await asyncio.sleep(refused.value.retry_after + 0.05)  # the server said when
        await b.admit(room, user, "m4", 2)
    finally:
        await nc_a.close()
        await nc_b.close()


async def test_racing_sends_on_two_gateways_let_one_through(nats_url: str) -> None:
    nc_a = await connect_nats(nats_url, name="gateway-a-test")
    nc_b = await connect_nats(nats_url, name="gateway-b-test")
    gates = [SlowMode(nc_a), SlowMode(nc_b)]
    room, user = oid(), oid()
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(gates[i % 2].admit(room, user, f"c{i}", 60) for i in range(10)),
            return_exceptions=True,
        )
        assert time.monotonic() - started < 5
        allowed = [r for r in results if r is None]
        refused = [r for r in results if isinstance(r, SlowModeRefused)]
        assert len(allowed) == 1
        assert len(refused) == 9
    finally:
        await nc_a.close()
        await nc_b.close()
