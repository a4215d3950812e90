"""File blobs behind one interface, and the metadata history keeps about each file.

History owns room data and MongoDB, so it owns shared files too; the gateways relay
uploads and downloads here without keeping anything (docs/files.md).

- :class:`BlobStore` is the byte storage: GridFS in history's own database by default
  (:class:`GridFSBlobStore`, pymongo's ``AsyncGridFSBucket``) or an S3-compatible
  bucket (s3blobs.py), chosen by ``ROOMCAST_HISTORY_FILES_BACKEND`` (filesbackend.py).
  Blobs are written from an async iterator of chunks and read back as a byte range, so
  neither side holds a whole file in memory.
- :class:`FileCatalog` keeps one metadata document per file in ``files`` (room,
  uploader, name, size, content type, sha256, upload time) and answers whether a file
  is shared by a message the viewer may see.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gridfs import NoFile
from gridfs.asynchronous.grid_file import AsyncGridFSBucket
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from roomcast.history.store import MESSAGES, visible_to

Doc = dict[str, Any]

FILES = "files"
# GridFS's bucket name: its collections are blobs.files and blobs.chunks.
BLOB_BUCKET = "blobs"
# GridFS chunk: 255 KiB is GridFS's own default (a chunk document stays well under the
# 16 MB BSON limit and a range read touches at most one extra chunk).
GRIDFS_CHUNK_BYTES = 255 * 1024
# Bytes handed out per read of a range: one GridFS chunk, so a download holds about one
# chunk in memory at a time.
READ_BYTES = GRIDFS_CHUNK_BYTES
SHARED_INDEX = "body_file_id"


@dataclass(frozen=True, slots=True)
class FileMeta:
    id: str
    room_id: str
    uploader: str
    name: str
    size: int
    content_type: str
    sha256: str
    created_at: dt.datetime

    def to_public(self) -> Doc:
        """The ``file`` object of the upload answer and of a file message's body."""
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "content_type": self.content_type,
            "sha256": self.sha256,
        }


class BlobStore(Protocol):
    """Where file bytes live. ``put`` returns once every chunk is stored."""

    async def put(self, file_id: str, chunks: AsyncIterator[bytes]) -> None: ...

    def read(self, file_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` inclusive, in chunks of at most READ_BYTES."""
        ...

    async def delete(self, file_id: str) -> None: ...


class GridFSBlobStore:
    """Blobs as GridFS files in history's database (the default backend).

    Written chunk by chunk here rather than through pymongo's upload stream, which
    gathers up to 32 MiB of chunks before one ``insert_many`` (then encodes them too):
    over 100 MiB of peak memory for a 40 MiB upload. Each 255 KiB chunk is inserted as
    it fills, in GridFS's own layout (``blobs.chunks`` then the ``blobs.files``
    document, which makes the file visible), so reads and deletes use the bucket."""

    def __init__(self, client: AsyncMongoClient[Doc], db_name: str) -> None:
        db = client[db_name]
        self._bucket = AsyncGridFSBucket(
            db, bucket_name=BLOB_BUCKET, chunk_size_bytes=GRIDFS_CHUNK_BYTES
        )
        self._files: AsyncCollection[Doc] = db[f"{BLOB_BUCKET}.files"]
        self._chunks: AsyncCollection[Doc] = db[f"{BLOB_BUCKET}.chunks"]
        self._indexed = False

    async def _ensure_indexes(self) -> None:
        # GridFS's own two indexes (the ones pymongo's upload stream would create).
        if not self._indexed:
            await self._files.create_index([("filename", 1), ("uploadDate", 1)])
            await self._chunks.create_index([("files_id", 1), ("n", 1)], unique=True)
            self._indexed = True

    async def put(self, file_id: str, chunks: AsyncIterator[bytes]) -> None:
        await self._ensure_indexes()
        pending = bytearray()
        number = length = 0
        # The insert under way. A cancel (the client went away) must not interrupt it:
        # a request already sent is still applied by the server, possibly after the
        # cleanup's delete on another connection, leaving an orphan chunk (or a file
        # document without its chunks). So each insert is shielded, and the cleanup
        # waits for it before deleting.
        writing: asyncio.Future[Any] | None = None

        async def write(collection: AsyncCollection[Doc], doc: Doc) -> None:
            nonlocal writing
            writing = asyncio.ensure_future(collection.insert_one(doc))
            await asyncio.shield(writing)

        def chunk_doc(size: int) -> Doc:
            data = bytes(memoryview(pending)[:size])
            del pending[:size]
            return {"files_id": file_id, "n": number, "data": data}

        try:
            async for chunk in chunks:
                pending += chunk
                while len(pending) >= GRIDFS_CHUNK_BYTES:
                    await write(self._chunks, chunk_doc(GRIDFS_CHUNK_BYTES))
                    number += 1
                    length += GRIDFS_CHUNK_BYTES
            if pending:
                length += len(pending)
                await write(self._chunks, chunk_doc(len(pending)))
            file_doc = {
                "_id": file_id,
                "filename": file_id,
                "length": length,
                "chunkSize": GRIDFS_CHUNK_BYTES,
                "uploadDate": dt.datetime.now(dt.UTC),
            }
            await write(self._files, file_doc)
        except BaseException:
            # What was written so far, as pymongo's abort does, once the last insert has
            # an outcome: the file document first (if it was written as the upload was
            # cancelled), then the chunks. A failed delete leaves chunks no file
            # document points to, never a readable partial file.
            if writing is not None:
                await asyncio.wait([writing])
                if not writing.cancelled():
                    writing.exception()  # retrieved: its failure is the upload's
            with contextlib.suppress(PyMongoError):
                await self._files.delete_one({"_id": file_id})
                await self._chunks.delete_many({"files_id": file_id})
            raise

    async def read(self, file_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        stream = await self._bucket.open_download_stream(file_id)
        try:
            await stream.seek(start)
            left = end - start + 1
            while left > 0:
                data = await stream.read(min(READ_BYTES, left))
                if not data:
                    return
                left -= len(data)
                yield data
        finally:
            await stream.close()

    async def delete(self, file_id: str) -> None:
        # Already gone (a crash between blob and catalog deletes): nothing to do.
        with contextlib.suppress(NoFile):
            await self._bucket.delete(file_id)

    async def close(self) -> None:
        """Nothing of its own to release: the MongoDB client is the service's."""


class FileCatalog:
    """The ``files`` collection, and the file messages of ``messages`` that share them."""

    def __init__(self, client: AsyncMongoClient[Doc], db_name: str) -> None:
        db = client[db_name]
        self.files: AsyncCollection[Doc] = db[FILES]
        self.messages: AsyncCollection[Doc] = db[MESSAGES]

    async def ensure_indexes(self) -> None:
        # Only file messages carry body.file.id: the index stays small (sparse).
        await self.messages.create_index([("body.file.id", 1)], name=SHARED_INDEX, sparse=True)
        await self.files.create_index([("gc_checked_at", 1)], name="gc_checked_at")

    async def add(self, meta: FileMeta) -> None:
        await self.files.insert_one(
            {
                "_id": meta.id,
                "room_id": meta.room_id,
                "uploader": meta.uploader,
                "name": meta.name,
                "size": meta.size,
                "content_type": meta.content_type,
                "sha256": meta.sha256,
                "created_at": meta.created_at,
                "gc_checked_at": meta.created_at,
            }
        )

    async def get(self, file_id: str) -> FileMeta | None:
        doc = await self.files.find_one({"_id": file_id})
        if doc is None:
            return None
        return FileMeta(
            id=doc["_id"],
            room_id=doc["room_id"],
            uploader=doc["uploader"],
            name=doc["name"],
            size=doc["size"],
            content_type=doc["content_type"],
            sha256=doc["sha256"],
            created_at=doc["created_at"],
        )

    async def shared_with(self, meta: FileMeta, viewer_id: str) -> bool:
        """Whether a message of the file's room that the viewer may see shares it (a
        deleted message shares nothing; a private one only with its two ends)."""
        cursor = self.messages.find(
            {"room_id": meta.room_id, "body.file.id": meta.id, "deleted": {"$exists": False}},
            {"to": 1, "sender.id": 1},
        )
        async for doc in cursor.limit(MAX_SHARES_CHECKED):
            if visible_to(doc, viewer_id):
                return True
        return False

    async def is_shared(self, file_id: str) -> bool:
        doc = await self.messages.find_one(
            {"body.file.id": file_id, "deleted": {"$exists": False}}, {"_id": 1}
        )
        return doc is not None

    async def delete(self, file_id: str) -> None:
        await self.files.delete_one({"_id": file_id})


# Messages inspected when deciding whether a viewer may download a file: a file is
# normally shared once; 100 re-shares, all private to others, is already abuse.
MAX_SHARES_CHECKED = 100
