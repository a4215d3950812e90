"""The MongoDB repository of rooms and memberships.

Collections:

- ``rooms``: ``{_id: ObjectId, name, name_key, topic, visibility, owner_id,
  invite_code?, direct_key?, direct_user_ids?, member_count, created_at_ms,
  updated_at_ms}``. ``name_key`` is the NFKC-casefolded name for prefix search;
  ``invite_code`` exists on public and private rooms, ``direct_key`` ("<a>:<b>", the
  sorted pair of user ids) and ``direct_user_ids`` only on direct rooms.
  ``slow_mode_seconds`` and ``retention_days`` (room policy, docs/moderation.md) are
  absent until first set (absent = 0 = off).
- ``memberships``: ``{_id, room_id: ObjectId, user_id: str, role, joined_at_ms,
  visibility, slow_mode_seconds?, muted_until_ms?}``; ``visibility`` and
  ``slow_mode_seconds`` are copies of the room's, so CheckMembership answers a member
  with one read (kept in step by UpdateRoom and by JoinRoom's re-check);
  ``muted_until_ms`` is a copy of the user's mute (restrictions.py).

Uniqueness is enforced by MongoDB, never by a read-then-write: a unique index on
``(room_id, user_id)`` (one membership per user and room), partial unique indexes on
``invite_code`` and ``direct_key``. Membership writes are upserts, so concurrent joins
or direct opens converge on one document. ``member_count`` is changed with ``$inc``
only by the request whose upsert inserted (or whose delete removed) the membership,
so concurrent requests cannot double count. No multi-document transactions are used
(a standalone MongoDB and SecantusDB do not need a replica set for this design).

Ids are validated by the caller (``is_object_id``) before they reach this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from roomcast.common.clock import now_ms
from roomcast.common.mongo import ping
from roomcast.rooms.errors import ConcurrentChange, MemberNotFound, RoomNotFound
from roomcast.rooms.policy import Role, Visibility
from roomcast.rooms.records import MemberRecord, RoomRecord

Doc = dict[str, Any]

# 9 random bytes = 72 bits, 12 URL-safe characters: unguessable by enumeration (an
# attacker trying 10^6 codes per second against one room needs ~10^15 years), short
# enough to type or paste.
INVITE_CODE_BYTES = 9
# Retries when a fresh invite code hits the unique index: with 72-bit codes a
# collision is astronomically rare, so more than one retry means something is broken.
INVITE_CODE_ATTEMPTS = 5


# The room fields a membership document carries a copy of (see the module docstring).
COPIED_ROOM_FIELDS = ("visibility", "slow_mode_seconds")


@dataclass(frozen=True, slots=True)
class MembershipView:
    """What CheckMembership answers about one user and room."""

    visibility: str
    role: str  # "" when not a member
    muted_until_ms: int = 0
    slow_mode_seconds: int = 0


def new_invite_code() -> str:
    return secrets.token_urlsafe(INVITE_CODE_BYTES)


def direct_key(a: str, b: str) -> str:
    low, high = sorted((a, b))
    return f"{low}:{high}"


class RoomStore:
    def __init__(self, client: AsyncMongoClient[Doc], db_name: str) -> None:
        self.client = client
        db = client[db_name]
        self.rooms: AsyncCollection[Doc] = db["rooms"]
        self.members: AsyncCollection[Doc] = db["memberships"]

    async def ensure_indexes(self) -> None:
        await self.rooms.create_indexes(
            [
                IndexModel(
                    [("invite_code", ASCENDING)],
                    name="invite_code_unique",
                    unique=True,
                    partialFilterExpression={"invite_code": {"$type": "string"}},
                ),
                IndexModel(
                    [("direct_key", ASCENDING)],
                    name="direct_key_unique",
                    unique=True,
                    partialFilterExpression={"direct_key": {"$type": "string"}},
                ),
                # ListRooms(scope=public): visibility equality, then _id order.
                IndexModel([("visibility", ASCENDING), ("_id", ASCENDING)], name="visibility_id"),
                IndexModel(
                    [("visibility", ASCENDING), ("name_key", ASCENDING)], name="visibility_name"
                ),
                # The rooms with a retention period (retention_sync.py).
                IndexModel([("retention_days", ASCENDING)], name="retention_days"),
            ]
        )
        await self.members.create_indexes(
            [
                IndexModel(
                    [("room_id", ASCENDING), ("user_id", ASCENDING)],
                    name="room_user_unique",
                    unique=True,
                ),
                # The rooms of a user (ListRooms scope=joined, my_role lookups).
                IndexModel([("user_id", ASCENDING), ("room_id", ASCENDING)], name="user_room"),
            ]
        )

    async def ping(self) -> None:
        await ping(self.client)

    # ------------------------------------------------------------------ reads

    async def get_room(self, room_id: str) -> RoomRecord | None:
        doc = await self.rooms.find_one({"_id": ObjectId(room_id)})
        return RoomRecord.from_doc(doc) if doc is not None else None

    async def get_member(self, room_id: str, user_id: str) -> MemberRecord | None:
        doc = await self.members.find_one(
            {"room_id": ObjectId(room_id), "user_id": user_id}, projection={"_id": False}
        )
        return MemberRecord.from_doc(doc) if doc is not None else None

    async def get_room_and_member(
        self, room_id: str, user_id: str
    ) -> tuple[RoomRecord | None, MemberRecord | None]:
        room, member = await asyncio.gather(
            self.get_room(room_id), self.get_member(room_id, user_id)
        )
        if room is None:
            return None, None
        return room, member

    async def visibility_and_role(self, room_id: str, user_id: str) -> MembershipView | None:
        """CheckMembership's hot path: the room's visibility and slow mode, the user's
        role ("" when not a member) and mute, or None when the room does not exist.

        A member is answered from their membership document alone (it carries the
        room's visibility): one indexed point read. Only a non-member costs a second
        read, of the room, to tell "public, not a member" from "not found".
        """
        oid = ObjectId(room_id)
        member = await self.members.find_one(
            {"room_id": oid, "user_id": user_id},
            projection={
                "_id": False,
                "role": True,
                "visibility": True,
                "slow_mode_seconds": True,
                "muted_until_ms": True,
            },
        )
        if member is not None and "visibility" in member:
            return MembershipView(
                visibility=str(member["visibility"]),
                role=str(member["role"]),
                muted_until_ms=int(member.get("muted_until_ms", 0)),
                slow_mode_seconds=int(member.get("slow_mode_seconds", 0)),
            )
        room = await self.rooms.find_one(
            {"_id": oid}, projection={"_id": False, "visibility": True, "slow_mode_seconds": True}
        )
        if room is None:
            return None
        return MembershipView(
            visibility=str(room["visibility"]),
            role=str(member["role"]) if member is not None else "",
            muted_until_ms=int(member.get("muted_until_ms", 0)) if member is not None else 0,
            slow_mode_seconds=int(room.get("slow_mode_seconds", 0)),
        )

    async def members_among(self, room_id: str, user_ids: list[str]) -> dict[str, Doc]:
        """FilterMembers' read: ``{user_id: membership}`` for the given users who are
        members, in one query on the (room_id, user_id) index; the ids are validated
        and bounded by the caller (validation.MAX_FILTER_IDS)."""
        cursor = self.members.find(
            {"room_id": ObjectId(room_id), "user_id": {"$in": user_ids}},
            projection={
                "_id": False,
                "user_id": True,
                "role": True,
                "visibility": True,
                "slow_mode_seconds": True,
                "muted_until_ms": True,
            },
        )
        return {str(doc["user_id"]): doc async for doc in cursor}

    async def retention_periods(self, *, limit: int) -> dict[str, int]:
        """``{room_id: retention_days}`` of the rooms that have one (at most ``limit``,
        which bounds the memory of one synchronisation, retention_sync.py)."""
        cursor = (
            self.rooms.find(
                {"retention_days": {"$gt": 0}}, projection={"_id": True, "retention_days": True}
            )
            .sort("retention_days", ASCENDING)
            .limit(limit)
        )
        return {str(doc["_id"]): int(doc["retention_days"]) async for doc in cursor}

    # ----------------------------------------------------------------- writes

    async def create_room(
        self, *, owner_id: str, name: str, name_key: str, topic: str, visibility: Visibility
    ) -> tuple[RoomRecord, MemberRecord]:
        now = now_ms()
        room_id = ObjectId()
        doc: Doc = {
            "_id": room_id,
            "name": name,
            "name_key": name_key,
            "topic": topic,
            "visibility": visibility.value,
            "owner_id": owner_id,
            "member_count": 1,
            "created_at_ms": now,
            "updated_at_ms": now,
        }
        for attempt in range(INVITE_CODE_ATTEMPTS):
            doc["invite_code"] = new_invite_code()
            try:
                await self.rooms.insert_one(doc)
                break
            except DuplicateKeyError:
                if attempt == INVITE_CODE_ATTEMPTS - 1:
                    raise
        member = {
            "room_id": room_id,
            "user_id": owner_id,
            "role": Role.OWNER.value,
            "joined_at_ms": now,
            "visibility": visibility.value,
        }
        await self.members.insert_one(member)
        return RoomRecord.from_doc(doc), MemberRecord.from_doc(member)

    async def update_room(self, room_id: str, changes: Doc) -> RoomRecord:
        doc = await self.rooms.find_one_and_update(
            {"_id": ObjectId(room_id)},
            {"$set": {**changes, "updated_at_ms": now_ms()}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise RoomNotFound()
        copied = {f: doc.get(f, 0) for f in COPIED_ROOM_FIELDS if f in changes}
        if copied:
            # Keep the copies CheckMembership reads in step (see visibility_and_role).
            await self.members.update_many({"room_id": ObjectId(room_id)}, {"$set": copied})
        return RoomRecord.from_doc(doc)

    async def delete_room(self, room_id: str) -> RoomRecord:
        """Delete the room, then its memberships. A crash between the two writes leaves
        memberships of a missing room: every read but CheckMembership ignores them
        (CheckMembership would still say "member"); docs/rooms.md has the cleanup."""
        oid = ObjectId(room_id)
        doc = await self.rooms.find_one_and_delete({"_id": oid})
        if doc is None:
            raise RoomNotFound()
        await self.members.delete_many({"room_id": oid})
        return RoomRecord.from_doc(doc)

    async def rotate_invite_code(self, room_id: str) -> str:
        for attempt in range(INVITE_CODE_ATTEMPTS):
            code = new_invite_code()
            try:
                result = await self.rooms.update_one(
                    {"_id": ObjectId(room_id)},
                    {"$set": {"invite_code": code, "updated_at_ms": now_ms()}},
                )
            except DuplicateKeyError:
                if attempt == INVITE_CODE_ATTEMPTS - 1:
                    raise
                continue
            if result.matched_count == 0:
                raise RoomNotFound()
            return code
        raise AssertionError("unreachable")

    async def add_member(
        self,
        room_id: str,
        user_id: str,
        role: Role,
        *,
        visibility: Visibility,
        slow_mode_seconds: int = 0,
    ) -> tuple[MemberRecord, bool, RoomRecord]:
        """Upsert the membership. Returns ``(member, inserted, room)``; only the call
        that inserted the document increments ``member_count``."""
        oid = ObjectId(room_id)
        marker = ObjectId()
        fields = {
            "_id": marker,
            "role": role.value,
            "joined_at_ms": now_ms(),
            "visibility": visibility.value,
            "slow_mode_seconds": slow_mode_seconds,
        }
        try:
            doc = await self.members.find_one_and_update(
                {"room_id": oid, "user_id": user_id},
                {"$setOnInsert": fields},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            # A concurrent upsert of the same pair won the unique index: it exists now.
            doc = None
        if doc is None:
            # Also reached when the upsert lost a race and matched the winner's document
            # but the server returned no post-image (SecantusDB 0.7 does; mongod does not).
            doc = await self.members.find_one({"room_id": oid, "user_id": user_id})
        if doc is None:
            raise ConcurrentChange("the membership changed concurrently; retry")
        inserted = doc["_id"] == marker
        if inserted:
            room_doc = await self.rooms.find_one_and_update(
                {"_id": oid}, {"$inc": {"member_count": 1}}, return_document=ReturnDocument.AFTER
            )
            if room_doc is None:
                # The room was deleted between the caller's read and this write.
                await self.members.delete_one({"_id": marker})
                raise RoomNotFound()
            stale = {
                f: room_doc.get(f, 0) for f in COPIED_ROOM_FIELDS if room_doc.get(f, 0) != fields[f]
            }
            if stale:
                # The room changed between the caller's read and the insert; an
                # UpdateRoom that ran before the insert could not have fixed this copy.
                await self.members.update_one({"_id": marker}, {"$set": stale})
        else:
            room_doc = await self.rooms.find_one({"_id": oid})
            if room_doc is None:
                raise RoomNotFound()
        return MemberRecord.from_doc(doc), inserted, RoomRecord.from_doc(room_doc)

    async def remove_member(
        self, room_id: str, user_id: str, *, role: Role, rotate_invite: bool = False
    ) -> bool:
        """Delete the membership if it still has ``role`` (so a concurrent promotion
        to owner cannot be undone by a leave or kick decided on the old role).

        ``rotate_invite`` (a kick): the room's invite code is replaced *before* the
        membership is deleted, so there is no moment at which the user is out and the
        code they knew still opens the room; a crash between the two leaves the user a
        member with a fresh code (the kick is retried), never out with the old code.
        A join that read the old code before the rotation and inserts after the delete
        is undone by JoinRoom's re-check (servicer.py)."""
        oid = ObjectId(room_id)
        if rotate_invite:
            await self.rotate_invite_code(room_id)
        result = await self.members.delete_one(
            {"room_id": oid, "user_id": user_id, "role": role.value}
        )
        if result.deleted_count == 0:
            return False
        await self.rooms.update_one({"_id": oid}, {"$inc": {"member_count": -1}})
        return True

    async def set_role(self, room_id: str, user_id: str, *, old: Role, new: Role) -> MemberRecord:
        """Compare-and-set a member's role; ConcurrentChange when it moved meanwhile."""
        doc = await self.members.find_one_and_update(
            {"room_id": ObjectId(room_id), "user_id": user_id, "role": old.value},
            {"$set": {"role": new.value}},
            projection={"_id": False},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise ConcurrentChange("the member's role changed concurrently; retry")
        return MemberRecord.from_doc(doc)

    async def transfer_ownership(
        self, room_id: str, *, old_owner: str, new_owner: str, new_owner_role: Role
    ) -> tuple[MemberRecord, MemberRecord, RoomRecord]:
        """Move ownership. The room's ``owner_id`` compare-and-set is the decision:
        of two concurrent transfers only one passes it; the loser changes nothing."""
        oid = ObjectId(room_id)
        room_doc = await self.rooms.find_one_and_update(
            {"_id": oid, "owner_id": old_owner},
            {"$set": {"owner_id": new_owner, "updated_at_ms": now_ms()}},
            return_document=ReturnDocument.AFTER,
        )
        if room_doc is None:
            raise ConcurrentChange("the room's owner changed concurrently; retry")
        promoted = await self.members.find_one_and_update(
            {"room_id": oid, "user_id": new_owner, "role": new_owner_role.value},
            {"$set": {"role": Role.OWNER.value}},
            projection={"_id": False},
            return_document=ReturnDocument.AFTER,
        )
        if promoted is None:
            # The target left or changed role meanwhile: undo the owner change.
            await self.rooms.update_one(
                {"_id": oid, "owner_id": new_owner}, {"$set": {"owner_id": old_owner}}
            )
            raise MemberNotFound("the user is no longer a member with that role")
        demoted = await self.members.find_one_and_update(
            {"room_id": oid, "user_id": old_owner, "role": Role.OWNER.value},
            {"$set": {"role": Role.ADMIN.value}},
            projection={"_id": False},
            return_document=ReturnDocument.AFTER,
        )
        if demoted is None:
            raise ConcurrentChange("the previous owner's membership changed concurrently")
        return (
            MemberRecord.from_doc(promoted),
            MemberRecord.from_doc(demoted),
            RoomRecord.from_doc(room_doc),
        )

    async def find_direct(self, a: str, b: str) -> RoomRecord | None:
        doc = await self.rooms.find_one({"direct_key": direct_key(a, b)})
        return RoomRecord.from_doc(doc) if doc is not None else None

    async def create_direct(self, a: str, b: str) -> tuple[RoomRecord, bool]:
        """Create (or find) the direct room of two users; ``(room, created)``.

        An upsert on the unique ``direct_key`` (the sorted pair): any number of
        concurrent calls for one pair end with one room, and exactly one of them
        reports ``created``.
        """
        key = direct_key(a, b)
        now = now_ms()
        marker = ObjectId()
        try:
            doc = await self.rooms.find_one_and_update(
                {"direct_key": key},
                {
                    "$setOnInsert": {
                        "_id": marker,
                        "name": "",
                        "name_key": "",
                        "topic": "",
                        "visibility": Visibility.DIRECT.value,
                        "owner_id": "",
                        "direct_user_ids": sorted((a, b)),
                        "member_count": 2,
                        "created_at_ms": now,
                        "updated_at_ms": now,
                    }
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            # A concurrent upsert of the same pair won the unique index.
            doc = None
        if doc is None:
            # As in add_member: a lost upsert race may come back without a post-image.
            doc = await self.rooms.find_one({"direct_key": key})
        if doc is None:
            raise ConcurrentChange("the direct room changed concurrently; retry")
        return RoomRecord.from_doc(doc), doc["_id"] == marker

    async def ensure_direct_members(self, room: RoomRecord) -> None:
        """Upsert both memberships of a direct room: idempotent, run on every open, so
        a crash between the room insert and these writes is repaired by the next call."""
        oid = ObjectId(room.id)
        for user in room.direct_user_ids:
            # DuplicateKeyError: a concurrent call inserted it, exactly what we wanted.
            with contextlib.suppress(DuplicateKeyError):
                await self.members.update_one(
                    {"room_id": oid, "user_id": user},
                    {
                        "$setOnInsert": {
                            "role": Role.MEMBER.value,
                            "joined_at_ms": room.created_at_ms,
                            "visibility": Visibility.DIRECT.value,
                        }
                    },
                    upsert=True,
                )
