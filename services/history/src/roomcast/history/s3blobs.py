"""File blobs in an S3-compatible bucket (``ROOMCAST_HISTORY_FILES_BACKEND=s3``).

The same :class:`~roomcast.history.files.BlobStore` contract as GridFS, over the S3 API
with aiobotocore (asyncio-native, so no thread holds a request):

- ``put`` streams: chunks gather into one part of ``part_bytes`` (S3 refuses parts
  under 5 MiB but the last), each full part is sent with ``UploadPart`` before more of
  the upload is read, so an upload holds about one part in memory. A file smaller than
  one part goes in one ``PutObject``. Any failure, a file over the limit included,
  aborts the multipart upload so that no object and no stored parts are left behind;
  a cancelled upload first lets the request it was sending finish, so that nothing
  it stores lands after the cleanup.
- ``read`` asks for the byte range with ``GetObject`` and ``Range`` and hands the
  response body on in chunks of at most ``READ_BYTES``.
- ``delete`` is ``DeleteObject``, which succeeds for a key that is already gone (the
  collector and retention may both delete the same file).
- ``check_bucket`` is ``HeadBucket``, for history's readiness (filesready.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from roomcast.history.errors import BlobStoreUnavailable
from roomcast.history.files import READ_BYTES
from roomcast.history.settings import Settings

log = logging.getLogger(__name__)

# The smallest part S3 accepts in a multipart upload, but for the last one.
MIN_PART_BYTES = 5 * 1024 * 1024
# Attempts per request (botocore's "standard" retry mode, which backs off with jitter):
# rides out a throttling answer or a dropped connection without holding an upload for
# long; a store that fails three times in a row answers 503.
MAX_ATTEMPTS = 3
# Connections kept to the store: one per upload or download in flight; 32 covers a
# replica's concurrent transfers without opening a socket per request.
MAX_POOL_CONNECTIONS = 32
# How long cleaning up a failed upload (abort, or delete of an object completed as the
# upload was cancelled) may take: it runs after the request already failed, and a
# stuck clean-up must not hold the handler (a bucket lifecycle rule is the backstop,
# docs/files.md).
ABORT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class S3Config:
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str
    endpoint_url: str | None = None
    addressing_style: str = "auto"
    key_prefix: str = "files/"
    part_bytes: int = 8 * 1024 * 1024
    timeout_seconds: float = 30.0


def s3_config(settings: Settings) -> S3Config:
    """The S3 fields of history's settings (Settings already refused s3 without them)."""
    if (
        settings.files_s3_bucket is None
        or settings.files_s3_region is None
        or settings.files_s3_access_key_id is None
        or settings.files_s3_secret_access_key is None
    ):
        raise ValueError("files_backend=s3 needs a bucket, a region and keys")
    return S3Config(
        bucket=settings.files_s3_bucket,
        region=settings.files_s3_region,
        access_key_id=settings.files_s3_access_key_id.get_secret_value(),
        secret_access_key=settings.files_s3_secret_access_key.get_secret_value(),
        endpoint_url=settings.files_s3_endpoint_url,
        addressing_style=settings.files_s3_addressing_style,
        key_prefix=settings.files_s3_key_prefix,
        part_bytes=settings.files_s3_part_bytes,
        timeout_seconds=settings.files_s3_timeout_seconds,
    )


class S3BlobStore:
    """Blobs as objects ``<key_prefix><file id>`` of one bucket."""

    def __init__(self, config: S3Config, client: Any, exits: contextlib.AsyncExitStack) -> None:
        if config.part_bytes < MIN_PART_BYTES:
            raise ValueError(f"S3 parts must be at least {MIN_PART_BYTES} bytes")
        self._config = config
        self._client = client
        self._exits = exits

    @classmethod
    async def open(cls, config: S3Config) -> S3BlobStore:
        """A store with its client connected (no request is made until the first use)."""
        exits = contextlib.AsyncExitStack()
        client = await exits.enter_async_context(
            get_session().create_client(
                "s3",
                region_name=config.region,
                endpoint_url=config.endpoint_url,
                aws_access_key_id=config.access_key_id,
                aws_secret_access_key=config.secret_access_key,
                config=AioConfig(
                    connect_timeout=config.timeout_seconds,
                    read_timeout=config.timeout_seconds,
                    retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                    max_pool_connections=MAX_POOL_CONNECTIONS,
                    s3={"addressing_style": config.addressing_style},
                ),
            )
        )
        return cls(config, client, exits)

    async def close(self) -> None:
        await self._exits.aclose()

    def key(self, file_id: str) -> str:
        return f"{self._config.key_prefix}{file_id}"

    @property
    def bucket(self) -> str:
        return self._config.bucket

    async def put(self, file_id: str, chunks: AsyncIterator[bytes]) -> None:
        key = self.key(file_id)
        # A part gathers in a BytesIO, which aiohttp sends in small writes: a bytes or
        # bytearray body is copied whole on its way to the socket (measured: 29 MiB of
        # peak for 8 MiB parts, against 11 MiB this way).
        part = io.BytesIO()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        # The request under way. A cancel (the client went away) must not interrupt
        # it: one already sent may still be applied after the cleanup (S3 may keep a
        # part that was uploading during an abort; a begun upload whose answer was lost
        # has an id we never saw; a completed object would stay). So each request is
        # shielded, and the cleanup waits for its outcome.
        sending: asyncio.Future[Any] | None = None
        finishing = False  # the request under way makes the object (Put or Complete)

        async def send(request: Awaitable[Any]) -> Any:
            nonlocal sending
            sending = asyncio.ensure_future(request)
            return await asyncio.shield(sending)

        try:
            async for chunk in chunks:
                part.write(chunk)
                if part.tell() < self._config.part_bytes:
                    continue
                if upload_id is None:
                    begun = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
                    upload_id = str((await send(begun))["UploadId"])
                number = len(parts) + 1
                parts.append(await send(self._upload_part(key, upload_id, number, part)))
                part = io.BytesIO()
            if upload_id is None:  # smaller than one part: a single request
                part.seek(0)
                finishing = True
                await send(self._client.put_object(Bucket=self.bucket, Key=key, Body=part))
                return
            if part.tell():
                parts.append(await send(self._upload_part(key, upload_id, len(parts) + 1, part)))
            finishing = True
            await send(
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            )
        except BaseException as exc:
            await self._clean_up(key, upload_id, sending, finishing)
            if isinstance(exc, BotoCoreError | ClientError):
                raise BlobStoreUnavailable("the file store refused or failed the upload") from exc
            raise

    async def _clean_up(
        self, key: str, upload_id: str | None, sending: asyncio.Future[Any] | None, finishing: bool
    ) -> None:
        """Leave nothing of a failed or cancelled upload, once the request it was
        sending has an outcome."""
        answered = None
        if sending is not None:
            await asyncio.wait([sending])
            if not sending.cancelled() and sending.exception() is None:
                answered = sending.result()
        if finishing and answered is not None:
            # The object was made as the upload was cancelled: nobody will refer to it.
            delete = self._client.delete_object(Bucket=self.bucket, Key=key)
            await self._bounded(delete, f"could not delete the unfinished upload {key}")
            return
        if upload_id is None and answered is not None:
            upload_id = str(answered["UploadId"])  # begun as the upload was cancelled
        if upload_id is not None:
            abort = self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
            await self._bounded(abort, f"could not abort the multipart upload of {key}")

    async def _upload_part(
        self, key: str, upload_id: str, number: int, data: io.BytesIO
    ) -> dict[str, Any]:
        data.seek(0)
        answer = await self._client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _bounded(self, request: Awaitable[Any], failure: str) -> None:
        """A clean-up request. Shielded: a cancelled upload (the client went away) still
        cleans up. A failure is logged; the parts then wait for the bucket's lifecycle
        rule."""
        try:
            await asyncio.shield(asyncio.wait_for(request, ABORT_TIMEOUT_SECONDS))
        except (BotoCoreError, ClientError, TimeoutError, asyncio.CancelledError):
            log.warning("%s", failure, exc_info=True)

    async def read(self, file_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        try:
            answer = await self._client.get_object(
                Bucket=self.bucket, Key=self.key(file_id), Range=f"bytes={start}-{end}"
            )
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreUnavailable("the file store could not be read") from exc
        async with answer["Body"] as body:
            left = end - start + 1
            while left > 0:
                data = await body.read(min(READ_BYTES, left))
                if not data:
                    return
                left -= len(data)
                yield data

    async def check_bucket(self) -> None:
        """``HeadBucket``: the bucket exists and these keys may use it (readiness,
        filesready.py). Raises :class:`BlobStoreUnavailable` with what the store said."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            # HeadBucket has no body: the code is the HTTP status (404 missing bucket,
            # 403 keys refused, 301 wrong region).
            code = exc.response.get("Error", {}).get("Code", "?")
            raise BlobStoreUnavailable(
                f"files_store: HeadBucket on {self.bucket!r} answered {code}"
            ) from exc
        except BotoCoreError as exc:
            raise BlobStoreUnavailable(
                f"files_store: HeadBucket on {self.bucket!r} failed ({type(exc).__name__})"
            ) from exc

    async def delete(self, file_id: str) -> None:
        # DeleteObject answers success for a missing key: deleting twice is harmless.
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=self.key(file_id))
        except (BotoCoreError, ClientError) as exc:
            raise BlobStoreUnavailable("the file store could not delete a file") from exc
