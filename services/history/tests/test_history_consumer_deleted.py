"""history's durable consumer deleted while history runs (an operator's ``nats consumer
rm``), against a real nats-server and a real SecantusDB: history creates it again and
goes on storing, each message once, instead of silently storing nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from roomcast.common.subjects import STREAM_NAME
from roomcast.history.settings import Settings

if TYPE_CHECKING:
    from conftest import Kit, Publisher, RunConsumer

Mongo = AsyncMongoClient[dict[str, Any]]
RECREATED = "roomcast_history_consumer_recreated_total"


async def test_history_recreates_a_deleted_consumer_and_stores_what_follows(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    room, user = kit.oid(), kit.oid()
    messages = mongo[mongo_db_name].messages
    settings = make_settings()
    before = REGISTRY.get_sample_value(RECREATED) or 0.0
    async with run_consumer(settings):
        for i in range(5):
            await publisher.publish(room, kit.message(room, user, f"before {i}"))

        async def first_stored() -> bool:
            return await messages.count_documents({}) == 5

        await kit.eventually(first_stored, within=20, what="the first messages stored")
        assert await publisher.js.delete_consumer(STREAM_NAME, settings.consumer_name)
        for i in range(5):
            await publisher.publish(room, kit.message(room, user, f"after {i}"))

        async def watermark_at_ten() -> bool:
            watermark = await mongo[mongo_db_name].meta.find_one({"_id": "stored"})
            return watermark is not None and watermark["seq"] == 10

        await kit.eventually(watermark_at_ten, within=30, what="messages after the deletion")
        info = await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)
    ids = sorted([d["_id"] async for d in messages.find({}, {"_id": 1})])
    # The replay of the first five changed nothing: one document per message.
    assert ids == publisher.acked == list(range(1, 11))
    assert info.config.ack_wait == settings.ack_wait_seconds
    assert REGISTRY.get_sample_value(RECREATED) == before + 1
