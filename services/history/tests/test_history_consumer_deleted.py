"""history's durable consumer deleted while history runs (an operator's ``nats consumer
rm``), against a real nats-server and a real SecantusDB: history creates it again and
goes on storing, each message once, instead of silently storing nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nats.js.api import DeliverPolicy
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

        async def watermark_at(seq: int) -> bool:
            watermark = await mongo[mongo_db_name].meta.find_one({"_id": "stored"})
            return watermark is not None and watermark["seq"] == seq

        # history's watermark is the ack floor its info read saw: the consumer
        # re-created after the deletion resumes after it.
        await kit.eventually(
            lambda: watermark_at(5), within=20, what="the first messages' ack floor seen"
        )
        assert await publisher.js.delete_consumer(STREAM_NAME, settings.consumer_name)
        for i in range(5):
            await publisher.publish(room, kit.message(room, user, f"after {i}"))

        await kit.eventually(
            lambda: watermark_at(10), within=30, what="messages after the deletion"
        )
        info = await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)
    ids = sorted([d["_id"] async for d in messages.find({}, {"_id": 1})])
    # The replay of the first five changed nothing: one document per message.
    assert ids == publisher.acked == list(range(1, 11))
    assert info.config.ack_wait == settings.ack_wait_seconds
    # Not replayed from the start of the stream: the new consumer began after the ack
    # floor (a replay would have delivered all ten again).
    assert info.config.deliver_policy == DeliverPolicy.BY_START_SEQUENCE
    assert info.config.opt_start_seq == 6
    assert info.delivered.consumer_seq < 10
    assert REGISTRY.get_sample_value(RECREATED) == before + 1
