"""CheckMembership with ``user_id``: "is THIS user a member?", asked by a member (the
gateway checks a private message's recipient this way). Outsiders get exactly the answer
they get for their own check of the room: NOT_FOUND for a private room they cannot see,
PERMISSION_DENIED for a public room they are not in."""

from __future__ import annotations

from typing import Any

import grpc
from rooms_harness import Rooms, User, code_of

from roomcast.rpc.rooms.v1 import rooms_pb2 as pb


def _check(rooms: Rooms, caller: User, room_id: str, user_id: str | None) -> Any:
    request = pb.CheckMembershipRequest(room_id=room_id)
    if user_id is not None:
        request.user_id = user_id
    return rooms.stub.CheckMembership(request, metadata=caller.md)


async def test_a_member_asks_about_members_and_non_members(rooms: Rooms) -> None:
    owner, member, outsider = rooms.user(), rooms.user(), rooms.user()
    for visibility in (pb.VISIBILITY_PUBLIC, pb.VISIBILITY_PRIVATE):
        room = await rooms.create(owner, visibility=visibility)
        await rooms.join(member, room)

        reply = await _check(rooms, member, room.id, owner.id)
        assert (reply.member, reply.role, reply.visibility) == (True, pb.ROLE_OWNER, visibility)
        reply = await _check(rooms, owner, room.id, member.id)
        assert (reply.member, reply.role) == (True, pb.ROLE_MEMBER)
        reply = await _check(rooms, owner, room.id, outsider.id)
        assert (reply.member, reply.role, reply.visibility) == (
            False,
            pb.ROLE_UNSPECIFIED,
            visibility,
        )
        # user_id = the caller, or absent: the caller's own membership, as before
        reply = await _check(rooms, member, room.id, member.id)
        assert (reply.member, reply.role) == (True, pb.ROLE_MEMBER)
        reply = await _check(rooms, member, room.id, None)
        assert (reply.member, reply.role) == (True, pb.ROLE_MEMBER)


async def test_the_answer_follows_leaves_and_kicks(rooms: Rooms) -> None:
    owner, member, kicked = rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(member, room)
    await rooms.join(kicked, room)
    await rooms.stub.RemoveMember(
        pb.RemoveMemberRequest(room_id=room.id, user_id=kicked.id), metadata=owner.md
    )
    await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=member.md)
    for target in (member, kicked):
        reply = await _check(rooms, owner, room.id, target.id)
        assert not reply.member


async def test_outsiders_learn_nothing(rooms: Rooms) -> None:
    owner, member, outsider = rooms.user(), rooms.user(), rooms.user()
    admin = rooms.user(roles=("admin",))
    public = await rooms.create(owner, visibility=pb.VISIBILITY_PUBLIC)
    private = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    for room in (public, private):
        await rooms.join(member, room)
    # a public room: visible, but only members may ask about others
    assert await code_of(_check(rooms, outsider, public.id, member.id)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # a private room: the same NOT_FOUND as a room that does not exist
    assert await code_of(_check(rooms, outsider, private.id, member.id)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert await code_of(_check(rooms, outsider, "0" * 24, member.id)) == (
        grpc.StatusCode.NOT_FOUND
    )
    # a global admin sees every room but is not a member of this one
    assert await code_of(_check(rooms, admin, private.id, member.id)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_direct_rooms(rooms: Rooms) -> None:
    a, b, c = rooms.user(), rooms.user(), rooms.user()
    opened = await rooms.stub.OpenDirectRoom(pb.OpenDirectRoomRequest(user_id=b.id), metadata=a.md)
    room_id = opened.room.id
    reply = await _check(rooms, a, room_id, b.id)
    assert (reply.member, reply.visibility) == (True, pb.VISIBILITY_DIRECT)
    reply = await _check(rooms, b, room_id, c.id)
    assert not reply.member
    assert await code_of(_check(rooms, c, room_id, a.id)) == grpc.StatusCode.NOT_FOUND


async def test_invalid_user_id_is_refused_before_any_read(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner)
    for bad in ("", "not-an-id", "A" * 24, "0" * 25):
        assert await code_of(_check(rooms, owner, room.id, bad)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        ), bad
