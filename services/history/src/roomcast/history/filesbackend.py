"""The blob store the settings choose (``ROOMCAST_HISTORY_FILES_BACKEND``).

GridFS needs nothing but history's MongoDB; S3 needs its bucket, region and keys, which
Settings requires when s3 is chosen. Either comes back as a :class:`OwnedBlobStore`: the
service closes it on shutdown (the S3 client's connection pool; nothing for GridFS).
"""

from __future__ import annotations

from typing import Any, Protocol

from pymongo import AsyncMongoClient

from roomcast.history.files import BlobStore, GridFSBlobStore
from roomcast.history.settings import Settings


class OwnedBlobStore(BlobStore, Protocol):
    async def close(self) -> None: ...


async def open_blob_store(settings: Settings, mongo: AsyncMongoClient[Any]) -> OwnedBlobStore:
    if settings.files_backend == "gridfs":
        return GridFSBlobStore(mongo, settings.mongo_db)
    # Imported here: a GridFS deployment never loads the S3 client.
    from roomcast.history.s3blobs import S3BlobStore, s3_config

    return await S3BlobStore.open(s3_config(settings))
