"""Replies and threads: which replies are kept as replies, the counts on their parent,
and the thread page.

A message's ``reply_to`` is kept only if the parent is a message of the same room,
stored or in the stream, and, when the parent is private (``to``), only if the reply is
private between the same two people (the gateway sends it that way; anything else
would let a third person point at a message they cannot see). Otherwise the message is
stored as a plain message: the record was acknowledged, it is never lost over a reply.

The parent carries ``reply_count`` (replies not deleted) and ``last_reply_at``,
recounted per parent once per ingest batch from the ``room_reply`` index: recounting
instead of incrementing keeps the write idempotent under redelivery (a redelivered
reply is counted once because it is one document), and a busy thread costs one count
per batch, not one write per reply. Two replicas recounting the same parent at the
same moment may leave the older count until the thread's next reply or delete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from roomcast.history.records import ChatMessage

Doc = dict[str, Any]
TargetLoader = Callable[[int], Awaitable[ChatMessage | None]]

ROOM_REPLY_INDEX = "room_reply"
# The fields of a parent needed to decide whether a reply may point at it.
_PARENT_FIELDS = {"room_id": 1, "sender.id": 1, "to": 1}


def _may_reply(reply: ChatMessage, parent_room: str, parent_sender: str, parent_to: Any) -> bool:
    if parent_room != reply.room_id:
        return False
    if parent_to is None:
        return True
    pair = {parent_sender, parent_to}
    return reply.sender.id in pair and reply.to is not None and {reply.sender.id, reply.to} == pair


async def resolve_replies(
    messages_coll: AsyncCollection[Doc],
    messages: Sequence[ChatMessage],
    load_target: TargetLoader | None,
) -> tuple[list[ChatMessage], int]:
    """The messages with every ``reply_to`` that may not stand removed, and how many
    were removed. Parents are looked up in the batch, then MongoDB, then the stream."""
    wanted = {m.reply_to for m in messages if m.reply_to is not None}
    if not wanted:
        return list(messages), 0
    parents: dict[int, tuple[str, str, Any]] = {
        m.seq: (m.room_id, m.sender.id, m.to) for m in messages if m.seq in wanted
    }
    missing = sorted(wanted - parents.keys())
    if missing:
        async for doc in messages_coll.find({"_id": {"$in": missing}}, _PARENT_FIELDS):
            parents[int(doc["_id"])] = (doc["room_id"], doc["sender"]["id"], doc.get("to"))
    for seq in sorted(wanted - parents.keys()):
        loaded = await load_target(seq) if load_target is not None else None
        if loaded is not None:
            parents[seq] = (loaded.room_id, loaded.sender.id, loaded.to)
    kept: list[ChatMessage] = []
    dropped = 0
    for m in messages:
        parent = parents.get(m.reply_to) if m.reply_to is not None else None
        if m.reply_to is not None and (parent is None or not _may_reply(m, *parent)):
            m = dataclasses.replace(m, reply_to=None)
            dropped += 1
        kept.append(m)
    return kept, dropped


async def recount(messages_coll: AsyncCollection[Doc], parents: Iterable[tuple[str, int]]) -> None:
    """Set ``reply_count`` and ``last_reply_at`` on each ``(room_id, parent_seq)``."""
    ops: list[UpdateOne] = []
    for room_id, parent in sorted(set(parents)):
        live = {"room_id": room_id, "reply_to": parent, "deleted": {"$exists": False}}
        count = await messages_coll.count_documents(live)
        last = await messages_coll.find_one(live, {"sent_at": 1}, sort=[("_id", -1)])
        ops.append(
            UpdateOne(
                {"_id": parent, "room_id": room_id},
                {
                    "$set": {
                        "reply_count": count,
                        "last_reply_at": last["sent_at"] if last is not None else None,
                    }
                },
            )
        )
    if ops:
        await messages_coll.bulk_write(ops, ordered=False)


async def parents_deleted(messages_coll: AsyncCollection[Doc], items: Sequence[Doc]) -> None:
    """Mark ``reply_to_deleted`` on the items whose parent is deleted (one query)."""
    wanted = sorted({int(i["reply_to"]) for i in items if i.get("reply_to") is not None})
    if not wanted:
        return
    deleted = {
        int(d["_id"])
        async for d in messages_coll.find({"_id": {"$in": wanted}, "deleted": True}, {"_id": 1})
    }
    for item in items:
        if item.get("reply_to") in deleted:
            item["reply_to_deleted"] = True
