"""The notifier's read-only service role: a ``service-reader`` token reads any room
(private included) and its members, and every other RPC is refused without effect."""

from __future__ import annotations

import grpc
import pytest
from rooms_harness import Rooms, code_of
from test_rooms_authz import REQUESTS, Scene

from roomcast.common.tokens import SERVICE_READER_ROLE
from roomcast.rooms.readonly import READ_RPCS
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb


async def scene(rooms: Rooms) -> Scene:
    owner, member = rooms.user(), rooms.user()
    room = await rooms.create(owner, name="private", visibility=pb.VISIBILITY_PRIVATE)
    await rooms.join(member, room)
    return Scene(room=room, users={"owner": owner, "member": member}, target=member)


async def test_a_service_reader_reads_private_rooms_and_their_members(rooms: Rooms) -> None:
    s = await scene(rooms)
    reader = rooms.user(roles=(SERVICE_READER_ROLE,))
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=s.room.id), metadata=reader.md)
    assert got.room.visibility == pb.VISIBILITY_PRIVATE
    members = await rooms.stub.ListMembers(
        pb.ListMembersRequest(room_id=s.room.id, limit=100), metadata=reader.md
    )
    assert {m.user_id for m in members.members} == {s.users["owner"].id, s.target.id}
    # a plain outsider still sees nothing of it
    outsider = rooms.user()
    assert (
        await code_of(
            rooms.stub.GetRoom(pb.GetRoomRequest(room_id=s.room.id), metadata=outsider.md)
        )
        == grpc.StatusCode.NOT_FOUND
    )


@pytest.mark.parametrize("rpc", sorted(set(REQUESTS) - READ_RPCS))
async def test_a_service_reader_cannot_write(rooms: Rooms, rpc: str) -> None:
    s = await scene(rooms)
    reader = rooms.user(roles=(SERVICE_READER_ROLE,))
    name, request = REQUESTS[rpc](s)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(rooms.stub, name)(request, metadata=reader.md)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (refused.value.details() or "").startswith("read_only:")
    # nothing changed: the same members, the same room
    owner = s.users["owner"]
    after = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=s.room.id), metadata=owner.md)
    assert after.room.name == "private"
    assert after.room.topic == s.room.topic
    assert after.room.invite_code == s.room.invite_code
    members = await rooms.stub.ListMembers(
        pb.ListMembersRequest(room_id=s.room.id, limit=100), metadata=owner.md
    )
    assert {(m.user_id, m.role) for m in members.members} == {
        (owner.id, pb.ROLE_OWNER),
        (s.target.id, pb.ROLE_MEMBER),
    }
    bans = await rooms.stub.ListBans(pb.ListBansRequest(room_id=s.room.id), metadata=owner.md)
    assert not bans.bans
