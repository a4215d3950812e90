"""Files leave with the messages retention purges, against a real history process, a
real nats-server (the periods bucket) and a real SecantusDB (GridFS): a purged
message's file is refused and its blob deleted in the same round, a file another kept
message shares stays, a round deletes no more files than its message budget, and a
round that died between deleting a file's metadata and its blob is finished by the
next one. And a file whose message its sender deleted is collected by filesgc.py a
grace period later."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import nats
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from roomcast.common import retention
from roomcast.history.files import BlobStore, FileCatalog, FileMeta, GridFSBlobStore
from roomcast.history.filesgc import FileCollector
from roomcast.history.retention import RetentionPurger
from roomcast.history.retentionfiles import PURGING
from roomcast.history.settings import Settings
from roomcast.testing.fakes import FakeRooms

if TYPE_CHECKING:
    from conftest import History, Kit, Publisher, RunConsumer

Mongo = AsyncMongoClient[dict[str, Any]]
FILES_DELETED = "roomcast_history_retention_files_deleted_total"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def days_ago(days: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat()


async def upload(history: History, room: str, token: str, data: bytes) -> dict[str, Any]:
    response = await history.client.post(
        f"/v1/rooms/{room}/files",
        headers=auth(token),
        files={"file": ("f.bin", data, "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    file: dict[str, Any] = response.json()["file"]
    return file


async def share(
    publisher: Publisher, kit: type[Kit], room: str, user: str, file: dict[str, Any], age: float
) -> int:
    """A file message sent ``age`` days ago."""
    record = kit.message(room, user, "x")
    record["body"] = {"type": "file", "file": file}
    record["sent_at"] = days_ago(age)
    return await publisher.publish(room, record)


async def blob_exists(mongo: Mongo, db: str, file_id: str) -> bool:
    count: int = await mongo[db]["blobs.files"].count_documents({"_id": file_id})
    return count == 1


async def download(history: History, token: str, file_id: str) -> httpx.Response:
    response: httpx.Response = await history.client.get(f"/v1/files/{file_id}", headers=auth(token))
    return response


async def started(
    start_history: Callable[..., Any], fake_rooms: FakeRooms, room: str, user: str
) -> History:
    fake_rooms.add_member(room, user)
    # The process's own purger must not race the test's: one round at start, then
    # none for a day.
    history: History = await start_history(retention_interval_seconds="86400")
    return history


def files_deleted() -> float:
    return REGISTRY.get_sample_value(FILES_DELETED) or 0.0


async def test_a_purged_messages_file_leaves_and_a_file_still_shared_stays(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    make_settings: Callable[..., Settings],
    mongo: Mongo,
    mongo_db_name: str,
    nats_url: str,
    kit: type[Kit],
) -> None:
    room, alice = kit.oid(), kit.oid()
    history = await started(start_history, fake_rooms, room, alice)
    token = issue_token(user_id=alice)
    gone_data, kept_data = os.urandom(300_000), os.urandom(1000)
    gone = await upload(history, room, token, gone_data)
    kept = await upload(history, room, token, kept_data)
    # ``gone`` is shared once, 10 days ago; ``kept`` 10 days ago and again today.
    await share(publisher, kit, room, alice, gone, 10)
    await share(publisher, kit, room, alice, kept, 10)
    last = await share(publisher, kit, room, alice, kept, 0)
    await history.wait_stored(kit, room, token, last)
    assert (await download(history, token, gone["id"])).content == gone_data

    nc = await nats.connect(nats_url)
    kv = await retention.open_bucket(nc.jetstream(), replicas=1, create=True)
    await kv.put(room, retention.encode(7))
    blobs = GridFSBlobStore(mongo, mongo_db_name)
    purger = RetentionPurger(make_settings(retention_batch_pause_seconds=0), mongo, blobs=blobs)
    before = files_deleted()
    try:
        assert await purger.run_round() == 2
    finally:
        await purger.close()
        await kv.delete(room)
        await nc.close()

    # Gone in the same round: refused, no metadata, no blob.
    assert (await download(history, token, gone["id"])).status_code == 404
    assert await mongo[mongo_db_name].files.find_one({"_id": gone["id"]}) is None
    assert not await blob_exists(mongo, mongo_db_name, gone["id"])
    assert files_deleted() == before + 1
    # Still shared by today's message: served whole.
    response = await download(history, token, kept["id"])
    assert response.status_code == 200
    assert response.content == kept_data
    assert await blob_exists(mongo, mongo_db_name, kept["id"])


async def test_a_round_deletes_no_more_files_than_its_message_budget(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    make_settings: Callable[..., Settings],
    mongo: Mongo,
    mongo_db_name: str,
    nats_url: str,
    kit: type[Kit],
) -> None:
    room, alice = kit.oid(), kit.oid()
    history = await started(start_history, fake_rooms, room, alice)
    token = issue_token(user_id=alice)
    files = [await upload(history, room, token, os.urandom(2000)) for _ in range(3)]
    last = 0
    for file in files:
        last = await share(publisher, kit, room, alice, file, 30)
    await history.wait_stored(kit, room, token, last)

    nc = await nats.connect(nats_url)
    kv = await retention.open_bucket(nc.jetstream(), replicas=1, create=True)
    await kv.put(room, retention.encode(7))
    settings = make_settings(
        retention_batch_size=1, retention_batch_pause_seconds=0, retention_max_per_round=2
    )
    purger = RetentionPurger(settings, mongo, blobs=GridFSBlobStore(mongo, mongo_db_name))
    try:
        assert await purger.run_round() == 2
        present = [await blob_exists(mongo, mongo_db_name, f["id"]) for f in files]
        assert present == [False, False, True]
        # The third message is still there, and so is its file.
        assert (await download(history, token, files[2]["id"])).status_code == 200
        assert await purger.run_round() == 1
    finally:
        await purger.close()
        await kv.delete(room)
        await nc.close()
    assert not await blob_exists(mongo, mongo_db_name, files[2]["id"])
    assert (await download(history, token, files[2]["id"])).status_code == 404


class FailingOnce:
    """The real GridFS store, whose first delete fails as a storage outage would: the
    round dies between a file's metadata and its blob."""

    def __init__(self, inner: GridFSBlobStore) -> None:
        self.inner = inner
        self.failed = False

    async def put(self, file_id: str, chunks: AsyncIterator[bytes]) -> None:
        await self.inner.put(file_id, chunks)

    def read(self, file_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        return self.inner.read(file_id, start, end)

    async def delete(self, file_id: str) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("blob storage unreachable")
        await self.inner.delete(file_id)

    async def close(self) -> None:
        """Nothing to release: the MongoDB client is the test's."""


async def test_a_round_killed_between_metadata_and_blob_is_finished_by_the_next(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    make_settings: Callable[..., Settings],
    mongo: Mongo,
    mongo_db_name: str,
    nats_url: str,
    kit: type[Kit],
) -> None:
    room, alice = kit.oid(), kit.oid()
    history = await started(start_history, fake_rooms, room, alice)
    token = issue_token(user_id=alice)
    file = await upload(history, room, token, os.urandom(5000))
    seq = await share(publisher, kit, room, alice, file, 30)
    await history.wait_stored(kit, room, token, seq)

    nc = await nats.connect(nats_url)
    kv = await retention.open_bucket(nc.jetstream(), replicas=1, create=True)
    await kv.put(room, retention.encode(7))
    blobs: BlobStore = FailingOnce(GridFSBlobStore(mongo, mongo_db_name))
    settings = make_settings(retention_batch_pause_seconds=0)
    purger = RetentionPurger(settings, mongo, blobs=blobs)
    try:
        failed = False
        try:
            await purger.run_round()
        except OSError:
            failed = True
        assert failed, "the blob store's failure ends the round"
        # Access went first: the file is refused while its blob still exists.
        assert (await download(history, token, file["id"])).status_code == 404
        assert await mongo[mongo_db_name].files.find_one({"_id": file["id"]}) is None
        assert await blob_exists(mongo, mongo_db_name, file["id"])
        # The next round finishes what the dead one started.
        await purger.run_round()
    finally:
        await purger.close()
        await kv.delete(room)
        await nc.close()
    assert not await blob_exists(mongo, mongo_db_name, file["id"])


async def test_a_deleted_file_messages_blob_is_collected_a_grace_period_later(
    publisher: Publisher,
    make_settings: Callable[..., Settings],
    run_consumer: RunConsumer,
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    # Not retention: the sender's delete frame. The delete removes the stored body (and
    # its file reference), so the collector finds the file unshared and reclaims it.
    room, alice = kit.oid(), kit.oid()
    catalog = FileCatalog(mongo, mongo_db_name)
    await catalog.ensure_indexes()
    blobs = GridFSBlobStore(mongo, mongo_db_name)
    file_id = kit.oid()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"y" * 3000

    await blobs.put(file_id, chunks())
    now = dt.datetime.now(dt.UTC)
    digest = hashlib.sha256(b"y" * 3000).hexdigest()
    meta = FileMeta(file_id, room, alice, "f", 3000, "text/plain", digest, now)
    await catalog.add(meta)
    seq = await share(publisher, kit, room, alice, meta.to_public(), 0)
    await publisher.publish(room, kit.delete(room, alice, seq))
    async with run_consumer(make_settings()):

        async def deleted() -> bool:
            doc = await catalog.messages.find_one({"_id": seq})
            return doc is not None and bool(doc.get("deleted"))

        await kit.eventually(deleted, within=20, what="the file message deleted")

    later = FileCollector(
        catalog,
        blobs,
        grace_seconds=86_400,
        batch=10,
        interval_seconds=600,
        now=lambda: now + dt.timedelta(days=2),
    )
    assert await later.collect_once() == 1
    assert not await blob_exists(mongo, mongo_db_name, file_id)
    assert await catalog.get(file_id) is None


async def test_an_intent_left_before_its_messages_went_keeps_a_file_still_shared(
    make_settings: Callable[..., Settings],
    mongo: Mongo,
    mongo_db_name: str,
    kit: type[Kit],
) -> None:
    # A round died after recording its intents but before deleting the messages, and
    # the room's period was then removed: the message stays, so its file must too.
    room, alice = kit.oid(), kit.oid()
    catalog = FileCatalog(mongo, mongo_db_name)
    await catalog.ensure_indexes()
    blobs = GridFSBlobStore(mongo, mongo_db_name)
    kept, orphan = kit.oid(), kit.oid()
    for file_id in (kept, orphan):

        async def chunks() -> AsyncIterator[bytes]:
            yield b"z" * 100

        await blobs.put(file_id, chunks())
    now = dt.datetime.now(dt.UTC)
    await catalog.add(FileMeta(kept, room, alice, "f", 100, "text/plain", "0", now))
    await catalog.messages.insert_one(
        {"_id": 1, "room_id": room, "body": {"type": "file", "file": {"id": kept}}}
    )
    # ``orphan`` lost its metadata before the round died: only its blob is left.
    intents = mongo[mongo_db_name][PURGING]
    await intents.insert_many([{"_id": kept, "at": now}, {"_id": orphan, "at": now}])

    purger = RetentionPurger(make_settings(), mongo, blobs=blobs)
    try:
        await purger.run_round()
    finally:
        await purger.close()
    assert await intents.count_documents({}) == 0
    assert await catalog.get(kept) is not None
    assert await blob_exists(mongo, mongo_db_name, kept)
    assert not await blob_exists(mongo, mongo_db_name, orphan)
