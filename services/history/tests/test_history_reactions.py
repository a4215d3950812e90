"""Reactions stored by the consumer against a real nats-server and SecantusDB: exactly
once per (user, message, emoji), refused where they may not stand, and a burst on one
message aggregated per batch instead of one message write per reaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import nats
import orjson
from pymongo import AsyncMongoClient

from roomcast.common.subjects import STREAM_NAME
from roomcast.history.reactions import state_id
from roomcast.history.records import ReactionRecord, parse_record
from roomcast.history.settings import Settings
from roomcast.history.store import HistoryStore
from roomcast.testing.mongowire import recording_writes

if TYPE_CHECKING:
    from conftest import Kit, Publisher, RunConsumer

Mongo = AsyncMongoClient[dict[str, Any]]

THUMBS = "\U0001f44d"
HEART = "\u2764\ufe0f"


def reaction(kit: type[Kit], room: str, user: str, target: int, emoji: str, op: str = "add") -> Any:
    return {
        "kind": "reaction",
        "room": room,
        "target_seq": target,
        "sender": kit.sender(user),
        "emoji": emoji,
        "op": op,
        "sent_at": kit.now_iso(),
        "client_id": kit.oid(),
    }


async def drain(publisher: Publisher, settings: Settings, kit: type[Kit]) -> None:
    last = publisher.acked[-1]

    async def all_acked() -> bool:
        try:
            info = await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)
        except nats.js.errors.NotFoundError:
            return False  # not created yet
        return bool(info.ack_floor.stream_seq == last and info.num_ack_pending == 0)

    await kit.eventually(all_acked, within=60, what="every record acknowledged")
    mongo: Mongo = AsyncMongoClient(settings.mongo_url)
    try:

        async def watermark() -> bool:
            mark = await mongo[settings.mongo_db].meta.find_one({"_id": "stored"})
            return mark is not None and int(mark["seq"]) >= last

        await kit.eventually(watermark, within=30, what="the watermark at the last record")
    finally:
        await mongo.close()


async def test_reactions_count_once_per_user_and_emoji_and_refusals_are_not_stored(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    room, other, alice, bob, carol = kit.oid(), kit.oid(), kit.oid(), kit.oid(), kit.oid()
    m = await publisher.publish(room, kit.message(room, alice, "react to me"))
    private = await publisher.publish(room, kit.message(room, alice, "psst", to=bob))
    doomed = await publisher.publish(room, kit.message(room, bob, "soon gone"))
    elsewhere = await publisher.publish(other, kit.message(other, bob, "other room"))
    await publisher.publish(room, kit.delete(room, bob, doomed))
    # Alice adds the thumb twice (a retry past the stream's deduplication), Bob adds
    # it once; Bob adds and removes a heart; Carol adds then removes then adds a smile.
    for user, emoji, op in [
        (alice, THUMBS, "add"),
        (alice, THUMBS, "add"),
        (bob, THUMBS, "add"),
        (bob, HEART, "add"),
        (bob, HEART, "remove"),
        (carol, ":)", "add"),
        (carol, ":)", "remove"),
        (carol, ":)", "add"),
        (alice, "x1", "add"),
        (alice, "x2", "add"),  # the third distinct emoji: over max_reaction_emoji=3
    ]:
        await publisher.publish(room, reaction(kit, room, user, m, emoji, op))
    # Refused: Carol on a private message of Alice and Bob, anyone on a deleted
    # message, a target in another room; allowed: Bob on the private message.
    await publisher.publish(room, reaction(kit, room, carol, private, THUMBS))
    await publisher.publish(room, reaction(kit, room, bob, private, THUMBS))
    await publisher.publish(room, reaction(kit, room, alice, doomed, THUMBS))
    await publisher.publish(room, reaction(kit, room, alice, elsewhere, THUMBS))
    settings = make_settings(max_reaction_emoji=3)
    async with run_consumer(settings):
        await drain(publisher, settings, kit)
    docs = {d["_id"]: d async for d in mongo[mongo_db_name].messages.find({})}
    assert docs[m]["reactions"] == [
        {"emoji": THUMBS, "count": 2},
        {"emoji": ":)", "count": 1},
        {"emoji": "x1", "count": 1},
    ]
    assert docs[private]["reactions"] == [{"emoji": THUMBS, "count": 1}]
    assert "reactions" not in docs[doomed]
    assert "reactions" not in docs[elsewhere]
    store = HistoryStore(mongo, mongo_db_name)
    page = await store.page(room, alice, before=None, limit=10)
    by_seq = {i["seq"]: i for i in page.items}
    assert by_seq[m]["reactions"] == [
        {"emoji": THUMBS, "count": 2, "me": True},
        {"emoji": ":)", "count": 1, "me": False},
        {"emoji": "x1", "count": 1, "me": True},
    ]
    as_carol = {i["seq"]: i for i in (await store.page(room, carol, before=None, limit=10)).items}
    assert [r["me"] for r in as_carol[m]["reactions"]] == [False, True, False]
    assert private not in as_carol


async def test_an_older_reaction_redelivered_after_a_newer_one_changes_nothing(
    mongo: Mongo, mongo_db_name: str, kit: type[Kit]
) -> None:
    """Delivery order does not matter: the newest record per (user, message, emoji)
    wins, whichever arrives last, and applying a batch again is a no-op."""
    room, alice = kit.oid(), kit.oid()
    store = HistoryStore(mongo, mongo_db_name)
    await store.ensure_indexes()
    now = dt.datetime.now(dt.UTC)

    def rec(seq: int, record: dict[str, Any]) -> Any:
        return parse_record(seq, f"chat.room.{room}", orjson.dumps(record))

    await store.write_messages([rec(1, kit.message(room, alice, "hi"))], now=now)

    async def nothing(_: int) -> None:
        return None

    add = rec(2, reaction(kit, room, alice, 1, THUMBS))
    remove = rec(3, reaction(kit, room, alice, 1, THUMBS, "remove"))
    assert isinstance(add, ReactionRecord)
    for batch in ([remove], [add], [add, remove], [remove]):
        rejected = await store.apply_reactions(batch, load_target=nothing, now=now, max_emoji=20)
        assert rejected == []
        doc = await mongo[mongo_db_name].messages.find_one({"_id": 1})
        assert doc is not None
        assert doc["reactions"] == []
    state = await mongo[mongo_db_name].reactions.find_one({"_id": state_id(1, alice, THUMBS)})
    assert state is not None
    assert (state["on"], state["seq"]) == (False, 3)


async def test_a_burst_of_reactions_on_one_message_is_aggregated_per_batch(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    """1000 people react to one message at once: every reaction counts, and the
    message document is written once per ingest batch (a few times), not 1000 times."""
    room, author = kit.oid(), kit.oid()
    target = await publisher.publish(room, kit.message(room, author, "popular"))
    settings = make_settings()
    with recording_writes(mongo_db_name) as recorder:
        async with run_consumer(settings):
            await drain(publisher, settings, kit)
            recorder.writes.clear()
            for _ in range(1000):
                await publisher.publish(room, reaction(kit, room, kit.oid(), target, THUMBS))
            await drain(publisher, settings, kit)
    doc = await mongo[mongo_db_name].messages.find_one({"_id": target})
    assert doc is not None
    assert doc["reactions"] == [{"emoji": THUMBS, "count": 1000}]
    message_writes = [w for w in recorder.writes if w[1] == "messages"]
    # One aggregate update per batch; batches hold up to 256 records.
    assert len(message_writes) <= 1000 / 50, f"{len(message_writes)} writes of the message"
