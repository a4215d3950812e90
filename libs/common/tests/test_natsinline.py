"""Inline NATS subscriptions against a real nats-server: every message reaches the
handler in publish order, a failing handler does not stop the connection's reading,
and the subscription survives a server restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from roomcast.common.natsinline import subscribe_inline
from roomcast.testing.processes import NatsServer

# How long a test waits for messages before declaring them lost.
DEADLINE_SECONDS = 10.0


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def _until(condition: Callable[[], bool], seconds: float = DEADLINE_SECONDS) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - handler state, no event
            await asyncio.sleep(0.02)


async def test_every_message_reaches_the_handler_in_order(nc: NatsClient) -> None:
    got: list[bytes] = []
    sub = await subscribe_inline(nc, "inline.a", lambda m: got.append(m.data))
    await nc.flush()
    for i in range(500):
        await nc.publish("inline.a", str(i).encode())
    await _until(lambda: len(got) == 500)
    assert got == [str(i).encode() for i in range(500)]
    await sub.unsubscribe()
    await nc.publish("inline.a", b"after")
    await nc.flush()
    other: list[bytes] = []
    await subscribe_inline(nc, "inline.probe", lambda m: other.append(m.data))
    await nc.flush()
    await nc.publish("inline.probe", b"x")
    await _until(lambda: other == [b"x"])
    assert len(got) == 500  # nothing after the unsubscribe


async def test_a_failing_handler_does_not_stop_reading(nc: NatsClient) -> None:
    got: list[bytes] = []

    def handler(msg: Msg) -> None:
        if msg.data == b"boom":
            raise RuntimeError("handler bug")
        got.append(msg.data)

    await subscribe_inline(nc, "inline.b", handler)
    await nc.flush()
    for data in (b"1", b"boom", b"2"):
        await nc.publish("inline.b", data)
    await _until(lambda: len(got) == 2)
    assert got == [b"1", b"2"]
    # Requests (other subscriptions of the same connection) still work.

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    replies = await nc.subscribe("inline.echo", cb=echo)
    assert (await nc.request("inline.echo", b"ping", timeout=DEADLINE_SECONDS)).data == b"ping"
    await replies.unsubscribe()


async def test_the_subscription_is_renewed_after_a_server_restart() -> None:
    server = NatsServer()
    server.start()
    nc: NatsClient | None = None
    try:
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        client = nc
        got: list[bytes] = []
        await subscribe_inline(nc, "inline.c", lambda m: got.append(m.data))
        await nc.flush()
        server.stop()
        await _until(lambda: not client.is_connected)
        server.start()
        await _until(lambda: client.is_connected, DEADLINE_SECONDS * 2)
        await nc.flush()
        await nc.publish("inline.c", b"after restart")
        await _until(lambda: got == [b"after restart"])
    finally:
        if nc is not None:
            await nc.close()
        server.cleanup()
