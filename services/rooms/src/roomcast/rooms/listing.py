"""Read-only listings: ListRooms (public and joined scopes), ListMembers, and the
caller's roles in a page of rooms.

Pagination is keyset-based: a page is "the next N after this id" in an indexed order
(public rooms by ``_id``, a user's memberships by ``room_id``, a room's members by
``user_id``), so inserts never shift or repeat items between pages.
"""

from __future__ import annotations

from bson import ObjectId
from pymongo import ASCENDING

from roomcast.rooms.policy import Role, Visibility
from roomcast.rooms.records import MemberRecord, RoomRecord
from roomcast.rooms.store import Doc, RoomStore

# ListRooms(scope=joined) walks the caller's memberships in room id order; with a name
# filter many may not match. Memberships read per batch, and the most one call reads
# before returning a (possibly short) page with a cursor: bounds one RPC's work.
JOINED_BATCH = 100
JOINED_SCAN_LIMIT = 1000


def prefix_range(prefix: str) -> dict[str, str]:
    """A ``{$gte, $lt}`` range matching exactly the strings that start with ``prefix``.

    MongoDB compares strings by their UTF-8 bytes, which orders like code points, so
    the upper bound is the prefix with its last code point incremented (skipping the
    surrogate block, which UTF-8 cannot encode). No regular expression is built from
    user input, and the range can use the index on ``(visibility, name_key)``.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return {"$gte": prefix, "$lt": "".join(chars) + chr(nxt)}
    return {"$gte": prefix}


class RoomListing:
    def __init__(self, store: RoomStore) -> None:
        self.rooms = store.rooms
        self.members = store.members

    async def roles_of(self, user_id: str, room_ids: list[str]) -> dict[str, Role]:
        """The user's role in each of these rooms they belong to (one indexed query)."""
        if not room_ids:
            return {}
        cursor = self.members.find(
            {"user_id": user_id, "room_id": {"$in": [ObjectId(r) for r in room_ids]}},
            projection={"_id": False, "room_id": True, "role": True},
        )
        return {str(d["room_id"]): Role(d["role"]) async for d in cursor}

    async def list_public(
        self, *, name_prefix: str, after_id: str | None, limit: int
    ) -> list[RoomRecord]:
        query: Doc = {"visibility": Visibility.PUBLIC.value}
        if name_prefix:
            query["name_key"] = prefix_range(name_prefix)
        if after_id is not None:
            query["_id"] = {"$gt": ObjectId(after_id)}
        cursor = self.rooms.find(query).sort("_id", ASCENDING).limit(limit)
        return [RoomRecord.from_doc(d) async for d in cursor]

    async def list_joined(
        self, user_id: str, *, name_prefix: str, after_id: str | None, want: int
    ) -> tuple[list[tuple[RoomRecord, Role]], str | None, bool]:
        """Up to ``want`` of the user's rooms after ``after_id``, in room id order.

        Returns ``(items, last_scanned_room_id, exhausted)``. When the scan limit stops
        the walk early, ``items`` may be short (even empty) and the caller resumes after
        ``last_scanned_room_id``. Memberships whose room is gone are skipped.
        """
        items: list[tuple[RoomRecord, Role]] = []
        last = after_id
        scanned = 0
        while len(items) < want and scanned < JOINED_SCAN_LIMIT:
            query: Doc = {"user_id": user_id}
            if last is not None:
                query["room_id"] = {"$gt": ObjectId(last)}
            batch = [
                d
                async for d in self.members.find(
                    query, projection={"_id": False, "room_id": True, "role": True}
                )
                .sort("room_id", ASCENDING)
                .limit(JOINED_BATCH)
            ]
            if not batch:
                return items, last, True
            room_query: Doc = {"_id": {"$in": [d["room_id"] for d in batch]}}
            if name_prefix:
                room_query["name_key"] = prefix_range(name_prefix)
            rooms = {str(d["_id"]): d async for d in self.rooms.find(room_query)}
            for d in batch:
                room_id = str(d["room_id"])
                last = room_id
                scanned += 1
                doc = rooms.get(room_id)
                if doc is not None:
                    items.append((RoomRecord.from_doc(doc), Role(d["role"])))
                    if len(items) >= want:
                        break
            if len(batch) < JOINED_BATCH and len(items) < want:
                return items, last, True
        return items, last, False

    async def list_members(
        self, room_id: str, *, after_user_id: str | None, limit: int
    ) -> list[MemberRecord]:
        query: Doc = {"room_id": ObjectId(room_id)}
        if after_user_id is not None:
            query["user_id"] = {"$gt": after_user_id}
        cursor = (
            self.members.find(query, projection={"_id": False})
            .sort("user_id", ASCENDING)
            .limit(limit)
        )
        return [MemberRecord.from_doc(d) async for d in cursor]
