"""Keeps the retention bucket (``roomcast.common.retention``) equal to the rooms'
``retention_days`` in MongoDB, which history purges by.

MongoDB is the truth; the bucket is a copy. UpdateRoom and DeleteRoom write the
change through at once (:meth:`RetentionSync.changed`); a write that fails (NATS down)
is only logged, because a background round (:meth:`RetentionSync.run`) rewrites the
whole bucket from MongoDB at startup and every :data:`ROUND_SECONDS`, putting what is
missing or different and deleting keys of rooms that no longer have a period. Several
rooms replicas doing the same rounds write the same values: harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from roomcast.common import retention
from roomcast.common.kvbucket import BucketHandle
from roomcast.common.mongo import UNAVAILABLE_ERRORS
from roomcast.rooms.store import RoomStore

log = logging.getLogger(__name__)

# What ends a round early (NATS or MongoDB unreachable); anything else is a bug.
_ROUND_ERRORS: tuple[type[Exception], ...] = (NatsError, OSError, TimeoutError, *UNAVAILABLE_ERRORS)

# A full rewrite every 5 minutes: the longest a period changed while NATS was
# unreachable waits to reach history. Purges work in days, so minutes do not matter.
ROUND_SECONDS = 300.0
# Rooms with a retention period copied per round. Each is one small key; 100k keys is
# a few MB of bucket and a few seconds of writes, far above any expected count. Rooms
# beyond it (sorted by period) keep their messages until an operator raises it.
MAX_ROOMS = 100_000
# One bucket operation that takes longer than this is abandoned (NATS unreachable).
KV_TIMEOUT_SECONDS = 2.0


class RetentionSync:
    def __init__(self, nats: NatsClient, store: RoomStore, *, replicas: int = 1) -> None:
        self.nats = nats
        self.store = store
        self.replicas = replicas
        self._bucket = BucketHandle(
            lambda: asyncio.wait_for(
                retention.open_bucket(self.nats.jetstream(), replicas=self.replicas, create=True),
                KV_TIMEOUT_SECONDS,
            )
        )
        self._stopped = asyncio.Event()

    async def changed(self, room_id: str, days: int) -> None:
        """Write one room's period through (0 removes it); never raises."""
        try:
            kv = await self._bucket.get()
            if days > 0:
                await asyncio.wait_for(kv.put(room_id, retention.encode(days)), KV_TIMEOUT_SECONDS)
            else:
                await asyncio.wait_for(kv.delete(room_id), KV_TIMEOUT_SECONDS)
        except (NatsError, OSError, TimeoutError) as exc:
            self._bucket.forget()
            log.warning(
                "retention period not copied to the bucket yet (next round will)",
                extra={"room_id": room_id, "error": repr(exc)},
            )

    async def sync_once(self) -> int:
        """One full round; returns the number of keys written or deleted."""
        wanted = await self.store.retention_periods(limit=MAX_ROOMS)
        kv = await self._bucket.get()
        current = await retention.read_all(kv)
        writes = 0
        for room_id, days in wanted.items():
            if current.get(room_id) != days:
                await asyncio.wait_for(kv.put(room_id, retention.encode(days)), KV_TIMEOUT_SECONDS)
                writes += 1
        for room_id in current.keys() - wanted.keys():
            await asyncio.wait_for(kv.delete(room_id), KV_TIMEOUT_SECONDS)
            writes += 1
        return writes

    async def run(self) -> None:
        """Rounds until :meth:`stop`; a failed round is logged and retried next time."""
        while not self._stopped.is_set():
            try:
                writes = await self.sync_once()
                if writes:
                    log.info("retention bucket synchronised", extra={"writes": writes})
            except _ROUND_ERRORS as exc:
                self._bucket.forget()
                log.warning("retention bucket round failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), ROUND_SECONDS)

    async def stop(self, task: asyncio.Task[None] | None) -> None:
        """End :meth:`run`. The flag as well as the cancel: on Python 3.11 a cancel
        that arrives as an inner ``wait_for`` completes is lost (fixed in 3.12), and
        the loop would then sleep a whole round; the flag ends it at its next check."""
        self._stopped.set()
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
