"""Collecting files no message shares: never shared after the grace period, or whose
every sharing message was deleted or purged by retention.

One pass looks at the ``batch`` files checked longest ago (``gc_checked_at``) that are
older than the grace period; a file a live message shares is only marked checked, any
other loses its blob, then its metadata (in that order, so a crash leaves a catalog
entry whose blob is gone, collected again next time, never an orphan blob).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from roomcast.history.files import BlobStore, FileCatalog

log = logging.getLogger(__name__)


class FileCollector:
    def __init__(
        self,
        catalog: FileCatalog,
        blobs: BlobStore,
        *,
        grace_seconds: float,
        batch: int,
        interval_seconds: float,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._catalog = catalog
        self._blobs = blobs
        self._grace = dt.timedelta(seconds=grace_seconds)
        self._batch = batch
        self._interval = interval_seconds
        self._now = now

    async def collect_once(self) -> int:
        """One bounded pass; the number of files removed."""
        now = self._now()
        cutoff = now - self._grace
        cursor = (
            self._catalog.files.find(
                {"created_at": {"$lt": cutoff}, "gc_checked_at": {"$lt": cutoff}}, {"_id": 1}
            )
            .sort("gc_checked_at", 1)
            .limit(self._batch)
        )
        removed = 0
        async for doc in cursor:
            file_id = doc["_id"]
            if await self._catalog.is_shared(file_id):
                await self._catalog.files.update_one(
                    {"_id": file_id}, {"$set": {"gc_checked_at": now}}
                )
                continue
            await self._blobs.delete(file_id)
            await self._catalog.delete(file_id)
            removed += 1
        return removed

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                removed = await self.collect_once()
                if removed:
                    log.info("collected %d unshared files", removed)
            except Exception:  # MongoDB away: try again next round
                log.exception("file collection failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
