"""Rooms end to end through the real server: creating, reading, updating, listing,
joining, leaving, roles and invite codes."""

from __future__ import annotations

import grpc
import pytest
from rooms_harness import Rooms, code_of

from roomcast.rpc.rooms.v1 import rooms_pb2 as pb


async def test_create_room_makes_the_creator_owner(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner, name="  General  ", topic="  talk  ")
    assert room.name == "General"
    assert room.topic == "talk"
    assert room.visibility == pb.VISIBILITY_PUBLIC
    assert room.owner_id == owner.id
    assert room.my_role == pb.ROLE_OWNER
    assert room.member_count == 1
    assert len(room.invite_code) >= 12
    assert room.created_at_ms > 0
    assert room.created_at_ms == room.updated_at_ms
    members = await rooms.stub.ListMembers(
        pb.ListMembersRequest(room_id=room.id), metadata=owner.md
    )
    assert [(m.user_id, m.role) for m in members.members] == [(owner.id, pb.ROLE_OWNER)]


async def test_invite_code_is_shown_only_to_owner_and_admins(rooms: Rooms) -> None:
    owner, admin, member, outsider = rooms.user(), rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(admin, room)
    await rooms.join(member, room)
    await rooms.set_role(owner, room, admin, pb.ROLE_ADMIN)
    seen = {}
    for name, user in [("owner", owner), ("admin", admin), ("member", member), ("out", outsider)]:
        resp = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=user.md)
        seen[name] = (resp.room.invite_code, resp.room.my_role)
    assert seen["owner"] == (room.invite_code, pb.ROLE_OWNER)
    assert seen["admin"] == (room.invite_code, pb.ROLE_ADMIN)
    assert seen["member"] == ("", pb.ROLE_MEMBER)
    assert seen["out"] == ("", pb.ROLE_UNSPECIFIED)
    join = await rooms.join(rooms.user(), room)
    assert join.room.invite_code == ""


async def test_invite_codes_are_distinct_and_rotation_invalidates_the_old_one(rooms: Rooms) -> None:
    owner = rooms.user()
    codes = {
        (await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)).invite_code for _ in range(10)
    }
    assert len(codes) == 10
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    rotated = await rooms.stub.RotateInviteCode(
        pb.RotateInviteCodeRequest(room_id=room.id), metadata=owner.md
    )
    assert rotated.invite_code not in (room.invite_code, "")
    late = rooms.user()
    assert await code_of(rooms.join(late, room, code=room.invite_code)) == grpc.StatusCode.NOT_FOUND
    joined = await rooms.join(late, room, code=rotated.invite_code)
    assert joined.member.role == pb.ROLE_MEMBER
    assert joined.room.member_count == 2


async def test_private_room_join_needs_the_code_and_is_otherwise_invisible(rooms: Rooms) -> None:
    owner, guest = rooms.user(), rooms.user()
    room = await rooms.create(owner, name="secret", visibility=pb.VISIBILITY_PRIVATE)
    for call in (
        rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=guest.md),
        rooms.stub.ListMembers(pb.ListMembersRequest(room_id=room.id), metadata=guest.md),
        rooms.stub.CheckMembership(pb.CheckMembershipRequest(room_id=room.id), metadata=guest.md),
        rooms.stub.JoinRoom(pb.JoinRoomRequest(room_id=room.id), metadata=guest.md),
        rooms.stub.JoinRoom(
            pb.JoinRoomRequest(room_id=room.id, invite_code="x" * 12), metadata=guest.md
        ),
        rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=guest.md),
    ):
        assert await code_of(call) == grpc.StatusCode.NOT_FOUND
    # A non-existent room answers exactly the same.
    missing = "0" * 24
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=guest.md)
    with pytest.raises(grpc.aio.AioRpcError) as absent:
        await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=missing), metadata=guest.md)
    assert hidden.value.details() == absent.value.details()
    joined = await rooms.join(guest, room, code=room.invite_code)
    assert joined.room.id == room.id
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=guest.md)
    assert got.room.my_role == pb.ROLE_MEMBER


async def test_join_is_idempotent_and_member_count_follows(rooms: Rooms) -> None:
    owner, user = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    first = await rooms.join(user, room)
    second = await rooms.join(user, room)
    assert first.member == second.member
    assert second.room.member_count == 2
    await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=user.md)
    # Leaving again is a no-op on a public room.
    await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=user.md)
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
    assert got.room.member_count == 1
    check = await rooms.stub.CheckMembership(
        pb.CheckMembershipRequest(room_id=room.id), metadata=user.md
    )
    assert (check.member, check.role, check.visibility) == (
        False,
        pb.ROLE_UNSPECIFIED,
        pb.VISIBILITY_PUBLIC,
    )


async def test_update_room_changes_only_given_fields(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner, name="old", topic="t")
    resp = await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, name="new"), metadata=owner.md
    )
    assert (resp.room.name, resp.room.topic) == ("new", "t")
    assert resp.room.updated_at_ms >= room.updated_at_ms
    resp = await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, topic="", visibility=pb.VISIBILITY_PRIVATE),
        metadata=owner.md,
    )
    assert (resp.room.name, resp.room.topic, resp.room.visibility) == (
        "new",
        "",
        pb.VISIBILITY_PRIVATE,
    )
    outsider = rooms.user()
    assert (
        await code_of(rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=outsider.md))
        == grpc.StatusCode.NOT_FOUND
    )


async def test_owner_transfers_ownership_and_becomes_admin(rooms: Rooms) -> None:
    owner, heir = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(heir, room)
    assert (
        await code_of(rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=owner.md))
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    member = await rooms.set_role(owner, room, heir, pb.ROLE_OWNER)
    assert member.role == pb.ROLE_OWNER
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
    assert got.room.owner_id == heir.id
    assert got.room.my_role == pb.ROLE_ADMIN
    # The old owner is now an admin: can leave, cannot delete.
    assert (
        await code_of(
            rooms.stub.DeleteRoom(pb.DeleteRoomRequest(room_id=room.id), metadata=owner.md)
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=owner.md)
    await rooms.stub.DeleteRoom(pb.DeleteRoomRequest(room_id=room.id), metadata=heir.md)
    assert (
        await code_of(rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=heir.md))
        == grpc.StatusCode.NOT_FOUND
    )


async def test_role_rules_between_owner_admins_and_members(rooms: Rooms) -> None:
    owner, admin, admin2, m1, m2 = (rooms.user() for _ in range(5))
    room = await rooms.create(owner)
    for u in (admin, admin2, m1, m2):
        await rooms.join(u, room)
    await rooms.set_role(owner, room, admin, pb.ROLE_ADMIN)
    await rooms.set_role(owner, room, admin2, pb.ROLE_ADMIN)

    def role_call(actor: object, target: object, role: int) -> object:
        return rooms.stub.SetMemberRole(
            pb.SetMemberRoleRequest(room_id=room.id, user_id=target.id, role=role),  # type: ignore[attr-defined]
            metadata=actor.md,  # type: ignore[attr-defined]
        )

    denied = grpc.StatusCode.PERMISSION_DENIED
    # An admin cannot promote to admin, touch another admin or the owner.
    assert await code_of(role_call(admin, m1, pb.ROLE_ADMIN)) == denied
    assert await code_of(role_call(admin, admin2, pb.ROLE_MEMBER)) == denied
    assert await code_of(role_call(admin, owner, pb.ROLE_MEMBER)) == denied
    assert await code_of(role_call(admin, m1, pb.ROLE_OWNER)) == denied
    # ...but may set a member's role to member (no change) and kick members.
    assert await code_of(role_call(admin, m1, pb.ROLE_MEMBER)) == grpc.StatusCode.OK
    kick = pb.RemoveMemberRequest(room_id=room.id, user_id=m2.id)
    await rooms.stub.RemoveMember(kick, metadata=admin.md)
    assert (
        await code_of(
            rooms.stub.RemoveMember(
                pb.RemoveMemberRequest(room_id=room.id, user_id=admin2.id), metadata=admin.md
            )
        )
        == denied
    )
    # A member can do none of it.
    assert await code_of(role_call(m1, m1, pb.ROLE_ADMIN)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(role_call(m1, admin, pb.ROLE_MEMBER)) == denied
    # The owner demotes admins, and kicks them.
    assert (await rooms.set_role(owner, room, admin2, pb.ROLE_MEMBER)).role == pb.ROLE_MEMBER
    await rooms.stub.RemoveMember(
        pb.RemoveMemberRequest(room_id=room.id, user_id=admin.id), metadata=owner.md
    )
    # The kicked member can rejoin a public room (no ban list), but the target of a
    # role change must be a member.
    assert await code_of(role_call(owner, m2, pb.ROLE_ADMIN)) == grpc.StatusCode.NOT_FOUND
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
    assert got.room.member_count == 3  # owner, admin2, m1


async def test_global_admin_deletes_any_room(rooms: Rooms) -> None:
    owner, moderator = rooms.user(), rooms.user(roles=("admin",))
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=moderator.md)
    assert got.room.my_role == pb.ROLE_UNSPECIFIED
    assert got.room.invite_code == ""
    await rooms.stub.DeleteRoom(pb.DeleteRoomRequest(room_id=room.id), metadata=moderator.md)
    assert (
        await code_of(rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md))
        == grpc.StatusCode.NOT_FOUND
    )
    members = await rooms.running.store.members.count_documents({})
    assert members == 0


async def test_delete_removes_memberships_and_lists(rooms: Rooms) -> None:
    owner, user = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(user, room)
    await rooms.stub.DeleteRoom(pb.DeleteRoomRequest(room_id=room.id), metadata=owner.md)
    joined = await rooms.stub.ListRooms(
        pb.ListRoomsRequest(scope=pb.LIST_SCOPE_JOINED), metadata=user.md
    )
    assert list(joined.rooms) == []
    assert (
        await code_of(
            rooms.stub.CheckMembership(pb.CheckMembershipRequest(room_id=room.id), metadata=user.md)
        )
        == grpc.StatusCode.NOT_FOUND
    )


async def test_check_membership_follows_visibility_changes(rooms: Rooms) -> None:
    owner, member, outsider = rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    await rooms.join(member, room, code=room.invite_code)

    async def check(user: object) -> tuple[bool, int, int]:
        resp = await rooms.stub.CheckMembership(
            pb.CheckMembershipRequest(room_id=room.id),
            metadata=user.md,  # type: ignore[attr-defined]
        )
        return resp.member, resp.role, resp.visibility

    assert await check(member) == (True, pb.ROLE_MEMBER, pb.VISIBILITY_PRIVATE)
    assert await check(owner) == (True, pb.ROLE_OWNER, pb.VISIBILITY_PRIVATE)
    await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, visibility=pb.VISIBILITY_PUBLIC), metadata=owner.md
    )
    assert await check(member) == (True, pb.ROLE_MEMBER, pb.VISIBILITY_PUBLIC)
    assert await check(outsider) == (False, pb.ROLE_UNSPECIFIED, pb.VISIBILITY_PUBLIC)
    await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, visibility=pb.VISIBILITY_PRIVATE), metadata=owner.md
    )
    assert await check(owner) == (True, pb.ROLE_OWNER, pb.VISIBILITY_PRIVATE)
    assert await code_of(check(outsider)) == grpc.StatusCode.NOT_FOUND
