"""Concurrent requests never produce duplicates or a wrong member_count: uniqueness
comes from MongoDB's unique indexes and upserts, not from read-then-write."""

from __future__ import annotations

import asyncio

import grpc
from bson import ObjectId
from rooms_harness import EventSink, Rooms, code_of

from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

PARALLEL = 20


async def stored_member_count(rooms: Rooms, room_id: str) -> tuple[int, int]:
    """(member_count field, actual membership documents)."""
    doc = await rooms.running.store.rooms.find_one({"_id": ObjectId(room_id)})
    assert doc is not None
    actual = await rooms.running.store.members.count_documents({"room_id": ObjectId(room_id)})
    return int(doc["member_count"]), actual


async def test_parallel_joins_of_one_user_make_one_membership(
    rooms: Rooms, events: EventSink
) -> None:
    owner, user = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    results = await asyncio.gather(*(rooms.join(user, room) for _ in range(PARALLEL)))
    assert len({r.member.joined_at_ms for r in results}) == 1
    assert all(r.member.user_id == user.id for r in results)
    assert await stored_member_count(rooms, room.id) == (2, 2)
    # Exactly one member_joined for the user; the sentinel proves none came later.
    await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=user.md)
    got = await events.wait_for(3)
    assert [(e["type"], e.get("user_id")) for e in got] == [
        ("member_joined", owner.id),
        ("member_joined", user.id),
        ("member_left", user.id),
    ]


async def test_parallel_joins_and_leaves_keep_member_count_exact(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner)
    users = [rooms.user() for _ in range(PARALLEL)]
    await asyncio.gather(*(rooms.join(u, room) for u in users))
    assert await stored_member_count(rooms, room.id) == (PARALLEL + 1, PARALLEL + 1)

    async def leave_twice(u: object) -> None:
        req = pb.LeaveRoomRequest(room_id=room.id)
        await asyncio.gather(
            rooms.stub.LeaveRoom(req, metadata=u.md),  # type: ignore[attr-defined]
            rooms.stub.LeaveRoom(req, metadata=u.md),  # type: ignore[attr-defined]
        )

    await asyncio.gather(*(leave_twice(u) for u in users[: PARALLEL // 2]))
    expected = PARALLEL - PARALLEL // 2 + 1
    assert await stored_member_count(rooms, room.id) == (expected, expected)


async def test_parallel_direct_opens_make_one_room(rooms: Rooms) -> None:
    a, b = rooms.user(), rooms.user()
    calls = []
    for i in range(PARALLEL):
        caller, other = (a, b) if i % 2 else (b, a)
        calls.append(
            rooms.stub.OpenDirectRoom(
                pb.OpenDirectRoomRequest(user_id=other.id), metadata=caller.md
            )
        )
    results = await asyncio.gather(*calls)
    assert len({r.room.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    room = results[0].room
    assert room.visibility == pb.VISIBILITY_DIRECT
    assert sorted(room.direct_user_ids) == sorted([a.id, b.id])
    assert await rooms.running.store.rooms.count_documents({"visibility": "direct"}) == 1
    assert await stored_member_count(rooms, room.id) == (2, 2)


async def test_parallel_creates_are_all_distinct(rooms: Rooms) -> None:
    owner = rooms.user()
    made = await asyncio.gather(*(rooms.create(owner, name=f"r{i}") for i in range(PARALLEL)))
    assert len({r.id for r in made}) == PARALLEL
    assert len({r.invite_code for r in made}) == PARALLEL
    assert await rooms.running.store.rooms.count_documents({}) == PARALLEL
    assert await rooms.running.store.members.count_documents({"user_id": owner.id}) == PARALLEL


async def test_concurrent_ownership_transfers_leave_one_owner(rooms: Rooms) -> None:
    owner, heir1, heir2 = rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(heir1, room)
    await rooms.join(heir2, room)
    codes = await asyncio.gather(
        *(
            code_of(
                rooms.stub.SetMemberRole(
                    pb.SetMemberRoleRequest(room_id=room.id, user_id=h.id, role=pb.ROLE_OWNER),
                    metadata=owner.md,
                )
            )
            for h in (heir1, heir2)
        )
    )
    assert sorted(c.name for c in codes) in (
        ["ABORTED", "OK"],
        ["OK", "PERMISSION_DENIED"],  # the loser ran after the winner: no longer owner
    ), codes
    members = await rooms.stub.ListMembers(
        pb.ListMembersRequest(room_id=room.id), metadata=owner.md
    )
    owners = [m.user_id for m in members.members if m.role == pb.ROLE_OWNER]
    assert len(owners) == 1
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
    assert got.room.owner_id == owners[0]
    assert owners[0] in (heir1.id, heir2.id)
    assert got.room.my_role == pb.ROLE_ADMIN


async def test_join_racing_delete_leaves_no_member_of_a_missing_room(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner)
    users = [rooms.user() for _ in range(10)]
    calls = [code_of(rooms.join(u, room)) for u in users]
    calls.insert(
        5,
        code_of(rooms.stub.DeleteRoom(pb.DeleteRoomRequest(room_id=room.id), metadata=owner.md)),
    )
    codes = await asyncio.gather(*calls)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}
    assert await rooms.running.store.rooms.count_documents({}) == 0
    assert await rooms.running.store.members.count_documents({"room_id": ObjectId(room.id)}) == 0
