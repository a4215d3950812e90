"""The history process: killed while messages flow it loses nothing and duplicates
nothing; SIGTERM finishes the batch in hand and exits 0."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from pymongo import AsyncMongoClient

from roomcast.common.subjects import STREAM_NAME
from roomcast.testing.processes import ServiceProcess

if TYPE_CHECKING:
    from conftest import Kit, Publisher

Mongo = AsyncMongoClient[dict[str, Any]]


def metric_value(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


async def test_history_process_killed_while_messages_flow_stores_each_once(
    history_proc: Callable[..., ServiceProcess],
    publisher: Publisher,
    nats_url: str,
    mongo_url: str,
    mongo_db_name: str,
    mongo: Mongo,
    kit: type[Kit],
) -> None:
    env = {"nats_url": nats_url, "mongo_url": mongo_url, "mongo_db": mongo_db_name}
    # A short ack timeout: the batch the killed process held comes back in 2 s.
    first = history_proc(**env, ack_wait_seconds="2", batch_size="50")
    await asyncio.to_thread(first.start)
    rooms = [kit.oid() for _ in range(10)]
    user = kit.oid()
    messages = mongo[mongo_db_name].messages
    per_room = dict.fromkeys(rooms, 0)
    killed = asyncio.Event()

    async def publish_flow() -> None:
        # Until the kill, and 300 more after it: messages are in flight at the kill.
        after_kill = 0
        for i in range(50_000):
            if killed.is_set():
                if after_kill == 300:
                    return
                after_kill += 1
            room = rooms[i % len(rooms)]
            await publisher.publish(room, kit.message(room, user, f"m{i}"))
            per_room[room] += 1
        raise AssertionError("history never stored 300 messages")

    writer = asyncio.create_task(publish_flow())

    async def some_stored() -> bool:
        return await messages.count_documents({}) >= 300

    await kit.eventually(some_stored, within=60, what="300 messages stored")
    await asyncio.to_thread(first.kill)  # SIGKILL: no chance to finish anything
    killed.set()
    stored_at_kill = await messages.count_documents({})
    await writer
    total = len(publisher.acked)
    assert stored_at_kill < total

    second = history_proc(**env, ack_wait_seconds="2", batch_size="50")
    await asyncio.to_thread(second.start)

    async def caught_up() -> bool:
        info = await publisher.js.consumer_info(STREAM_NAME, "history")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await kit.eventually(caught_up, within=60, what="the restarted process to catch up")
    ids = [d["_id"] async for d in messages.find({}, {"_id": 1})]
    stream_count = await publisher.stream_messages()
    assert stream_count == total
    assert len(ids) == len(set(ids)) == stream_count
    assert set(ids) == set(publisher.acked)
    for room in rooms:
        assert await messages.count_documents({"room_id": room}) == per_room[room]

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{second.port}") as client:

        async def lag_zero() -> bool:
            text = (await client.get("/metrics")).text
            return metric_value(text, "roomcast_history_consumer_lag_messages") == 0

        await kit.eventually(lag_zero, within=10, what="the lag gauge at 0")
        text = (await client.get("/metrics")).text
    # The restarted process stored what the first one had not (at least).
    stored = metric_value(text, "roomcast_history_stored_messages_total")
    assert stored >= total - stored_at_kill - 50
    assert metric_value(text, "roomcast_history_ingested_total") >= stored


async def test_history_process_sigterm_finishes_its_batch_and_exits_0(
    history_proc: Callable[..., ServiceProcess],
    publisher: Publisher,
    nats_url: str,
    mongo_url: str,
    mongo_db_name: str,
    mongo: Mongo,
    kit: type[Kit],
) -> None:
    proc = history_proc(nats_url=nats_url, mongo_url=mongo_url, mongo_db=mongo_db_name)
    await asyncio.to_thread(proc.start)
    room, user = kit.oid(), kit.oid()
    messages = mongo[mongo_db_name].messages
    for i in range(200):
        await publisher.publish(room, kit.message(room, user, f"m{i}"))

    async def some_stored() -> bool:
        return await messages.count_documents({}) > 0

    await kit.eventually(some_stored, within=30, what="the first messages stored")
    for i in range(200, 400):
        await publisher.publish(room, kit.message(room, user, f"m{i}"))
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0, proc.log_tail()
    assert time.monotonic() - started < 10
    info = await publisher.js.consumer_info(STREAM_NAME, "history")
    # Nothing delivered to the stopped process is left unacknowledged...
    assert info.num_ack_pending == 0
    # ... and everything acknowledged is stored.
    acked = info.ack_floor.stream_seq
    ids = sorted([d["_id"] async for d in messages.find({}, {"_id": 1})])
    assert ids == list(range(1, acked + 1))
