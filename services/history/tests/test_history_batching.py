"""What batching buys and what it must not cost, against a real nats-server and a real
SecantusDB: a steady stream is written with few durable writes per message (counted by
the database server itself), every write still journaled and majority-acknowledged,
and read positions written in batches still only move forward."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from pymongo import AsyncMongoClient

from roomcast.common.mongo import connect_mongo
from roomcast.common.subjects import STREAM_NAME
from roomcast.history.consumer import HistoryConsumer
from roomcast.history.settings import Settings
from roomcast.history.store import HistoryStore
from roomcast.testing.mongowire import DURABLE, recording_writes

if TYPE_CHECKING:
    from conftest import Kit, Publisher

Mongo = AsyncMongoClient[dict[str, Any]]

# Write commands per stored message the issue allows, amortised.
MAX_WRITES_PER_MESSAGE = 1.2


async def server_writes(mongo: Mongo) -> int:
    """Write commands the server has executed (its own serverStatus counters)."""
    counters = (await mongo.admin.command("serverStatus"))["opcounters"]
    return int(counters["insert"]) + int(counters["update"]) + int(counters["delete"])


@contextlib.asynccontextmanager
async def durable_consumer(settings: Settings) -> AsyncIterator[HistoryConsumer]:
    """The consumer with the client the history process uses (durable writes)."""
    client = connect_mongo(
        settings.mongo_url, timeout_ms=settings.mongo_timeout_ms, app_name="test-history"
    )
    consumer = HistoryConsumer(settings, HistoryStore(client, settings.mongo_db))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await consumer.close()
        await client.close()


async def test_steady_stream_costs_few_durable_writes_per_message(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    """300 messages over 12 rooms at a steady ~150/s (a fetch then returns one record
    or a few): stored exactly once, with at most 1.2 write commands per message as
    counted by the server, and every write of history journaled and majority-acked."""
    rooms = [kit.oid() for _ in range(12)]
    user = kit.oid()
    settings = make_settings()
    with recording_writes(mongo_db_name) as recorder:
        async with durable_consumer(settings):
            # Past set-up (stream, consumer, indexes): only the steady stream is counted.
            first = await publisher.publish(rooms[0], kit.message(rooms[0], user, "first"))

            async def stored(seq: int) -> bool:
                mark = await mongo[mongo_db_name].meta.find_one({"_id": "stored"})
                return mark is not None and int(mark["seq"]) >= seq

            await kit.eventually(lambda: stored(first), within=30, what="the first message")
            writes_before = await server_writes(mongo)
            recorder.writes.clear()
            for i in range(300):
                await publisher.publish(rooms[i % 12], kit.message(rooms[i % 12], user, f"m{i}"))
                await asyncio.sleep(1 / 150)  # the pace of the stream, not a wait
            last = publisher.acked[-1]
            await kit.eventually(lambda: stored(last), within=30, what="every message stored")
            writes = await server_writes(mongo) - writes_before
    ids = sorted([d["_id"] async for d in mongo[mongo_db_name].messages.find({}, {"_id": 1})])
    assert ids == sorted(publisher.acked)
    assert writes / 300 <= MAX_WRITES_PER_MESSAGE, f"{writes} writes for 300 messages"
    inserts = [w for w in recorder.writes if w[0] == "insert" and w[1] == "messages"]
    assert len(inserts) <= 100, f"{len(inserts)} inserts: messages were not batched"
    assert recorder.writes, "the recorder saw no write"
    for command, collection, concern in recorder.writes:
        assert concern == DURABLE, (command, collection, concern)
    info = await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_read_positions_batched_only_move_forward(
    mongo_url: str, mongo: Mongo, mongo_db_name: str, kit: type[Kit]
) -> None:
    """600 receipts for 4 users in 3 rooms, sent concurrently over several batch
    windows in random order: each caller is answered with a stored position at least
    its own, the stored positions never move back while batches are written
    concurrently, each ends at the highest seq sent, and the receipts cost far fewer
    writes than one each."""
    client = connect_mongo(mongo_url, timeout_ms=2000, app_name="test-history")
    store = HistoryStore(client, mongo_db_name)
    rooms, users = [kit.oid() for _ in range(3)], [kit.oid() for _ in range(4)]
    rng = random.Random(15)
    receipts = [(rng.choice(rooms), rng.choice(users), rng.randint(1, 10_000)) for _ in range(600)]
    highest: dict[tuple[str, str], int] = {}
    for room, user, seq in receipts:
        highest[room, user] = max(highest.get((room, user), 0), seq)
    seen: dict[str, int] = {}
    went_back: list[str] = []
    done = asyncio.Event()

    async def watch() -> None:
        # Every stored position, sampled while the batches are written.
        while not done.is_set():
            async for doc in mongo[mongo_db_name].read_positions.find({}):
                if doc["seq"] < seen.get(doc["_id"], 0):
                    went_back.append(f"{doc['_id']}: {seen[doc['_id']]} -> {doc['seq']}")
                seen[doc["_id"]] = doc["seq"]

    async def send(room: str, user: str, seq: int) -> tuple[int, int]:
        return seq, await store.mark_read(room, user, seq)

    writes_before = await server_writes(mongo)
    watcher = asyncio.create_task(watch())
    tasks = []
    try:
        for i, receipt in enumerate(receipts):
            tasks.append(asyncio.create_task(send(*receipt)))
            if i % 50 == 49:
                await asyncio.sleep(0.02)  # spread over several windows, not a wait
        answers = await asyncio.gather(*tasks)
    finally:
        done.set()
        await watcher
    writes = await server_writes(mongo) - writes_before
    await client.close()
    assert all(stored >= asked for asked, stored in answers)
    assert not went_back
    final = {
        (d["room_id"], d["user_id"]): d["seq"]
        async for d in mongo[mongo_db_name].read_positions.find({})
    }
    assert final == highest
    assert writes <= len(receipts) / 10, f"{writes} writes for {len(receipts)} receipts"
