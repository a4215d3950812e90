"""Files leave with the messages retention purges (retention.py), in the same round.

A file can be shared by several messages: the gateway lets its uploader send it in
the room it was uploaded to as often as they like, so one file may be shared by an old
message and again by a young one. A purge batch therefore deletes a file only when no
message outside the batch that is not deleted still shares it; otherwise the file
stays, and leaves with the last message that shares it (or, if that one is deleted by
its sender, with the unshared-files collection of filesgc.py).

Order, chosen so that a round killed at any point never leaves metadata a member
could download whose blob is gone, and never leaks a blob for good:

1. the files the batch takes are written to ``files_purging`` (``{_id: file_id, at}``,
   an intent), before the batch's messages are deleted;
2. the messages are deleted (retention.py);
3. per file: its metadata in ``files`` is deleted (downloads and new shares answer
   404 from then on: both read the metadata first), then its blob
   (``BlobStore.delete``, idempotent), then its intent.

A round that dies after step 1 leaves intents; every round starts by finishing up to
``retention_batch_size`` of them (step 3, see ``finish``), so the blob goes on the next
round instead of never (metadata first alone would orphan it: the collector walks metadata, not
blobs). Deleting the blob first instead would let a crash leave metadata with no
bytes behind it, served as a broken download to anyone a live message shares it with.
Several replicas may finish the same intent; every step is idempotent.

A narrow race stays: a new share of the file accepted by the gateway between step 1's
check and step 3 (or on the gateway's one-minute cache of an earlier check,
fileshares.py) ends as a message whose file answers 404. It needs the uploader to
re-share a file whose every stored message was just past its period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import Counter
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from roomcast.history.files import FILES, BlobStore
from roomcast.history.store import MESSAGES

Doc = dict[str, Any]

PURGING = "files_purging"

FILES_DELETED = Counter(
    "roomcast_history_retention_files_deleted_total",
    "Files (metadata and blob) deleted because every message sharing them was purged by retention.",
)


def shared_file(doc: Doc) -> str | None:
    """The file a stored message shares (``body.file.id``), if any."""
    body = doc.get("body")
    file = body.get("file") if isinstance(body, dict) else None
    file_id = file.get("id") if isinstance(file, dict) else None
    return file_id if isinstance(file_id, str) else None


class PurgedFiles:
    """The files of purged messages: which ones go, and deleting them crash-safely."""

    def __init__(self, db: AsyncDatabase[Doc], blobs: BlobStore) -> None:
        self.messages: AsyncCollection[Doc] = db[MESSAGES]
        self.files: AsyncCollection[Doc] = db[FILES]
        self.intents: AsyncCollection[Doc] = db[PURGING]
        self.blobs = blobs

    async def take(self, due: Sequence[int], docs: Iterable[Doc]) -> list[str]:
        """Of the files the ``due`` messages share, those no other live message
        shares; an intent is recorded for each before the caller deletes ``due``."""
        wanted = sorted({f for doc in docs if (f := shared_file(doc)) is not None})
        if not wanted:
            return []
        # Served by the sparse body.file.id index (files.py): one equality per file.
        kept = await self.messages.distinct(
            "body.file.id",
            {
                "body.file.id": {"$in": wanted},
                "_id": {"$nin": list(due)},
                "deleted": {"$exists": False},
            },
        )
        taken = [f for f in wanted if f not in set(kept)]
        if taken:
            now = dt.datetime.now(dt.UTC)
            await self.intents.bulk_write(
                [UpdateOne({"_id": f}, {"$setOnInsert": {"at": now}}, upsert=True) for f in taken],
                ordered=False,
            )
        return taken

    async def delete(self, file_ids: Iterable[str]) -> int:
        """Metadata, then blob, then intent, file by file; how many files were deleted
        (metadata found: another replica may have been first)."""
        deleted = 0
        for file_id in file_ids:
            result = await self.files.delete_one({"_id": file_id})
            FILES_DELETED.inc(result.deleted_count)
            deleted += result.deleted_count
            await self.blobs.delete(file_id)
            await self.intents.delete_one({"_id": file_id})
        return deleted

    async def finish(self, limit: int) -> int:
        """Finish up to ``limit`` deletions a dead round left (their intents); how
        many files were deleted.

        A file whose metadata is still there and that a live message shares is kept
        (the intent alone goes): the round died before deleting its messages, and they
        may no longer be due (the period was removed); whichever round purges its last
        message takes it again. Without metadata nobody can download it any more, so
        its blob goes whatever shares it."""
        cursor = self.intents.find({}, {"_id": 1}).limit(limit)
        left = [str(doc["_id"]) async for doc in cursor]
        doomed: list[str] = []
        for file_id in left:
            if await self.files.find_one({"_id": file_id}, {"_id": 1}) is not None and (
                await self.messages.find_one(
                    {"body.file.id": file_id, "deleted": {"$exists": False}}, {"_id": 1}
                )
                is not None
            ):
                await self.intents.delete_one({"_id": file_id})
            else:
                doomed.append(file_id)
        return await self.delete(doomed) if doomed else 0
