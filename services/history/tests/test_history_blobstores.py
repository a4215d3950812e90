"""Both blob stores behind the same BlobStore contract: GridFS on a real SecantusDB and
S3 on moto's real S3-compatible server. Round trips, ranges across S3 part
boundaries, failed uploads that leave nothing behind, idempotent deletes, the
collection of unshared files, and the settings that choose a backend."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from roomcast.history.errors import FileTooLarge
from roomcast.history.files import GRIDFS_CHUNK_BYTES, READ_BYTES, FileCatalog, FileMeta
from roomcast.history.filesbackend import OwnedBlobStore, open_blob_store
from roomcast.history.filesgc import FileCollector
from roomcast.history.s3blobs import MIN_PART_BYTES, S3BlobStore
from roomcast.history.settings import Settings

if TYPE_CHECKING:
    from conftest import BlobStorage, Kit, S3Server

MiB = 1024 * 1024


@dataclass
class Backend:
    """A blob store, and a look at its storage to check for leftovers."""

    blobs: OwnedBlobStore
    storage: BlobStorage

    async def stored(self) -> tuple[int, int]:
        return await self.storage.stored()


@pytest.fixture
async def backend(blob_storage: BlobStorage) -> AsyncIterator[Backend]:
    """Each backend in turn; S3 with its smallest part, so 12 MiB take three parts."""
    if blob_storage.s3 is None:
        settings = Settings(mongo_db=blob_storage.db_name)
        blobs = await open_blob_store(settings, blob_storage.mongo)
    else:
        config = blob_storage.s3.config(blob_storage.bucket, part_bytes=MIN_PART_BYTES)
        blobs = await S3BlobStore.open(config)
    yield Backend(blobs, blob_storage)
    await blobs.close()


async def chunked(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``data`` as an upload hands it over: in socket-sized chunks."""
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def read_all(blobs: OwnedBlobStore, file_id: str, start: int, end: int) -> bytes:
    parts = [chunk async for chunk in blobs.read(file_id, start, end)]
    assert all(0 < len(chunk) <= READ_BYTES for chunk in parts)
    return b"".join(parts)


async def test_round_trip_and_ranges_across_parts(backend: Backend, kit: type[Kit]) -> None:
    data = os.urandom(12 * MiB + 123)
    big, small = kit.oid(), kit.oid()
    await backend.blobs.put(big, chunked(data))
    await backend.blobs.put(small, chunked(b"hello, file"))
    assert await backend.stored() == (2, 0)

    whole = await read_all(backend.blobs, big, 0, len(data) - 1)
    assert hashlib.sha256(whole).hexdigest() == hashlib.sha256(data).hexdigest()
    boundary = MIN_PART_BYTES  # where the first S3 part ends
    for start, end in [
        (0, 0),
        (100, 199),
        (boundary - 10, boundary + 10),
        (2 * boundary - 1, 2 * boundary),
        (len(data) - 5, len(data) - 1),
    ]:
        assert await read_all(backend.blobs, big, start, end) == data[start : end + 1]
    assert await read_all(backend.blobs, small, 7, 10) == b"file"

    await backend.blobs.delete(big)
    await backend.blobs.delete(big)  # already gone: no error
    assert await backend.stored() == (1, 0)
    assert await read_all(backend.blobs, small, 0, 10) == b"hello, file"


async def test_an_upload_that_fails_leaves_nothing_behind(backend: Backend, kit: type[Kit]) -> None:
    async def too_large(limit: int) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in chunked(os.urandom(limit + 64 * 1024)):
            sent += len(chunk)
            if sent > limit:
                raise FileTooLarge(f"the file is larger than {limit} bytes")
            yield chunk

    # Past one S3 part (a multipart upload has begun and must be aborted), and within
    # the first part (nothing was sent yet).
    for limit in (MIN_PART_BYTES + MiB, MiB):
        with pytest.raises(FileTooLarge):
            await backend.blobs.put(kit.oid(), too_large(limit))
        assert await backend.stored() == (0, 0), f"{backend.storage.name}, limit {limit}"


async def test_an_upload_cancelled_midway_leaves_nothing_behind(
    backend: Backend, kit: type[Kit]
) -> None:
    """The client goes away (the request's task is cancelled) after part of the file is
    stored: GridFS chunks, or an S3 part of a begun multipart upload."""
    stalled = asyncio.Event()

    async def then_stall() -> AsyncIterator[bytes]:
        async for chunk in chunked(os.urandom(MIN_PART_BYTES + MiB)):
            yield chunk
        await stalled.wait()  # never set: the client stops sending

    # Several times: where the cancel lands (between writes, or while one is on its way
    # to the store) varies from one upload to the next.
    for attempt in range(4):
        upload = asyncio.create_task(backend.blobs.put(kit.oid(), then_stall()))

        async def partly_stored() -> bool:
            return (await backend.stored())[1] > 0

        await kit.eventually(partly_stored, within=30, what="part of the upload stored")
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        assert await backend.stored() == (0, 0), f"upload {attempt}"


async def cancelled_at_the_end(
    data: bytes, upload: list[asyncio.Task[None]]
) -> AsyncIterator[bytes]:
    """``data`` in socket-sized chunks; once put has all of it, its task is cancelled
    at its next await: the request that makes the file (GridFS's file document, S3's
    PutObject or CompleteMultipartUpload), which is then on its way."""
    async for chunk in chunked(data):
        yield chunk
    asyncio.get_running_loop().call_soon(upload[0].cancel)


async def test_an_upload_cancelled_as_it_finishes_leaves_nothing_behind(
    backend: Backend, kit: type[Kit]
) -> None:
    unit = GRIDFS_CHUNK_BYTES if backend.storage.s3 is None else MIN_PART_BYTES
    # One request's worth, and two whole stored units (nothing is left to write but
    # the request that makes the file).
    for size in (11, 2 * unit):
        upload: list[asyncio.Task[None]] = []
        data = os.urandom(size)
        upload.append(
            asyncio.create_task(backend.blobs.put(kit.oid(), cancelled_at_the_end(data, upload)))
        )
        with pytest.raises(asyncio.CancelledError):
            await upload[0]
        assert await backend.stored() == (0, 0), f"{size} bytes"


async def test_unshared_files_are_collected_after_the_grace_period(
    backend: Backend, kit: type[Kit]
) -> None:
    catalog = FileCatalog(backend.storage.mongo, backend.storage.db_name)
    await catalog.ensure_indexes()
    blobs = backend.blobs
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    room = kit.oid()
    ids = []
    for i in range(5):
        file_id = kit.oid()
        ids.append(file_id)
        await blobs.put(file_id, chunked(b"x" * 1000))
        await catalog.add(FileMeta(file_id, room, "u", f"f{i}", 1000, "text/plain", "0", old))
    # ids[0] is shared by a live message, ids[1] only by a deleted one.
    await catalog.messages.insert_many(
        [
            {"_id": 1, "room_id": room, "body": {"type": "file", "file": {"id": ids[0]}}},
            {
                "_id": 2,
                "room_id": room,
                "deleted": True,
                "body": {"type": "file", "file": {"id": ids[1]}},
            },
        ]
    )
    collector = FileCollector(catalog, blobs, grace_seconds=3600, batch=2, interval_seconds=60)
    assert await collector.collect_once() == 1  # bounded: 2 examined, one of them shared
    total = 1
    while (removed := await collector.collect_once()) > 0:
        total += removed
    assert total == 4
    left = [d["_id"] async for d in catalog.files.find({}, {"_id": 1})]
    assert left == [ids[0]]
    assert await read_all(blobs, ids[0], 0, 999) == b"x" * 1000
    assert await backend.stored() == (1, 0)

    fresh = FileCollector(catalog, blobs, grace_seconds=3 * 3600, batch=10, interval_seconds=60)
    await catalog.messages.delete_many({})
    assert await fresh.collect_once() == 0  # within its grace period: kept


def test_s3_is_chosen_only_with_its_bucket_region_and_keys(s3_server: S3Server) -> None:
    assert Settings().files_backend == "gridfs"  # nothing to configure for GridFS
    with pytest.raises(ValidationError) as refused:
        Settings(files_backend="s3", files_s3_bucket="roomcast-files")
    message = str(refused.value)
    for missing in ("REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY"):
        assert f"ROOMCAST_HISTORY_FILES_S3_{missing}" in message
    assert "ROOMCAST_HISTORY_FILES_S3_BUCKET" not in message
    with pytest.raises(ValidationError):  # S3's minimum part size
        Settings(**_s3_values(s3_server), files_s3_part_bytes=MIN_PART_BYTES - 1)
    settings = Settings(**_s3_values(s3_server))
    assert s3_server.secret_access_key not in repr(settings)


async def test_settings_open_an_s3_store(
    s3_server: S3Server, s3_bucket: str, mongo: AsyncMongoClient[dict[str, Any]], kit: type[Kit]
) -> None:
    settings = Settings(**{**_s3_values(s3_server), "files_s3_bucket": s3_bucket})
    blobs = await open_blob_store(settings, mongo)
    try:
        file_id = kit.oid()
        await blobs.put(file_id, chunked(b"through the settings"))
        async with s3_server.client() as client:
            listed = await client.list_objects_v2(Bucket=s3_bucket)
        # Under the configured prefix, named by the file id.
        assert [o["Key"] for o in listed["Contents"]] == [f"files/{file_id}"]
    finally:
        await blobs.close()


def _s3_values(s3: S3Server) -> dict[str, Any]:
    return dict(s3.history_env("roomcast-files"))
