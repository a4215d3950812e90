"""The file store's part of history's readiness (``ROOMCAST_HISTORY_FILES_BACKEND=s3``).

With GridFS the bytes live in history's MongoDB, which readiness already pings. An S3
bucket is a dependency of its own: a bucket deleted or renamed, keys revoked or a store
that cannot be reached would otherwise show only as failed uploads and downloads. So
``/readyz`` asks the store with ``HeadBucket`` and answers 503 naming ``files_store``
while it fails; ``roomcast_history_files_store_up`` records the last answer. With
GridFS the same gauge (``backend="gridfs"``) records readiness's MongoDB ping, since
that is where the files are: one alert covers both backends.

A check is bounded in time and its answer is kept for a few seconds: probes from the
kubelet, a load balancer and people checking by hand then cost the store at most one
request per replica per ``CACHE_SECONDS``, and concurrent probes share one request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge

from roomcast.history.errors import BlobStoreUnavailable
from roomcast.history.filesbackend import OwnedBlobStore
from roomcast.history.settings import Settings

# How long one HeadBucket may take: the kubelet gives /readyz 2 s in all
# (deploy/k8s/base/history.yaml's readinessProbe), shared with MongoDB's ping. A healthy
# store answers in milliseconds to a few hundred; one that needs over a second per
# request is not serving files either.
CHECK_TIMEOUT_SECONDS = 1.0
# How long an answer (success or failure) is reused: shorter than the kubelet's probe
# period (5 s), so each of its probes sees a fresh answer and readiness follows the
# store within one period, while any number of other callers costs one request per
# replica every few seconds.
CACHE_SECONDS = 4.0

FILES_STORE_UP = Gauge(
    "roomcast_history_files_store_up",
    "1 if the file store's last readiness check succeeded, 0 if it failed; by backend "
    "(s3: HeadBucket; gridfs: the MongoDB ping that readiness makes anyway).",
    ["backend"],
)


class FilesStoreReadiness:
    """A readiness check of the file store, cached and bounded in time."""

    def __init__(
        self,
        check: Callable[[], Awaitable[None]],
        *,
        backend: str,
        timeout_seconds: float = CHECK_TIMEOUT_SECONDS,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._timeout = timeout_seconds
        self._cache = cache_seconds
        self._clock = clock
        self._gauge = FILES_STORE_UP.labels(backend)
        self._lock = asyncio.Lock()
        self._checked_at: float | None = None
        self._failure: BlobStoreUnavailable | None = None

    async def __call__(self) -> None:
        """Raise :class:`BlobStoreUnavailable` (its message names ``files_store``)
        unless the store's last check, at most ``cache_seconds`` old, succeeded."""
        async with self._lock:  # concurrent probes wait for one request
            if self._checked_at is None or self._clock() - self._checked_at >= self._cache:
                self._failure = await self._ask()
                self._checked_at = self._clock()
                self._gauge.set(0 if self._failure else 1)
            failure = self._failure
        if failure is not None:
            raise BlobStoreUnavailable(str(failure))

    async def _ask(self) -> BlobStoreUnavailable | None:
        try:
            await asyncio.wait_for(self._check(), self._timeout)
        except BlobStoreUnavailable as exc:
            return exc
        except TimeoutError:
            return BlobStoreUnavailable(
                f"files_store: no answer to HeadBucket within {self._timeout} s"
            )
        return None


def files_store_readiness(settings: Settings, blobs: OwnedBlobStore) -> FilesStoreReadiness | None:
    """The check for the configured store; None for GridFS (MongoDB's ping covers it)."""
    if settings.files_backend != "s3":
        return None
    # Imported here, as in filesbackend.py: a GridFS deployment never loads the S3 client.
    from roomcast.history.s3blobs import S3BlobStore

    if not isinstance(blobs, S3BlobStore):
        raise TypeError("files_backend=s3 opened a store that is not S3BlobStore")
    return FilesStoreReadiness(blobs.check_bucket, backend="s3")


def gridfs_store_check(ping: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """readiness's MongoDB ``ping``, also recorded as the GridFS file store's state."""
    gauge = FILES_STORE_UP.labels("gridfs")

    async def check() -> None:
        try:
            await ping()
        except Exception:
            gauge.set(0)
            raise
        gauge.set(1)

    return check
