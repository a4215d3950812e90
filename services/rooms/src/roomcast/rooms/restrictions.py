"""Bans and mutes: what a moderator decided about a user in a room, kept apart from the
membership so that it outlives it.

Collection ``restrictions``: ``{_id, room_id: ObjectId, user_id: str, banned?: true,
banned_by?, banned_at_ms?, muted_until_ms?, muted_by?}``, one document per (room,
user), unique index ``(room_id, user_id)`` (which also orders a room's bans by user
id for ListBans). A user who leaves or is kicked and joins again meets the same
document: a ban refuses the join, a mute is copied onto the new membership.

The mute is also copied onto the membership document (``memberships.muted_until_ms``)
because CheckMembership, the gateways' hot path, answers from that one document. The
order of writes keeps the copy right without a transaction: a mute writes here first,
then the membership; a join inserts the membership first, then reads here (and copies
what it finds). Whichever interleaving, the later of the two sees the other's write.

Ids are validated by the caller before they reach this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from roomcast.common.clock import now_ms

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class BanRecord:
    user_id: str
    actor_id: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Restriction:
    banned: BanRecord | None
    muted_until_ms: int

    def muted_at(self, at_ms: int) -> bool:
        return self.muted_until_ms > at_ms


NONE = Restriction(banned=None, muted_until_ms=0)


def _restriction(doc: Doc | None) -> Restriction:
    if doc is None:
        return NONE
    ban = None
    if doc.get("banned") is True:
        ban = BanRecord(
            user_id=str(doc["user_id"]),
            actor_id=str(doc.get("banned_by", "")),
            created_at_ms=int(doc.get("banned_at_ms", 0)),
        )
    return Restriction(banned=ban, muted_until_ms=int(doc.get("muted_until_ms", 0)))


class RestrictionStore:
    def __init__(self, client: AsyncMongoClient[Doc], db_name: str) -> None:
        db = client[db_name]
        self.restrictions: AsyncCollection[Doc] = db["restrictions"]
        self.members: AsyncCollection[Doc] = db["memberships"]

    async def ensure_indexes(self) -> None:
        await self.restrictions.create_indexes(
            [
                IndexModel(
                    [("room_id", ASCENDING), ("user_id", ASCENDING)],
                    name="room_user_unique",
                    unique=True,
                )
            ]
        )

    async def get(self, room_id: str, user_id: str) -> Restriction:
        doc = await self.restrictions.find_one({"room_id": ObjectId(room_id), "user_id": user_id})
        return _restriction(doc)

    async def _upsert(self, room_id: str, user_id: str, update: Doc) -> Doc:
        """Upsert the (room, user) document; a lost race on the unique index is the
        same document, so the update is applied again to it."""
        query = {"room_id": ObjectId(room_id), "user_id": user_id}
        for _ in range(2):
            try:
                doc = await self.restrictions.find_one_and_update(
                    query, update, upsert=True, return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError:
                continue
            if doc is not None:
                return doc
            # SecantusDB may return no post-image for an upsert that lost a race.
            found = await self.restrictions.find_one(query)
            if found is not None:
                return found
        raise DuplicateKeyError("restriction upsert kept colliding")

    async def ban(self, room_id: str, user_id: str, actor_id: str) -> tuple[BanRecord, bool]:
        """Record the ban; ``(ban, created)``. Banning a banned user keeps the first
        ban (its actor and time) and reports ``created=False``.

        One conditional upsert decides: it matches the (room, user) document only
        while it carries no ban (a mute alone), or inserts one; when a ban is already
        there the insert hits the unique index, which is the "already banned" answer.
        """
        query = {"room_id": ObjectId(room_id), "user_id": user_id}
        marker = ObjectId()
        update = {
            "$set": {
                "banned": True,
                "banned_by": actor_id,
                "banned_at_ms": now_ms(),
                "ban_id": marker,
            }
        }
        try:
            doc = await self.restrictions.find_one_and_update(
                {**query, "banned": {"$ne": True}},
                update,
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            doc = None
        if doc is None:
            doc = await self.restrictions.find_one(query)
        ban = _restriction(doc).banned
        if ban is None:
            # Unbanned between our failed upsert and the read: ban again.
            return await self.ban(room_id, user_id, actor_id)
        assert doc is not None
        return ban, doc.get("ban_id") == marker

    async def unban(self, room_id: str, user_id: str) -> bool:
        """Lift the ban; True when there was one."""
        result = await self.restrictions.update_one(
            {"room_id": ObjectId(room_id), "user_id": user_id, "banned": True},
            {"$unset": {"banned": "", "banned_at_ms": "", "banned_by": "", "ban_id": ""}},
        )
        return result.modified_count > 0

    async def list_bans(
        self, room_id: str, *, after_user_id: str | None, limit: int
    ) -> list[BanRecord]:
        query: Doc = {"room_id": ObjectId(room_id), "banned": True}
        if after_user_id is not None:
            query["user_id"] = {"$gt": after_user_id}
        cursor = self.restrictions.find(query).sort("user_id", ASCENDING).limit(limit)
        bans = []
        async for doc in cursor:
            ban = _restriction(doc).banned
            if ban is not None:
                bans.append(ban)
        return bans

    async def mute(self, room_id: str, user_id: str, until_ms: int, actor_id: str) -> None:
        """Mute until ``until_ms`` (replacing an earlier mute), here first, then on
        the membership if there is one (see the module docstring for the order)."""
        await self._upsert(
            room_id, user_id, {"$set": {"muted_until_ms": until_ms, "muted_by": actor_id}}
        )
        await self.copy_mute(room_id, user_id, until_ms)

    async def unmute(self, room_id: str, user_id: str) -> bool:
        """End the mute; True when one was in force."""
        result = await self.restrictions.update_one(
            {"room_id": ObjectId(room_id), "user_id": user_id, "muted_until_ms": {"$gt": now_ms()}},
            {"$unset": {"muted_until_ms": "", "muted_by": ""}},
        )
        await self.copy_mute(room_id, user_id, 0)
        return result.modified_count > 0

    async def copy_mute(self, room_id: str, user_id: str, until_ms: int) -> None:
        """Put the mute on the membership CheckMembership reads (0 removes it)."""
        update: Doc = (
            {"$set": {"muted_until_ms": until_ms}}
            if until_ms > 0
            else {"$unset": {"muted_until_ms": ""}}
        )
        await self.members.update_one({"room_id": ObjectId(room_id), "user_id": user_id}, update)
