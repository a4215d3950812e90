"""The consumer against a real nats-server and a real SecantusDB: exactly-once storage,
redelivery, MongoDB outages, edits and deletes, stream creation."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import nats
import pytest
from nats.js.api import StorageType
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from roomcast.common.subjects import STREAM_NAME
from roomcast.history.consumer import consumer_config
from roomcast.history.records import parse_record
from roomcast.history.settings import Settings
from roomcast.history.store import HistoryStore
from roomcast.testing.processes import MongoServer, NatsServer

if TYPE_CHECKING:
    from conftest import Kit, Publisher, RunConsumer

Mongo = AsyncMongoClient[dict[str, Any]]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def stored_ids(mongo: Mongo, db: str) -> list[int]:
    return [d["_id"] async for d in mongo[db].messages.find({}, {"_id": 1})]


async def test_history_stores_every_message_exactly_once(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    rooms = [kit.oid() for _ in range(5)]
    user = kit.oid()
    # Some before the consumer exists, the rest while it runs.
    for i in range(150):
        await publisher.publish(rooms[i % 5], kit.message(rooms[i % 5], user, f"m{i}"))
    settings = make_settings(batch_size=64)
    async with run_consumer(settings):
        for i in range(150, 450):
            await publisher.publish(rooms[i % 5], kit.message(rooms[i % 5], user, f"m{i}"))
        # A gateway retrying a send: same Nats-Msg-Id, deduplicated by the stream.
        first = await publisher.publish(rooms[0], kit.message(rooms[0], user, "once"), "dup-1")
        again = await publisher.publish(rooms[0], kit.message(rooms[0], user, "once"), "dup-1")
        assert first == again
        total = await publisher.stream_messages()
        assert total == 451

        async def all_stored() -> bool:
            return await mongo[mongo_db_name].messages.count_documents({}) >= total

        await kit.eventually(all_stored, within=30, what="every message stored")

        async def watermark_at_total() -> bool:
            # The watermark follows the consumer's ack floor, read right after the acks.
            watermark = await mongo[mongo_db_name].meta.find_one({"_id": "stored"})
            return watermark is not None and watermark["seq"] == total

        await kit.eventually(watermark_at_total, within=10, what=f"the watermark at {total}")
        info = await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)
    ids = await stored_ids(mongo, mongo_db_name)
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == set(publisher.acked)
    assert info.num_pending == 0
    doc = await mongo[mongo_db_name].messages.find_one({"_id": first})
    assert doc is not None
    assert doc["room_id"] == rooms[0]
    assert doc["body"] == {"type": "text", "content": "once"}
    assert doc["sender"]["id"] == user
    assert isinstance(doc["stored_at"], dt.datetime)
    firsts = {r["_id"]: r["first_seq"] async for r in mongo[mongo_db_name].rooms.find({})}
    assert firsts == {room: i + 1 for i, room in enumerate(rooms)}


async def test_history_redelivery_after_write_before_ack_is_harmless(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    """A replica wrote a batch and died before acking it: the batch comes back to the
    next replica, whose writes are no-ops, and every message is stored once."""
    room, user = kit.oid(), kit.oid()
    # Ack timeout of 1 s so the "dead replica's" batch comes back quickly.
    settings = make_settings(ack_wait_seconds=1.0)
    for i in range(20):
        await publisher.publish(room, kit.message(room, user, f"m{i}"))
    await publisher.js.add_consumer(STREAM_NAME, consumer_config(settings))
    dead = await publisher.js.pull_subscribe_bind(
        durable=settings.consumer_name, stream=STREAM_NAME
    )
    batch = await dead.fetch(20, timeout=5)
    assert len(batch) == 20
    store = HistoryStore(mongo, mongo_db_name)
    await store.ensure_indexes()
    messages = [parse_record(m.metadata.sequence.stream, m.subject, m.data) for m in batch]
    # The write succeeded (twice, even: the same batch written again is a no-op)...
    now = dt.datetime.now(dt.UTC)
    assert await store.write_messages(messages, now=now) == 20  # type: ignore[arg-type]
    assert await store.write_messages(messages, now=now) == 0  # type: ignore[arg-type]
    await dead.unsubscribe()
    # ... and the replica died before acking. The next one gets the batch again.
    redeliveries = metric("roomcast_history_redeliveries_total")
    async with run_consumer(settings):
        for i in range(20, 30):
            await publisher.publish(room, kit.message(room, user, f"m{i}"))

        async def caught_up() -> bool:
            info = await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await kit.eventually(caught_up, within=30, what="every message acknowledged")
    assert metric("roomcast_history_redeliveries_total") - redeliveries >= 20
    ids = await stored_ids(mongo, mongo_db_name)
    assert sorted(ids) == sorted(publisher.acked)
    assert len(ids) == 30


async def test_history_mongo_down_means_no_ack_then_catches_up(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    restartable_mongo: MongoServer,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    room, user = kit.oid(), kit.oid()
    settings = make_settings(mongo_url=restartable_mongo.url)
    client: Mongo = AsyncMongoClient(restartable_mongo.url, serverSelectionTimeoutMS=3000)
    messages = client[mongo_db_name].messages

    async def consumer_state() -> Any:
        return await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)

    try:
        async with run_consumer(settings):
            for i in range(30):
                await publisher.publish(room, kit.message(room, user, f"before {i}"))

            async def first_stored() -> bool:
                # Stored and acknowledged (the ack follows the whole batch's write).
                try:
                    info = await consumer_state()
                except nats.js.errors.NotFoundError:
                    return False
                return bool(info.ack_floor.stream_seq == 30)

            await kit.eventually(first_stored, within=30, what="the first messages stored")
            assert await messages.count_documents({}) == 30
            await asyncio.to_thread(restartable_mongo.stop)
            write_errors = metric("roomcast_history_write_errors_total")
            for i in range(100):
                await publisher.publish(room, kit.message(room, user, f"during {i}"))

            async def failing() -> bool:
                # It fetched the new batch and its write has failed at least once.
                info = await consumer_state()
                return (
                    info.num_ack_pending > 0
                    and metric("roomcast_history_write_errors_total") > write_errors
                )

            await kit.eventually(failing, within=30, what="a failed write")
            info = await consumer_state()
            # Nothing after the first 30 is acknowledged while MongoDB is down.
            assert info.ack_floor.stream_seq == 30
            assert info.num_pending + info.num_ack_pending == 100

            async def lag_visible() -> bool:
                return metric("roomcast_history_consumer_lag_messages") == 100

            await kit.eventually(lag_visible, within=10, what="the lag gauge at 100")
            await asyncio.to_thread(restartable_mongo.start)

            async def caught_up() -> bool:
                info = await consumer_state()
                return info.num_pending == 0 and info.num_ack_pending == 0

            await kit.eventually(caught_up, within=60, what="catching up after MongoDB returned")

            async def no_lag() -> bool:
                return metric("roomcast_history_consumer_lag_messages") == 0

            await kit.eventually(no_lag, within=10, what="the lag gauge back at 0")
        ids = [d["_id"] async for d in messages.find({}, {"_id": 1})]
        assert sorted(ids) == list(range(1, 131))
    finally:
        await client.close()


async def test_history_applies_edits_and_deletes(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    room, other_room, alice, bob = kit.oid(), kit.oid(), kit.oid(), kit.oid()
    a1 = await publisher.publish(room, kit.message(room, alice, "first draft", client_id="c-a1"))
    a2 = await publisher.publish(room, kit.message(room, alice, "secret", client_id="c-a2"))
    b1 = await publisher.publish(room, kit.message(room, bob, "bob's"))
    elsewhere = await publisher.publish(other_room, kit.message(other_room, alice, "elsewhere"))
    invalid_before = {
        reason: metric("roomcast_history_invalid_records_total", reason=reason)
        for reason in ("not_the_sender", "target_deleted", "target_in_other_room", "target_missing")
    }
    edit = await publisher.publish(room, kit.edit(room, alice, a1, "final"))
    await publisher.publish(room, kit.edit(room, alice, b1, "alice rewrites bob"))
    await publisher.publish(room, kit.delete(room, alice, a2))
    await publisher.publish(room, kit.edit(room, alice, a2, "resurrected"))
    await publisher.publish(room, kit.delete(room, alice, elsewhere))
    await publisher.publish(room, kit.delete(room, alice, edit))
    last = await publisher.publish(room, b"{not json")
    settings = make_settings()
    async with run_consumer(settings):

        async def all_acked() -> bool:
            try:
                info = await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)
            except nats.js.errors.NotFoundError:
                return False  # not created yet
            return bool(info.ack_floor.stream_seq == last)

        await kit.eventually(all_acked, within=30, what="every record acknowledged")
    docs = {d["_id"]: d async for d in mongo[mongo_db_name].messages.find({})}
    # Edits and deletes are applied, not listed.
    assert set(docs) == {a1, a2, b1, elsewhere}
    assert docs[a1]["body"] == {"type": "text", "content": "final"}
    assert docs[a1]["edited_at"]
    assert docs[b1]["body"] == {"type": "text", "content": "bob's"}
    assert "edited_at" not in docs[b1]
    # The deleted message's content is gone from the document itself.
    tomb = docs[a2]
    assert tomb["deleted"] is True
    assert tomb["deleted_at"]
    assert "body" not in tomb
    assert "client_id" not in tomb
    assert "secret" not in repr(tomb)
    assert docs[elsewhere]["body"]["content"] == "elsewhere"
    for reason in ("not_the_sender", "target_deleted", "target_in_other_room", "target_missing"):
        seen = metric("roomcast_history_invalid_records_total", reason=reason)
        assert seen - invalid_before[reason] == 1, reason
    assert metric("roomcast_history_dead_letters_total", reason="malformed_json") >= 1


async def test_history_dead_letters_an_unparsable_record_and_stores_what_follows(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    """A record the gateways published but history cannot parse is kept in
    dead_letters (raw bytes, subject, headers, reason), counted, acknowledged once
    (not redelivered forever), and the messages after it are stored."""
    room, alice = kit.oid(), kit.oid()
    before = await publisher.publish(room, kit.message(room, alice, "before"))
    raw = b'{"kind": "message", "room": "\xff not json'
    bad = await publisher.publish(room, raw, "bad-1")
    nul = kit.message(room, alice, "nul \u0000 inside")
    bad_field = await publisher.publish(room, nul)
    after = [
        await publisher.publish(room, kit.message(room, alice, f"after {i}")) for i in range(5)
    ]
    counted = {
        reason: metric("roomcast_history_dead_letters_total", reason=reason)
        for reason in ("malformed_json", "bad_field")
    }
    settings = make_settings()
    async with run_consumer(settings):

        async def all_acked() -> bool:
            try:
                info = await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)
            except nats.js.errors.NotFoundError:
                return False  # not created yet
            return bool(info.ack_floor.stream_seq == after[-1] and info.num_ack_pending == 0)

        await kit.eventually(all_acked, within=30, what="every record acknowledged")
        info = await publisher.js.consumer_info(STREAM_NAME, settings.consumer_name)
        assert info.num_redelivered == 0
    ids = sorted(await stored_ids(mongo, mongo_db_name))
    assert ids == [before, *after]
    dead = {d["_id"]: d async for d in mongo[mongo_db_name].dead_letters.find({})}
    assert set(dead) == {bad, bad_field}
    assert dead[bad]["payload"] == raw
    assert dead[bad]["subject"] == f"chat.room.{room}"
    assert dead[bad]["headers"] == {"Nats-Msg-Id": "bad-1"}
    assert dead[bad]["reason"] == "malformed_json"
    assert isinstance(dead[bad]["at"], dt.datetime)
    assert dead[bad_field]["reason"] == "bad_field"
    assert "NUL" in dead[bad_field]["detail"]
    for reason, seen in counted.items():
        assert metric("roomcast_history_dead_letters_total", reason=reason) - seen == 1, reason


async def test_history_edit_order_and_repeats_do_not_matter(
    mongo: Mongo, mongo_db_name: str, kit: type[Kit]
) -> None:
    """An older edit redelivered after a newer one leaves the newer text; an edit
    redelivered after a delete does not bring the content back."""
    store = HistoryStore(mongo, mongo_db_name)
    await store.ensure_indexes()
    room, alice = kit.oid(), kit.oid()
    subject = f"chat.room.{room}"

    def rec(seq: int, record: dict[str, Any]) -> Any:
        import orjson

        return parse_record(seq, subject, orjson.dumps(record))

    async def nothing(_: int) -> None:
        return None

    now = dt.datetime.now(dt.UTC)
    await store.write_messages([rec(1, kit.message(room, alice, "v0"))], now=now)
    newer, older = rec(5, kit.edit(room, alice, 1, "v2")), rec(3, kit.edit(room, alice, 1, "v1"))
    assert await store.apply_changes([newer], load_target=nothing, now=now) == []
    assert await store.apply_changes([older, newer], load_target=nothing, now=now) == []
    doc = await mongo[mongo_db_name].messages.find_one({"_id": 1})
    assert doc is not None
    assert doc["body"]["content"] == "v2"
    assert doc["edit_seq"] == 5
    await store.apply_changes([rec(6, kit.delete(room, alice, 1))], load_target=nothing, now=now)
    rejected = await store.apply_changes([newer], load_target=nothing, now=now)
    assert [r.reason for r in rejected] == ["target_deleted"]
    doc = await mongo[mongo_db_name].messages.find_one({"_id": 1})
    assert doc is not None
    assert "body" not in doc
    assert "edit_seq" not in doc
    # The message itself redelivered after its delete stays deleted.
    await store.write_messages([rec(1, kit.message(room, alice, "v0"))], now=now)
    doc = await mongo[mongo_db_name].messages.find_one({"_id": 1})
    assert doc is not None
    assert doc["deleted"] is True
    assert "body" not in doc


async def test_history_change_whose_target_is_not_stored_yet_reads_it_from_the_stream(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    """With several replicas, an edit can be written before its target (held by
    another replica): the target is read from the stream and stored first."""
    room, alice = kit.oid(), kit.oid()
    settings = make_settings()
    target = await publisher.publish(room, kit.message(room, alice, "draft"))
    # Another replica takes the message and has not written it yet.
    await publisher.js.add_consumer(STREAM_NAME, consumer_config(settings))
    other = await publisher.js.pull_subscribe_bind(
        durable=settings.consumer_name, stream=STREAM_NAME
    )
    (held,) = await other.fetch(1, timeout=5)
    await held.ack()
    await other.unsubscribe()
    edit = await publisher.publish(room, kit.edit(room, alice, target, "edited"))
    async with run_consumer(settings):

        async def edited() -> bool:
            doc = await mongo[mongo_db_name].messages.find_one({"_id": target})
            return doc is not None and doc["body"]["content"] == "edited"

        await kit.eventually(edited, within=30, what="the edit applied")
    assert await stored_ids(mongo, mongo_db_name) == [target]
    assert edit == target + 1


async def test_history_creates_the_stream_when_missing(
    nats_url: str,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    kit: type[Kit],
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        async with run_consumer(make_settings()):

            async def stream_exists() -> bool:
                try:
                    await js.stream_info(STREAM_NAME)
                    return True
                except nats.js.errors.NotFoundError:
                    return False

            await kit.eventually(stream_exists, within=30, what="the CHAT stream")
        config = (await js.stream_info(STREAM_NAME)).config
        assert config.subjects == ["chat.room.*"]
        assert config.storage == StorageType.FILE
        assert config.republish is not None
        assert (config.republish.src, config.republish.dest) == ("chat.room.>", "live.room.>")
        assert config.duplicate_window == pytest.approx(120)
        assert config.max_age == pytest.approx(7 * 24 * 3600)
        assert config.max_msgs_per_subject == 100_000
        assert config.allow_direct is True
        # A live message is republished with its sequence.
        sub = await nc.subscribe("live.room.>")
        room = kit.oid()
        ack = await js.publish(f"chat.room.{room}", b"{}")
        live = await sub.next_msg(timeout=5)
        assert live.headers is not None
        assert live.headers["Nats-Sequence"] == str(ack.seq)
    finally:
        await nc.close()


async def test_history_rides_out_a_nats_restart(
    nats_server: NatsServer,
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    room, user = kit.oid(), kit.oid()
    messages = mongo[mongo_db_name].messages
    async with run_consumer(make_settings()) as consumer:
        for i in range(20):
            await publisher.publish(room, kit.message(room, user, f"before {i}"))

        def count_is(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return await messages.count_documents({}) == n

            return check

        await kit.eventually(count_is(20), within=30, what="20 stored")
        # nats-server goes away and comes back on the same port with its data.
        await asyncio.to_thread(nats_server.stop)

        async def disconnected() -> bool:
            return not consumer.nats_connected

        await kit.eventually(disconnected, within=10, what="the consumer to notice")
        await asyncio.to_thread(nats_server.start)

        async def reconnected() -> bool:
            return consumer.nats_connected and publisher.nc.is_connected

        await kit.eventually(reconnected, within=30, what="both clients to reconnect")
        for i in range(20):
            await publisher.publish(room, kit.message(room, user, f"after {i}"))
        await kit.eventually(count_is(40), within=30, what="40 stored")
    assert sorted(await stored_ids(mongo, mongo_db_name)) == list(range(1, 41))
