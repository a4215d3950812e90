"""Reactions: exactly once per (user, message, emoji), aggregated per message.

Collection ``reactions``, one document per (message, user, emoji) ever reacted::

    {_id: "<target_seq>:<user_id>:<emoji>", room_id, target_seq, user, emoji, on, seq}

``seq`` is the stream sequence of the record that set ``on``; a record only replaces
an older one (the write's filter says ``seq < mine``), so redeliveries, retries that
slipped past the stream's deduplication and any delivery order end in the state of the
newest record: adding twice counts once, remove-then-add by the same person counts
once, and an old ``add`` redelivered after a ``remove`` changes nothing.

The message carries the aggregate, ``reactions: [{emoji, count}]``, recounted once per
ingest batch for each message the batch touched: a burst of 1000 reactions on one
message within a batch window is one bulk write of the per-user states and one recount
and one update of the message, not 1000 updates of it. ``me`` is added per reader from
the reader's own states (one indexed query per page).

Refused (counted as invalid records, never stored): a target that is not a message of
the room, a deleted target, a private message's reaction by anyone but its two people,
and a new emoji on a message that already shows ``max_emoji`` distinct ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from roomcast.common.chatrecord import ReactionRecord

Doc = dict[str, Any]

REACTIONS = "reactions"
TARGET_ON_INDEX = "target_on"
USER_TARGET_INDEX = "user_target"
DUPLICATE_KEY = 11000


@dataclass(frozen=True, slots=True)
class RejectedReaction:
    reaction: ReactionRecord
    reason: str


def state_id(target_seq: int, user_id: str, emoji: str) -> str:
    return f"{target_seq}:{user_id}:{emoji}"


class Reactions:
    def __init__(self, collection: AsyncCollection[Doc], messages: AsyncCollection[Doc]) -> None:
        self.collection = collection
        self.messages = messages

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("target_seq", 1), ("on", 1)], name=TARGET_ON_INDEX)
        await self.collection.create_index([("user", 1), ("target_seq", 1)], name=USER_TARGET_INDEX)

    async def apply(
        self, reactions: Sequence[ReactionRecord], targets: dict[int, Doc], *, max_emoji: int
    ) -> list[RejectedReaction]:
        """Store the newest state of each (target, user, emoji) of the batch and recount
        the touched messages. ``targets`` holds each target's stored document (room_id,
        sender.id, to, deleted, reactions), or lacks it when there is no such message."""
        rejected: list[RejectedReaction] = []
        newest: dict[str, ReactionRecord] = {}
        # Per target: the emoji it already shows, and who added each other emoji in
        # this batch (an emoji added and taken back within the batch is not shown).
        stored: dict[int, set[str]] = {}
        added: dict[int, dict[str, set[str]]] = {}
        for r in sorted(reactions, key=lambda r: r.seq):
            target = targets.get(r.target_seq)
            reason = _refusal(r, target)
            if reason is None and target is not None:
                shown = stored.setdefault(
                    r.target_seq, {e["emoji"] for e in target.get("reactions") or ()}
                )
                new = added.setdefault(r.target_seq, {})
                if r.op == "remove":
                    new.get(r.emoji, set()).discard(r.sender.id)
                elif r.emoji not in shown and not new.get(r.emoji):
                    if len(shown) + sum(1 for users in new.values() if users) >= max_emoji:
                        reason = "too_many_emoji"
                    else:
                        new.setdefault(r.emoji, set()).add(r.sender.id)
                elif r.emoji not in shown:
                    new[r.emoji].add(r.sender.id)
            if reason is not None:
                rejected.append(RejectedReaction(r, reason))
                continue
            newest[state_id(r.target_seq, r.sender.id, r.emoji)] = r
        if not newest:
            return rejected
        await self._write_states(newest)
        await self._recount(sorted({(r.room_id, r.target_seq) for r in newest.values()}))
        return rejected

    async def _write_states(self, newest: dict[str, ReactionRecord]) -> None:
        ids = sorted(newest)
        stored = {
            d["_id"]: int(d["seq"])
            async for d in self.collection.find({"_id": {"$in": ids}}, {"seq": 1})
        }
        insert_keys = [k for k in ids if k not in stored]
        inserts = [InsertOne(_state_doc(k, newest[k])) for k in insert_keys]
        updates = [_update(k, newest[k]) for k in ids if k in stored and stored[k] < newest[k].seq]
        if inserts:
            try:
                await self.collection.bulk_write(inserts, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if exc.details.get("writeConcernErrors") or any(
                    e.get("code") != DUPLICATE_KEY for e in errors
                ):
                    raise
                # Another replica (or an earlier attempt) inserted these first: the
                # newer record wins through the conditional update.
                for e in errors:
                    key = insert_keys[int(e["index"])]
                    updates.append(_update(key, newest[key]))
        if updates:
            await self.collection.bulk_write(updates, ordered=False)

    async def _recount(self, targets: Sequence[tuple[str, int]]) -> None:
        ops: list[UpdateOne] = []
        for room_id, target_seq in targets:
            counts: dict[str, int] = {}
            async for d in self.collection.find(
                {"target_seq": target_seq, "on": True}, {"emoji": 1, "_id": 0}
            ):
                counts[d["emoji"]] = counts.get(d["emoji"], 0) + 1
            ops.append(
                UpdateOne(
                    {"_id": target_seq, "room_id": room_id},
                    {"$set": {"reactions": aggregate(counts)}},
                )
            )
        await self.messages.bulk_write(ops, ordered=False)

    async def mine(self, user_id: str, seqs: Sequence[int]) -> set[tuple[int, str]]:
        """The (target_seq, emoji) pairs ``user_id`` has on among ``seqs``."""
        if not seqs:
            return set()
        return {
            (int(d["target_seq"]), d["emoji"])
            async for d in self.collection.find(
                {"user": user_id, "target_seq": {"$in": list(seqs)}, "on": True},
                {"target_seq": 1, "emoji": 1, "_id": 0},
            )
        }

    async def add_me(self, user_id: str, items: Sequence[Doc]) -> None:
        """Set ``me`` on every reaction of the items (one query for the page)."""
        reacted = [int(i["seq"]) for i in items if i.get("reactions")]
        mine = await self.mine(user_id, reacted)
        for item in items:
            for entry in item.get("reactions") or ():
                entry["me"] = (item["seq"], entry["emoji"]) in mine


def aggregate(counts: dict[str, int]) -> list[Doc]:
    """``[{emoji, count}]``, most used first (ties by emoji, so the order is stable)."""
    return [
        {"emoji": e, "count": c}
        for e, c in sorted(counts.items(), key=lambda ec: (-ec[1], ec[0]))
        if c > 0
    ]


def _refusal(r: ReactionRecord, target: Doc | None) -> str | None:
    if target is None:
        return "target_missing"
    if target["room_id"] != r.room_id:
        return "target_in_other_room"
    if target.get("deleted"):
        return "target_deleted"
    to = target.get("to")
    if to is not None and r.sender.id not in (to, target["sender"]["id"]):
        return "not_visible"
    return None


def _state_doc(key: str, r: ReactionRecord) -> Doc:
    return {
        "_id": key,
        "room_id": r.room_id,
        "target_seq": r.target_seq,
        "user": r.sender.id,
        "emoji": r.emoji,
        "on": r.op == "add",
        "seq": r.seq,
    }


def _update(key: str, r: ReactionRecord) -> UpdateOne:
    return UpdateOne(
        {"_id": key, "seq": {"$lt": r.seq}}, {"$set": {"on": r.op == "add", "seq": r.seq}}
    )
