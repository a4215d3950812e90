"""The audit log of a room: who did what to the room and its members, and when.

Collection ``audit_log``: ``{_id: ObjectId, room_id: ObjectId, action, actor_id,
target_user_id?, at_ms, details: {str: str}}``, index ``(room_id, _id desc)`` for the
newest-first pages. Append-only by construction: this class has ``record`` (one
insert) and reads, nothing else, and no RPC updates or deletes an entry. Entries stay
when the room is deleted (nobody can read them through the API then; an operator
still can).

An entry is written after the change it describes is in MongoDB, with the same
durable write concern (``connect_mongo``): a crash between the two leaves a change
without its entry, never an entry for a change that did not happen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection

from roomcast.common.clock import now_ms

Doc = dict[str, Any]


class AuditAction(enum.StrEnum):
    BAN = "ban"
    UNBAN = "unban"
    MUTE = "mute"
    UNMUTE = "unmute"
    KICK = "kick"
    ROLE_CHANGED = "role_changed"
    ROOM_UPDATED = "room_updated"
    INVITE_ROTATED = "invite_rotated"
    MESSAGE_DELETED = "message_deleted"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    room_id: str
    action: str
    actor_id: str
    target_user_id: str
    at_ms: int
    details: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: Doc) -> AuditEntry:
        details = doc.get("details")
        return cls(
            id=str(doc["_id"]),
            room_id=str(doc["room_id"]),
            action=str(doc["action"]),
            actor_id=str(doc.get("actor_id", "")),
            target_user_id=str(doc.get("target_user_id", "")),
            at_ms=int(doc.get("at_ms", 0)),
            details={str(k): str(v) for k, v in details.items()}
            if isinstance(details, dict)
            else {},
        )


class AuditLog:
    def __init__(self, client: AsyncMongoClient[Doc], db_name: str) -> None:
        self.entries: AsyncCollection[Doc] = client[db_name]["audit_log"]

    async def ensure_indexes(self) -> None:
        await self.entries.create_indexes(
            [IndexModel([("room_id", ASCENDING), ("_id", DESCENDING)], name="room_newest")]
        )

    async def record(
        self,
        room_id: str,
        action: AuditAction,
        *,
        actor_id: str,
        target_user_id: str = "",
        details: dict[str, str] | None = None,
    ) -> AuditEntry:
        doc: Doc = {
            "_id": ObjectId(),
            "room_id": ObjectId(room_id),
            "action": action.value,
            "actor_id": actor_id,
            "at_ms": now_ms(),
            "details": dict(details or {}),
        }
        if target_user_id:
            doc["target_user_id"] = target_user_id
        await self.entries.insert_one(doc)
        return AuditEntry.from_doc(doc)

    async def page(self, room_id: str, *, before_id: str | None, limit: int) -> list[AuditEntry]:
        """Up to ``limit`` entries of the room older than ``before_id``, newest first.
        ObjectIds grow with time within one process and nearly so across processes,
        which is the order the log is read in."""
        query: Doc = {"room_id": ObjectId(room_id)}
        if before_id is not None:
            query["_id"] = {"$lt": ObjectId(before_id)}
        cursor = self.entries.find(query).sort("_id", DESCENDING).limit(limit)
        return [AuditEntry.from_doc(doc) async for doc in cursor]
