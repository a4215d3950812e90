"""Retention against a real nats-server (the periods bucket, the stream) and a real
SecantusDB: messages past their room's period leave, the rest stay, and a round never
deletes more than its budget."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import nats
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from roomcast.common import retention
from roomcast.history.files import GridFSBlobStore
from roomcast.history.retention import RetentionPurger
from roomcast.history.settings import Settings
from roomcast.history.store import HistoryStore
from roomcast.testing.processes import free_port

if TYPE_CHECKING:
    from conftest import Kit, Publisher, RunConsumer

Mongo = AsyncMongoClient[dict[str, Any]]


def days_ago(days: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat()


async def contents(mongo: Mongo, db: str, room: str) -> list[str]:
    docs = mongo[db].messages.find({"room_id": room}).sort("_id", 1)
    return [d["body"]["content"] async for d in docs]


async def test_messages_older_than_the_period_leave_and_the_rest_stay(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    nats_url: str,
    kit: type[Kit],
) -> None:
    kept_room, purged_room, user = kit.oid(), kit.oid(), kit.oid()
    ages = [20, 12, 9, 8.5, 6, 1, 0]  # days; the period is 7
    seqs: dict[str, list[int]] = {kept_room: [], purged_room: []}
    for room in (kept_room, purged_room):
        for age in ages:
            record = kit.message(room, user, f"{age}d")
            record["sent_at"] = days_ago(age)
            seqs[room].append(await publisher.publish(room, record))
    # Everybody's reactions are purged with their message.
    for seq in seqs[purged_room]:
        react = {"kind": "reaction", "room": purged_room, "target_seq": seq, "emoji": "+1"}
        react.update(op="add", sender=kit.sender(user), sent_at=kit.now_iso())
        await publisher.publish(purged_room, react)
    settings = make_settings(
        retention_batch_size=2, retention_batch_pause_seconds=0, retention_max_per_round=3
    )
    async with run_consumer(settings):

        async def all_stored() -> bool:
            # Stored and below the watermark, so pages show them.
            mark = await mongo[mongo_db_name].meta.find_one({"_id": "stored"})
            return mark is not None and mark["seq"] >= publisher.acked[-1]

        await kit.eventually(all_stored, within=20, what="every message stored")

    nc = await nats.connect(nats_url)
    kv = await retention.open_bucket(nc.jetstream(), replicas=1, create=True)
    await kv.put(purged_room, retention.encode(7))
    purger = RetentionPurger(settings, mongo, blobs=GridFSBlobStore(mongo, mongo_db_name))
    try:
        # The first round stops at its budget of 3, the next finishes the room.
        assert await purger.run_round() == 3
        assert REGISTRY.get_sample_value("roomcast_history_retention_unfinished_rooms") == 1
        assert await contents(mongo, mongo_db_name, purged_room) == ["8.5d", "6d", "1d", "0d"]
        assert await purger.run_round() == 1
        assert await purger.run_round() == 0
        assert REGISTRY.get_sample_value("roomcast_history_retention_unfinished_rooms") == 0
    finally:
        await purger.close()
        await kv.delete(purged_room)
        await nc.close()

    assert await contents(mongo, mongo_db_name, purged_room) == ["6d", "1d", "0d"]
    # A room without a period keeps everything.
    assert await contents(mongo, mongo_db_name, kept_room) == [f"{a}d" for a in ages]
    # Pages start at the oldest remaining message (first_seq was raised to it).
    store = HistoryStore(mongo, mongo_db_name)
    page = await store.page(purged_room, user, before=None, limit=50)
    assert [m["body"]["content"] for m in page.items] == ["0d", "1d", "6d"]
    assert page.next_before is None
    room_doc = await mongo[mongo_db_name].rooms.find_one({"_id": purged_room})
    oldest = await mongo[mongo_db_name].messages.find_one(
        {"room_id": purged_room}, sort=[("_id", 1)]
    )
    assert room_doc is not None
    assert oldest is not None
    assert room_doc["first_seq"] == oldest["_id"]
    reacted = [d["target_seq"] async for d in mongo[mongo_db_name].reactions.find({})]
    assert sorted(reacted) == seqs[purged_room][-3:]


async def test_a_failed_round_is_counted_and_the_next_one_retries(
    make_settings: Callable[..., Settings], nats_url: str, kit: type[Kit]
) -> None:
    # A room has a period, and MongoDB is not there: every round fails purging it.
    room = kit.oid()
    nc = await nats.connect(nats_url)
    kv = await retention.open_bucket(nc.jetstream(), replicas=1, create=True)
    await kv.put(room, retention.encode(7))
    gone: Mongo = AsyncMongoClient(
        f"mongodb://127.0.0.1:{free_port()}", serverSelectionTimeoutMS=200
    )
    settings = make_settings(retention_interval_seconds=0.1)
    metric = "roomcast_history_retention_round_failures_total"
    before = REGISTRY.get_sample_value(metric, {"reason": "mongodb"}) or 0.0
    purger = RetentionPurger(settings, gone, blobs=GridFSBlobStore(gone, settings.mongo_db))
    stop = asyncio.Event()
    running = asyncio.create_task(purger.run(stop))

    async def two_failures() -> bool:
        assert not running.done(), "the purge loop ended"
        return (REGISTRY.get_sample_value(metric, {"reason": "mongodb"}) or 0.0) >= before + 2

    try:
        await kit.eventually(two_failures, within=30, what="two failed rounds counted")
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await purger.close()
        await gone.close()
        await kv.delete(room)
        await nc.close()
    # every reason is exported from the start (at zero until it happens)
    assert REGISTRY.get_sample_value(metric, {"reason": "nats"}) is not None
