"""Read positions written in batches: one bulk write per short window, not one per receipt.

Every read receipt a gateway forwards (``PUT /v1/rooms/{room}/read``) used to be its own
durable write (journaled, majority-acknowledged): with a few hundred receipts a second
that alone saturated the database. Here the receipts that arrive within
``WINDOW_SECONDS`` are coalesced per (user, room), keeping the highest sequence, and
written with **one** unordered ``bulk_write`` of ``$max`` upserts; one read of the same
keys then gives every caller the position actually stored (``$max``: never lower than
what the caller asked for, higher if another request or replica got further).

Each caller waits for its batch's durable write (at most ``WAIT_SECONDS``), so the
answer still means "stored": a caller whose batch failed gets ``StoreUnavailable``
(503), exactly as a failed single write did. Batches may be written concurrently (a
batch fills while the previous one is in flight, and every history replica batches on
its own); ``$max`` makes their order irrelevant, so a position only ever moves forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from roomcast.common.mongo import UNAVAILABLE_ERRORS
from roomcast.history import metrics
from roomcast.history.errors import StoreUnavailable

Doc = dict[str, Any]

log = logging.getLogger(__name__)

# How long a batch collects receipts before its write. The gateways already coalesce a
# user's receipts in a room to one a second, and a read marker that shows up 50 ms later
# is invisible to people; at 200 receipts/s this makes ~10 receipts a write (20 durable
# writes a second instead of 200).
WINDOW_SECONDS = 0.05
# A batch holding this many distinct (user, room) keys is written at once instead of
# waiting out its window: bounds one bulk write (and its read back) to a few hundred KB.
MAX_KEYS = 1000
# Longest a caller waits for its batch's durable write: well above a healthy journaled
# write (milliseconds) and a primary election's first retry, and below the gateways'
# 5 s HTTP timeout, so the caller hears "unavailable" instead of timing out.
WAIT_SECONDS = 3.0
DUPLICATE_KEY = 11000


def position_id(room_id: str, user_id: str) -> str:
    return f"{room_id}:{user_id}"


@dataclass(eq=False)
class _Batch:
    """Receipts gathered in one window: ``_id`` → ``(room, user, highest seq)``."""

    positions: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stored: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None


class ReadPositionBatcher:
    """``await mark(room, user, seq)`` → the stored position, written in batches."""

    def __init__(
        self,
        collection: AsyncCollection[Doc],
        *,
        window_seconds: float = WINDOW_SECONDS,
        max_keys: int = MAX_KEYS,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.collection = collection
        self.window_seconds = window_seconds
        self.max_keys = max_keys
        self.wait_seconds = wait_seconds
        self._open: _Batch | None = None
        # Batches being written (a reference keeps their tasks alive).
        self._writing: set[asyncio.Task[None]] = set()

    async def mark(self, room_id: str, user_id: str, seq: int) -> int:
        """Move the user's read position in the room forward to ``seq`` (never back)
        and return the stored position, once its batch is durably written."""
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            asyncio.get_running_loop().call_later(self.window_seconds, self._close, batch)
        key = position_id(room_id, user_id)
        held = batch.positions.get(key)
        if held is None or held[2] < seq:
            batch.positions[key] = (room_id, user_id, seq)
        metrics.READ_RECEIPTS.inc()
        if len(batch.positions) >= self.max_keys:
            self._close(batch)
        try:
            await asyncio.wait_for(batch.done.wait(), self.wait_seconds)
        except TimeoutError:
            raise StoreUnavailable("the read position was not stored in time") from None
        if batch.error is not None:
            raise StoreUnavailable("MongoDB is unavailable") from batch.error
        return batch.stored.get(key, seq)

    def _close(self, batch: _Batch) -> None:
        """Stop adding to ``batch`` and write it (idempotent: the timer of a batch
        closed early by its size finds it closed)."""
        if self._open is not batch:
            return
        self._open = None
        task = asyncio.ensure_future(self._write(batch))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, batch: _Batch) -> None:
        try:
            batch.stored = await self._store(batch.positions)
        except Exception as exc:
            # Every waiter hears "unavailable" and its client may send the read again.
            log.warning(
                "read positions not stored (%d receipts): %s",
                len(batch.positions),
                exc,
                exc_info=not isinstance(exc, UNAVAILABLE_ERRORS),
            )
            batch.error = exc
        finally:
            batch.done.set()

    async def _store(self, positions: dict[str, tuple[str, str, int]]) -> dict[str, int]:
        ops = [
            UpdateOne(
                {"_id": key},
                {"$max": {"seq": seq}, "$setOnInsert": {"room_id": room, "user_id": user}},
                upsert=True,
            )
            for key, (room, user, seq) in positions.items()
        ]
        metrics.READ_POSITION_WRITES.inc()
        try:
            await self.collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            # Two batches upserting a new key at once: one insert loses with a
            # duplicate key. The document exists now, so the same $max again is a
            # plain update; anything else is a real failure.
            details = exc.details
            errors = details.get("writeErrors", [])
            if details.get("writeConcernErrors") or any(
                e.get("code") != DUPLICATE_KEY for e in errors
            ):
                raise
            metrics.READ_POSITION_WRITES.inc()
            await self.collection.bulk_write([ops[e["index"]] for e in errors], ordered=False)
        cursor = self.collection.find({"_id": {"$in": list(positions)}}, {"seq": 1})
        return {str(doc["_id"]): int(doc["seq"]) async for doc in cursor}

    async def close(self) -> None:
        """Write what is gathered now and wait for the writes in flight."""
        if self._open is not None:
            self._close(self._open)
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._writing, return_exceptions=True)
