"""The notifier's MongoDB collections.

- ``notifications``: one document per (stream sequence, user), ``_id`` ``"<seq>:<user>"``.
  Inserting a batch twice (a redelivery after a crash) hits the existing ids and
  changes nothing, so the inbox gets every notification exactly once. ``push`` is the
  Web Push state: ``pending`` (the user has subscriptions), ``sending`` (claimed by a
  push worker), ``sent``, ``skipped`` (the user was online) or ``none``.
- ``inbox_state``: per user, ``read_up_to`` (a stream sequence, only moves forward).
- ``push_subscriptions``: ``_id`` the SHA-256 of the endpoint, so one browser
  registering again replaces its own entry.
- ``webhook_deliveries``: the outbox, ``_id`` ``"<endpoint>:<seq>:<user>"``, written
  with the notifications before the ack (exactly once), each with its signed-later
  body, attempts and next attempt time; ``dead`` after the last failed attempt.
- ``dead_letters``: records that could not be parsed, by stream sequence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.errors import BulkWriteError

DUPLICATE_KEY = 11000
# Unread counts stop at this many: a badge shows "999+", and counting a huge backlog
# on every inbox read would cost a scan of it.
MAX_UNREAD_COUNT = 999


def _duplicates(exc: BulkWriteError) -> set[int]:
    """The indexes of the documents that already existed, when every error is a
    duplicate key; else re-raise."""
    errors = exc.details.get("writeErrors", [])
    if any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return {int(e["index"]) for e in errors}


class NotifierStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], db_name: str) -> None:
        db = client[db_name]
        self.notifications = db["notifications"]
        self.inbox_state = db["inbox_state"]
        self.subscriptions = db["push_subscriptions"]
        self.deliveries = db["webhook_deliveries"]
        self.dead_letters = db["dead_letters"]

    async def ensure_indexes(self) -> None:
        await self.notifications.create_indexes(
            [
                # The inbox page and the unread count: one user's, newest first.
                IndexModel([("user", ASCENDING), ("seq", DESCENDING)], name="user_seq"),
                # The push worker's scan for users with pending pushes.
                IndexModel([("push", ASCENDING), ("created_at", ASCENDING)], name="push_due"),
            ]
        )
        await self.subscriptions.create_indexes(
            [IndexModel([("user", ASCENDING), ("created_at", ASCENDING)], name="user_created")]
        )
        await self.deliveries.create_indexes(
            [IndexModel([("state", ASCENDING), ("next_at", ASCENDING)], name="state_due")]
        )

    # --- the consumer's batch write ---------------------------------------------------

    async def write_batch(
        self,
        notifications: Sequence[dict[str, Any]],
        deliveries: Sequence[dict[str, Any]],
        dead: Sequence[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Insert everything of one batch; duplicates (a redelivered batch) are no-ops.
        Returns the notifications that are new."""
        if dead:
            try:
                await self.dead_letters.insert_many(list(dead), ordered=False)
            except BulkWriteError as exc:
                _duplicates(exc)
        if deliveries:
            try:
                await self.deliveries.insert_many(list(deliveries), ordered=False)
            except BulkWriteError as exc:
                _duplicates(exc)
        if not notifications:
            return []
        try:
            await self.notifications.insert_many(list(notifications), ordered=False)
            return list(notifications)
        except BulkWriteError as exc:
            existing = _duplicates(exc)
            return [doc for i, doc in enumerate(notifications) if i not in existing]

    async def apply_change(
        self, room: str, target_seq: int, author: str, preview: str | None
    ) -> None:
        """An edit (new ``preview``) or a delete (None) by the message's own author:
        the message's notifications show the new text, or are removed. Idempotent, so a
        redelivered change changes nothing more. Changes by others (moderators) leave
        the notifications as they are: only the author's own word is taken here."""
        query = {"room": room, "seq": target_seq, "sender.id": author}
        if preview is None:
            await self.notifications.delete_many(query)
        else:
            await self.notifications.update_many(query, {"$set": {"preview": preview}})

    async def users_with_subscriptions(self, users: Sequence[str]) -> set[str]:
        if not users:
            return set()
        cursor = self.subscriptions.find({"user": {"$in": list(users)}}, {"user": 1})
        return {doc["user"] async for doc in cursor}

    # --- inbox --------------------------------------------------------------------------

    async def read_up_to(self, user: str) -> int:
        doc = await self.inbox_state.find_one({"_id": user})
        return int(doc["read_up_to"]) if doc else 0

    async def page(self, user: str, *, before: int | None, limit: int) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"user": user}
        if before is not None:
            query["seq"] = {"$lt": before}
        cursor = self.notifications.find(query).sort("seq", DESCENDING).limit(limit)
        return [doc async for doc in cursor]

    async def unread(self, user: str, read_up_to: int) -> int:
        return await self.notifications.count_documents(
            {"user": user, "seq": {"$gt": read_up_to}}, limit=MAX_UNREAD_COUNT
        )

    async def mark_read(self, user: str, up_to: int) -> int:
        """Move ``read_up_to`` forward (never back); the stored value."""
        doc = await self.inbox_state.find_one_and_update(
            {"_id": user},
            {"$max": {"read_up_to": up_to}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None
        return int(doc["read_up_to"])

    # --- push subscriptions -----------------------------------------------------------

    async def add_subscription(self, doc: dict[str, Any], *, max_per_user: int) -> None:
        """Upsert by endpoint, then drop the user's oldest beyond ``max_per_user``."""
        await self.subscriptions.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        cursor = (
            self.subscriptions.find({"user": doc["user"]}, {"_id": 1})
            .sort("created_at", DESCENDING)
            .skip(max_per_user)
        )
        extra = [d["_id"] async for d in cursor]
        if extra:
            await self.subscriptions.delete_many({"_id": {"$in": extra}})

    async def remove_subscription(self, user: str, sub_id: str) -> bool:
        result = await self.subscriptions.delete_one({"_id": sub_id, "user": user})
        return result.deleted_count > 0

    async def subscriptions_of(self, user: str) -> list[dict[str, Any]]:
        return [doc async for doc in self.subscriptions.find({"user": user})]

    async def forget_subscription(self, sub_id: str) -> None:
        await self.subscriptions.delete_one({"_id": sub_id})

    # --- push worker ------------------------------------------------------------------

    async def users_due_for_push(self, cutoff: dt.datetime, limit: int) -> list[str]:
        pipeline: list[dict[str, Any]] = [
            {"$match": {"push": "pending", "created_at": {"$lte": cutoff}}},
            {"$group": {"_id": "$user"}},
            {"$limit": limit},
        ]
        cursor = await self.notifications.aggregate(pipeline)
        return [doc["_id"] async for doc in cursor]

    async def claim_pushes(self, user: str, owner: str, now: dt.datetime) -> list[dict[str, Any]]:
        """Claim the user's pending notifications for this worker; the claimed ones."""
        await self.notifications.update_many(
            {"user": user, "push": "pending"},
            {"$set": {"push": "sending", "push_owner": owner, "push_claimed_at": now}},
        )
        cursor = self.notifications.find(
            {"user": user, "push": "sending", "push_owner": owner}
        ).sort("seq", DESCENDING)
        return [doc async for doc in cursor]

    async def finish_pushes(self, ids: Sequence[str], state: str) -> None:
        await self.notifications.update_many(
            {"_id": {"$in": list(ids)}, "push": "sending"},
            {"$set": {"push": state}, "$unset": {"push_owner": "", "push_claimed_at": ""}},
        )

    async def release_stale_claims(self, older_than: dt.datetime) -> None:
        """Claims of a worker that died mid-push go back to pending."""
        await self.notifications.update_many(
            {"push": "sending", "push_claimed_at": {"$lt": older_than}},
            {"$set": {"push": "pending"}},
        )

    # --- webhook outbox -----------------------------------------------------------------

    async def claim_deliveries(
        self, now: dt.datetime, lease_until: dt.datetime, owner: str, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` due deliveries, leased to ``owner`` until ``lease_until`` (a
        worker that dies mid-attempt gives them back when the lease runs out). One
        write for the lot: each journaled write costs milliseconds, so claiming one at
        a time would cap a worker at a few hundred deliveries a second or less."""
        due = {"state": "pending", "next_at": {"$lte": now}}
        cursor = self.deliveries.find(due, {"_id": 1}).sort("next_at", ASCENDING).limit(limit)
        ids = [doc["_id"] async for doc in cursor]
        if not ids:
            return []
        await self.deliveries.update_many(
            {"_id": {"$in": ids}, **due},
            {"$set": {"next_at": lease_until, "lease": owner}},
        )
        # Another replica may have leased some of them between the two steps.
        claimed = self.deliveries.find(
            {"_id": {"$in": ids}, "lease": owner, "next_at": lease_until}
        )
        return [doc async for doc in claimed]

    async def delivery_done(self, delivery_id: str, now: dt.datetime, attempts: int) -> None:
        await self.deliveries.update_one(
            {"_id": delivery_id},
            {"$set": {"state": "delivered", "delivered_at": now, "attempts": attempts}},
        )

    async def delivery_failed(
        self, delivery_id: str, *, attempts: int, next_at: dt.datetime | None, error: str
    ) -> None:
        update: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if next_at is None:
            update["state"] = "dead"
        else:
            update["next_at"] = next_at
        await self.deliveries.update_one({"_id": delivery_id}, {"$set": update})

    async def pending_deliveries(self) -> int:
        return await self.deliveries.count_documents({"state": "pending"})
