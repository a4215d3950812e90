"""FilterMembers: "which of these users are members?", one call per room for the
gateways' revalidation sweep. Asked by a member only, like CheckMembership with
user_id; ids are validated and bounded before any query."""

from __future__ import annotations

import grpc
from rooms_harness import Rooms, code_of, new_user_id

from roomcast.common.clock import now_ms
from roomcast.rooms.validation import MAX_FILTER_IDS
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb


async def test_only_members_come_back_with_their_role_and_mute(rooms: Rooms) -> None:
    owner, member, kicked, outsider = rooms.user(), rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    for user in (member, kicked):
        await rooms.join(user, room, room.invite_code)
    await rooms.stub.RemoveMember(
        pb.RemoveMemberRequest(room_id=room.id, user_id=kicked.id), metadata=owner.md
    )
    until = await rooms.stub.MuteMember(
        pb.MuteMemberRequest(room_id=room.id, user_id=member.id, until_ms=now_ms() + 600_000),
        metadata=owner.md,
    )

    reply = await rooms.stub.FilterMembers(
        pb.FilterMembersRequest(
            room_id=room.id, user_ids=[owner.id, member.id, kicked.id, outsider.id, member.id]
        ),
        metadata=member.md,
    )

    found = {m.user_id: (m.role, m.muted_until_ms) for m in reply.members}
    assert found == {
        owner.id: (pb.ROLE_OWNER, 0),
        member.id: (pb.ROLE_MEMBER, until.muted_until_ms),
    }
    assert reply.visibility == pb.VISIBILITY_PRIVATE


async def test_a_caller_who_is_not_a_member_is_refused(rooms: Rooms) -> None:
    owner, outsider = rooms.user(), rooms.user()
    public = await rooms.create(owner, visibility=pb.VISIBILITY_PUBLIC)
    private = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    for room, expected in (
        (public, grpc.StatusCode.PERMISSION_DENIED),
        (private, grpc.StatusCode.NOT_FOUND),
    ):
        request = pb.FilterMembersRequest(room_id=room.id, user_ids=[owner.id])
        assert await code_of(rooms.stub.FilterMembers(request, metadata=outsider.md)) == expected


async def test_malformed_or_too_many_ids_are_invalid(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner)
    bad_requests = [
        pb.FilterMembersRequest(room_id="nope", user_ids=[owner.id]),
        pb.FilterMembersRequest(room_id=room.id, user_ids=[owner.id, "not-an-id"]),
        pb.FilterMembersRequest(room_id=room.id, user_ids=['{"$gt": ""}']),
        pb.FilterMembersRequest(
            room_id=room.id, user_ids=[new_user_id() for _ in range(MAX_FILTER_IDS + 1)]
        ),
    ]
    for request in bad_requests:
        call = rooms.stub.FilterMembers(request, metadata=owner.md)
        assert await code_of(call) == grpc.StatusCode.INVALID_ARGUMENT
    # exactly the bound is accepted
    full = [owner.id] + [new_user_id() for _ in range(MAX_FILTER_IDS - 1)]
    reply = await rooms.stub.FilterMembers(
        pb.FilterMembersRequest(room_id=room.id, user_ids=full), metadata=owner.md
    )
    assert [m.user_id for m in reply.members] == [owner.id]
