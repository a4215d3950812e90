"""Malformed input is refused with INVALID_ARGUMENT before any query; never UNKNOWN."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from rooms_harness import Rooms, code_of

from roomcast.common.grpcmeta import bearer_metadata
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT

BAD_IDS = [
    "",
    "abc",
    "A" * 24,  # uppercase
    "a" * 23,
    "a" * 25,
    "0" * 23 + "g",
    "$gt",
    '{"$ne": null}',
    "é" * 24,
    "a" * 24 + "\n",
    "x" * 10_000,
]


def id_requests(bad: str, good: str) -> list[tuple[str, Any]]:
    return [
        ("GetRoom", pb.GetRoomRequest(room_id=bad)),
        ("UpdateRoom", pb.UpdateRoomRequest(room_id=bad, name="x")),
        ("DeleteRoom", pb.DeleteRoomRequest(room_id=bad)),
        ("JoinRoom", pb.JoinRoomRequest(room_id=bad)),
        ("LeaveRoom", pb.LeaveRoomRequest(room_id=bad)),
        ("ListMembers", pb.ListMembersRequest(room_id=bad)),
        ("SetMemberRole", pb.SetMemberRoleRequest(room_id=bad, user_id=good, role=1)),
        ("SetMemberRole", pb.SetMemberRoleRequest(room_id=good, user_id=bad, role=1)),
        ("RemoveMember", pb.RemoveMemberRequest(room_id=bad, user_id=good)),
        ("RemoveMember", pb.RemoveMemberRequest(room_id=good, user_id=bad)),
        ("RotateInviteCode", pb.RotateInviteCodeRequest(room_id=bad)),
        ("OpenDirectRoom", pb.OpenDirectRoomRequest(user_id=bad)),
        ("CheckMembership", pb.CheckMembershipRequest(room_id=bad)),
    ]


@pytest.mark.parametrize("bad", BAD_IDS, ids=range(len(BAD_IDS)))
async def test_malformed_ids_are_invalid_argument(rooms: Rooms, bad: str) -> None:
    owner = rooms.user()
    room = await rooms.create(owner)
    for method, request in id_requests(bad, room.id):
        call = getattr(rooms.stub, method)(request, metadata=owner.md)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == INVALID, method
        assert err.value.details().startswith("invalid_argument: "), err.value.details()


@pytest.mark.parametrize(
    ("name", "topic", "ok"),
    [
        ("a" * 64, "t" * 256, True),
        ("  padded  ", "", True),
        ("👩‍👩‍👧 family", "", True),  # zero-width joiners are fine
        ("", "", False),
        ("   ", "", False),
        ("a" * 65, "", False),
        ("a" * 10_000, "", False),
        ("bad\x00name", "", False),
        ("two\nlines", "", False),
        ("line\u2028sep", "", False),
        ("ok", "t" * 257, False),
        ("ok", "bell\x07", False),
    ],
)
async def test_names_and_topics(rooms: Rooms, name: str, topic: str, ok: bool) -> None:
    owner = rooms.user()
    create = rooms.stub.CreateRoom(
        pb.CreateRoomRequest(name=name, topic=topic, visibility=pb.VISIBILITY_PUBLIC),
        metadata=owner.md,
    )
    assert await code_of(create) == (grpc.StatusCode.OK if ok else INVALID)
    room = await rooms.create(owner)
    update = rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, name=name, topic=topic), metadata=owner.md
    )
    assert await code_of(update) == (grpc.StatusCode.OK if ok else INVALID)


async def test_bad_enum_values(rooms: Rooms) -> None:
    owner, member = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(member, room)
    for visibility in (pb.VISIBILITY_UNSPECIFIED, pb.VISIBILITY_DIRECT, 99, -1):
        call = rooms.stub.CreateRoom(
            pb.CreateRoomRequest(name="x", visibility=visibility), metadata=owner.md
        )
        assert await code_of(call) == INVALID, visibility
    for visibility in (pb.VISIBILITY_DIRECT, 7):
        call = rooms.stub.UpdateRoom(
            pb.UpdateRoomRequest(room_id=room.id, visibility=visibility), metadata=owner.md
        )
        assert await code_of(call) == INVALID, visibility
    for role in (pb.ROLE_UNSPECIFIED, 4, 1000):
        call = rooms.stub.SetMemberRole(
            pb.SetMemberRoleRequest(room_id=room.id, user_id=member.id, role=role),
            metadata=owner.md,
        )
        assert await code_of(call) == INVALID, role
    call = rooms.stub.ListRooms(pb.ListRoomsRequest(scope=3), metadata=owner.md)
    assert await code_of(call) == INVALID


async def test_other_field_limits(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    calls = [
        rooms.stub.JoinRoom(
            pb.JoinRoomRequest(room_id=room.id, invite_code="c" * 65), metadata=owner.md
        ),
        rooms.stub.ListRooms(pb.ListRoomsRequest(name_prefix="p" * 65), metadata=owner.md),
        rooms.stub.ListRooms(pb.ListRoomsRequest(name_prefix="a\x00"), metadata=owner.md),
        rooms.stub.ListMembers(pb.ListMembersRequest(room_id=room.id, limit=-5), metadata=owner.md),
        rooms.stub.ListMembers(
            pb.ListMembersRequest(room_id=room.id, cursor="zz"), metadata=owner.md
        ),
        rooms.stub.OpenDirectRoom(pb.OpenDirectRoomRequest(user_id=owner.id), metadata=owner.md),
        rooms.stub.SetMemberRole(
            pb.SetMemberRoleRequest(room_id=room.id, user_id=owner.id, role=pb.ROLE_ADMIN),
            metadata=owner.md,
        ),
        rooms.stub.RemoveMember(
            pb.RemoveMemberRequest(room_id=room.id, user_id=owner.id), metadata=owner.md
        ),
    ]
    assert [await code_of(c) for c in calls] == [INVALID] * len(calls)


async def test_oversized_request_is_refused_by_the_transport(rooms: Rooms) -> None:
    owner = rooms.user()
    call = rooms.stub.CreateRoom(
        pb.CreateRoomRequest(name="n" * (1024 * 1024), visibility=pb.VISIBILITY_PUBLIC),
        metadata=owner.md,
    )
    assert await code_of(call) == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_token_whose_subject_is_not_an_object_id(rooms: Rooms) -> None:
    token = rooms.issue_token(user_id="alice")
    call = rooms.stub.ListRooms(pb.ListRoomsRequest(), metadata=bearer_metadata(token))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details().startswith("invalid_token: ")


async def test_expired_token_says_so(rooms: Rooms) -> None:
    token = rooms.issue_token(ttl_seconds=-120)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rooms.stub.ListRooms(pb.ListRoomsRequest(), metadata=bearer_metadata(token))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details().startswith("token_expired: ")


@pytest.mark.parametrize("settings_overrides", [{"create_rooms_per_minute": 3}])
async def test_room_creation_is_rate_limited_per_user(rooms: Rooms) -> None:
    spammer, other = rooms.user(), rooms.user()
    for _ in range(3):
        await rooms.create(spammer)
    call = rooms.stub.CreateRoom(
        pb.CreateRoomRequest(name="x", visibility=pb.VISIBILITY_PUBLIC), metadata=spammer.md
    )
    assert await code_of(call) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Opening a new direct room counts too; opening an existing one does not.
    existing = await rooms.stub.OpenDirectRoom(
        pb.OpenDirectRoomRequest(user_id=spammer.id), metadata=other.md
    )
    again = await rooms.stub.OpenDirectRoom(
        pb.OpenDirectRoomRequest(user_id=other.id), metadata=spammer.md
    )
    assert again.room.id == existing.room.id
    new_dm = rooms.stub.OpenDirectRoom(
        pb.OpenDirectRoomRequest(user_id=rooms.user().id), metadata=spammer.md
    )
    assert await code_of(new_dm) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Other users are not affected.
    await rooms.create(other)
