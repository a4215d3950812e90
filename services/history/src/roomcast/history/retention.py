"""Retention: messages older than their room's ``retention_days`` leave history.

Where the periods come from: rooms owns them and copies every non-zero one into the
JetStream key-value bucket ``ROOMCAST_RETENTION`` (``roomcast.common.retention``).
A round reads the whole bucket, then walks each room's oldest messages.

Bounded cost, whatever the rooms hold:

- a room is read oldest first in batches of ``retention_batch_size`` through the
  ``(room_id, _id)`` index (an equality and a range, never a scan of the room), and
  its walk stops at the first message young enough to keep: sequences grow with time,
  so everything after it is younger;
- a round deletes at most ``retention_max_per_round`` messages over all rooms and
  pauses ``retention_batch_pause_seconds`` between batches, so a room that just got
  a short period (millions of messages due at once) is drained over several rounds
  instead of in one burst that would slow ingest and pages;
- rounds run every ``retention_interval_seconds``; with several history replicas each
  runs them, and deletes of the same messages are idempotent;
- a purged message's file (metadata and blob) leaves in the same batch unless a kept
  message still shares it (retentionfiles.py: which files, in which order, and how a
  round killed midway is finished); a message shares at most one file, so a round
  deletes at most as many files as messages, plus up to ``retention_batch_size`` files
  a dead round left half-deleted.

A message's age is its ``sent_at`` (the gateway's clock: what its readers see), not
``stored_at``, so messages stored late (a history outage replayed from the stream) do
not outlive the period. After a room is purged its ``rooms.first_seq`` is raised to
its oldest remaining message (``$max``; it only ever moves up here), so pages do not
search the purged range.

Where a purged message can still live (an operator answering "is it gone?"):

- the JetStream stream ``CHAT`` keeps every record for ``stream_max_age_seconds``
  (default 7 days) and at most ``stream_max_msgs_per_subject`` (default 100,000) per
  room, whichever ends first (``roomcast.common.chatstream``); a client resuming with
  ``since`` or a gateway repairing a gap can still be sent it from there. A room whose
  period is shorter than the stream's age keeps its messages in the stream for the
  stream's age; to make both equal, lower ``stream_max_age_seconds`` for the whole
  stream (it has one age for every room);
- MongoDB's own journal and any backups, for as long as the operator keeps them;
- clients that received it (their local state).

Rooms with a period are read from the bucket; a room whose period was removed keeps
what it still has (nothing is purged for it any more).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from roomcast.common import retention
from roomcast.common.mongo import UNAVAILABLE_ERRORS
from roomcast.common.natsconn import connect_nats
from roomcast.history.files import BlobStore
from roomcast.history.retentionfiles import PurgedFiles
from roomcast.history.settings import Settings

log = logging.getLogger(__name__)

Doc = dict[str, Any]
DAY = dt.timedelta(days=1)

PURGED = Counter(
    "roomcast_history_retention_purged_total",
    "Messages deleted from history because their room's retention period passed.",
)
ROUND_SECONDS = Gauge(
    "roomcast_history_retention_round_seconds",
    "Duration of the last retention round (reading the periods and purging).",
)
BACKLOG = Gauge(
    "roomcast_history_retention_unfinished_rooms",
    "Rooms the last retention round left with messages still due (its budget ran out).",
)
ROUND_FAILURE_REASONS = ("nats", "mongodb", "timeout", "internal")
ROUND_FAILURES = Counter(
    "roomcast_history_retention_round_failures_total",
    "Retention rounds that ended early, by reason (nats, mongodb, timeout, internal); "
    "the next round retries, so only failures that keep coming mean purging stopped.",
    ["reason"],
)
# Every reason at zero from the start: the first failure is an increase the alert sees.
for _reason in ROUND_FAILURE_REASONS:
    ROUND_FAILURES.labels(_reason)
# What ends a round early (NATS or MongoDB unreachable); the next round retries.
_ROUND_ERRORS: tuple[type[Exception], ...] = (NatsError, OSError, TimeoutError, *UNAVAILABLE_ERRORS)


def failure_reason(exc: Exception) -> str:
    """The bounded ``reason`` label of a failed round."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return "mongodb"
    if isinstance(exc, NatsError):
        return "nats"
    if isinstance(exc, TimeoutError | OSError):
        return "timeout"
    return "internal"


def message_time(doc: Doc) -> dt.datetime | None:
    """When the message was sent (``sent_at``, ISO 8601), else when it was stored."""
    sent = doc.get("sent_at")
    if isinstance(sent, str):
        try:
            parsed = dt.datetime.fromisoformat(sent)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    stored = doc.get("stored_at")
    if isinstance(stored, dt.datetime):
        return stored if stored.tzinfo else stored.replace(tzinfo=dt.UTC)
    return None


class RetentionPurger:
    def __init__(
        self, settings: Settings, mongo: AsyncMongoClient[Doc], *, blobs: BlobStore
    ) -> None:
        self.settings = settings
        db = mongo[settings.mongo_db]
        # The files of purged messages go with them (through the configured store).
        self.files = PurgedFiles(db, blobs)
        # The collections store.py writes (its docstring has their shape).
        self.messages: AsyncCollection[Doc] = db["messages"]
        self.rooms: AsyncCollection[Doc] = db["rooms"]
        self.reactions: AsyncCollection[Doc] = db["reactions"]
        self._nats: NatsClient | None = None

    async def periods(self) -> dict[str, int]:
        """``{room_id: days}`` from the bucket; empty while nobody has set a period."""
        if self._nats is None:
            # fail_fast: NATS down fails the round (counted "nats"), not hangs it.
            self._nats = await connect_nats(
                self.settings.nats_url, name="roomcast-history-retention", fail_fast=True
            )
        try:
            kv = await retention.open_bucket(self._nats.jetstream(), replicas=1, create=False)
        except NotFoundError:
            return {}
        return await retention.read_all(kv)

    async def purge_room(self, room_id: str, days: int, *, now: dt.datetime, budget: int) -> int:
        """Delete up to ``budget`` of the room's messages older than ``days``; the
        number deleted. Stops at the first message young enough to keep."""
        cutoff = now - days * DAY
        batch = self.settings.retention_batch_size
        deleted = 0
        after = 0
        while deleted < budget:
            want = min(batch, budget - deleted)
            cursor = (
                self.messages.find(
                    {"room_id": room_id, "_id": {"$gt": after}},
                    projection={
                        "_id": True,
                        "sent_at": True,
                        "stored_at": True,
                        "body.file.id": True,
                    },
                )
                .sort("_id", ASCENDING)
                .limit(want)
            )
            docs = [doc async for doc in cursor]
            due: list[int] = []
            due_docs: list[Doc] = []
            young: Doc | None = None
            for doc in docs:
                sent = message_time(doc)
                if sent is not None and sent >= cutoff:
                    young = doc
                    break
                due.append(int(doc["_id"]))
                due_docs.append(doc)
            if due:
                # Files only these messages share: intents first (retentionfiles.py).
                taken = await self.files.take(due, due_docs)
                result = await self.messages.delete_many({"room_id": room_id, "_id": {"$in": due}})
                # Who reacted to a purged message goes with it (reactions.py).
                await self.reactions.delete_many({"target_seq": {"$in": due}})
                await self.files.delete(taken)
                deleted += result.deleted_count
                PURGED.inc(result.deleted_count)
                after = due[-1]
            if young is not None or len(docs) < want:
                # Done with this room: the oldest message left (if any) is young.
                if due:
                    first = int(young["_id"]) if young is not None else due[-1] + 1
                    await self.rooms.update_one({"_id": room_id}, {"$max": {"first_seq": first}})
                return deleted
            await asyncio.sleep(self.settings.retention_batch_pause_seconds)
        return deleted

    async def run_round(self) -> int:
        """One round over every room with a period; the number of messages deleted."""
        started = time.monotonic()
        # Deletions of files a dead round left half done come first, period or not.
        await self.files.finish(self.settings.retention_batch_size)
        periods = await self.periods()
        now = dt.datetime.now(dt.UTC)
        budget = self.settings.retention_max_per_round
        total = 0
        unfinished = 0
        for room_id, days in sorted(periods.items()):
            if total >= budget:
                unfinished += 1
                continue
            left = budget - total
            done = await self.purge_room(room_id, days, now=now, budget=left)
            total += done
            if done >= left:
                unfinished += 1
        BACKLOG.set(unfinished)
        ROUND_SECONDS.set(time.monotonic() - started)
        if total:
            log.info("retention purged messages", extra={"messages": total, "rooms": len(periods)})
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``; a failed round is logged and the next one retries."""
        while not stop.is_set():
            try:
                await self.run_round()
            except _ROUND_ERRORS as exc:
                ROUND_FAILURES.labels(failure_reason(exc)).inc()
                log.warning("retention round failed: %r", exc)
            except Exception:
                # A bug must not end purging for the life of the process: counted,
                # logged with its traceback, and the next round tries again.
                ROUND_FAILURES.labels("internal").inc()
                log.exception("retention round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.retention_interval_seconds)

    async def close(self) -> None:
        if self._nats is not None:
            await self._nats.close()
            self._nats = None
