"""The authorization matrix: every RPC x every kind of caller, on a public and on a
private room, through the real server. Each caller gets a freshly set up room, and a
refused call must leave the room exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from rooms_harness import Rooms, User, code_of

from roomcast.common.clock import now_ms
from roomcast.common.grpcmeta import bearer_metadata
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

OK = grpc.StatusCode.OK
PD = grpc.StatusCode.PERMISSION_DENIED
NF = grpc.StatusCode.NOT_FOUND
FP = grpc.StatusCode.FAILED_PRECONDITION
UA = grpc.StatusCode.UNAUTHENTICATED

ROLES = ("owner", "admin", "member", "outsider", "global_admin")
UNAUTHENTICATED = ("anonymous", "expired", "garbage", "wrong_scheme")


@dataclass
class Scene:
    room: pb.Room
    users: dict[str, User]
    target: User  # a plain member that role changes and kicks aim at


Request = Callable[[Scene], tuple[str, Any]]

REQUESTS: dict[str, Request] = {
    "CreateRoom": lambda s: (
        "CreateRoom",
        pb.CreateRoomRequest(name="n", visibility=pb.VISIBILITY_PUBLIC),
    ),
    "GetRoom": lambda s: ("GetRoom", pb.GetRoomRequest(room_id=s.room.id)),
    "ListRooms": lambda s: ("ListRooms", pb.ListRoomsRequest(scope=pb.LIST_SCOPE_JOINED)),
    "UpdateRoom": lambda s: ("UpdateRoom", pb.UpdateRoomRequest(room_id=s.room.id, topic="new")),
    "DeleteRoom": lambda s: ("DeleteRoom", pb.DeleteRoomRequest(room_id=s.room.id)),
    "JoinRoom": lambda s: ("JoinRoom", pb.JoinRoomRequest(room_id=s.room.id)),
    "LeaveRoom": lambda s: ("LeaveRoom", pb.LeaveRoomRequest(room_id=s.room.id)),
    "ListMembers": lambda s: ("ListMembers", pb.ListMembersRequest(room_id=s.room.id)),
    "SetMemberRole": lambda s: (
        "SetMemberRole",
        pb.SetMemberRoleRequest(room_id=s.room.id, user_id=s.target.id, role=pb.ROLE_ADMIN),
    ),
    "RemoveMember": lambda s: (
        "RemoveMember",
        pb.RemoveMemberRequest(room_id=s.room.id, user_id=s.target.id),
    ),
    "RotateInviteCode": lambda s: (
        "RotateInviteCode",
        pb.RotateInviteCodeRequest(room_id=s.room.id),
    ),
    "OpenDirectRoom": lambda s: ("OpenDirectRoom", pb.OpenDirectRoomRequest(user_id=s.target.id)),
    "FilterMembers": lambda s: (
        "FilterMembers",
        pb.FilterMembersRequest(room_id=s.room.id, user_ids=[s.target.id]),
    ),
    "CheckMembership": lambda s: (
        "CheckMembership",
        pb.CheckMembershipRequest(room_id=s.room.id),
    ),
    "BanMember": lambda s: (
        "BanMember",
        pb.BanMemberRequest(room_id=s.room.id, user_id=s.target.id),
    ),
    "UnbanMember": lambda s: (
        "UnbanMember",
        pb.UnbanMemberRequest(room_id=s.room.id, user_id=s.target.id),
    ),
    "ListBans": lambda s: ("ListBans", pb.ListBansRequest(room_id=s.room.id)),
    "MuteMember": lambda s: (
        "MuteMember",
        pb.MuteMemberRequest(room_id=s.room.id, user_id=s.target.id, until_ms=now_ms() + 60_000),
    ),
    "UnmuteMember": lambda s: (
        "UnmuteMember",
        pb.UnmuteMemberRequest(room_id=s.room.id, user_id=s.target.id),
    ),
    "ListAuditLog": lambda s: ("ListAuditLog", pb.ListAuditLogRequest(room_id=s.room.id)),
    "RecordMessageDeletion": lambda s: (
        "RecordMessageDeletion",
        pb.RecordMessageDeletionRequest(room_id=s.room.id, seq=7, sender_id=s.target.id),
    ),
}

#                        owner admin member outsider global_admin
EXPECTED: dict[str, dict[str, tuple[grpc.StatusCode, ...]]] = {
    "CreateRoom": {"public": (OK, OK, OK, OK, OK), "private": (OK, OK, OK, OK, OK)},
    "GetRoom": {"public": (OK, OK, OK, OK, OK), "private": (OK, OK, OK, NF, OK)},
    "ListRooms": {"public": (OK, OK, OK, OK, OK), "private": (OK, OK, OK, OK, OK)},
    "UpdateRoom": {"public": (OK, OK, PD, PD, PD), "private": (OK, OK, PD, NF, PD)},
    "DeleteRoom": {"public": (OK, PD, PD, PD, OK), "private": (OK, PD, PD, NF, OK)},
    "JoinRoom": {"public": (OK, OK, OK, OK, OK), "private": (OK, OK, OK, NF, NF)},
    "LeaveRoom": {"public": (FP, OK, OK, OK, OK), "private": (FP, OK, OK, NF, OK)},
    "ListMembers": {"public": (OK, OK, OK, OK, OK), "private": (OK, OK, OK, NF, OK)},
    "SetMemberRole": {"public": (OK, PD, PD, PD, PD), "private": (OK, PD, PD, NF, PD)},
    "RemoveMember": {"public": (OK, OK, PD, PD, PD), "private": (OK, OK, PD, NF, PD)},
    "RotateInviteCode": {"public": (OK, OK, PD, PD, PD), "private": (OK, OK, PD, NF, PD)},
    "OpenDirectRoom": {"public": (OK, OK, OK, OK, OK), "private": (OK, OK, OK, OK, OK)},
    "CheckMembership": {"public": (OK, OK, OK, OK, OK), "private": (OK, OK, OK, NF, OK)},
    "FilterMembers": {"public": (OK, OK, OK, PD, PD), "private": (OK, OK, OK, NF, PD)},
    "BanMember": {"public": (OK, OK, PD, PD, PD), "private": (OK, OK, PD, NF, PD)},
    "UnbanMember": {"public": (OK, OK, PD, PD, PD), "private": (OK, OK, PD, NF, PD)},
    "ListBans": {"public": (OK, OK, PD, PD, PD), "private": (OK, OK, PD, NF, PD)},
    "MuteMember": {"public": (OK, OK, PD, PD, PD), "private": (OK, OK, PD, NF, PD)},
    "UnmuteMember": {"public": (OK, OK, PD, PD, PD), "private": (OK, OK, PD, NF, PD)},
    "ListAuditLog": {"public": (OK, OK, PD, PD, OK), "private": (OK, OK, PD, NF, OK)},
    "RecordMessageDeletion": {"public": (OK, OK, PD, PD, PD), "private": (OK, OK, PD, NF, PD)},
}
assert (
    set(EXPECTED) == set(REQUESTS) == set(pb.DESCRIPTOR.services_by_name["Rooms"].methods_by_name)
)

VISIBILITIES = {"public": pb.VISIBILITY_PUBLIC, "private": pb.VISIBILITY_PRIVATE}


async def make_scene(rooms: Rooms, visibility: int) -> Scene:
    users = {
        "owner": rooms.user(),
        "admin": rooms.user(),
        "member": rooms.user(),
        "outsider": rooms.user(),
        "global_admin": rooms.user(roles=("admin",)),
    }
    target = rooms.user()
    room = await rooms.create(users["owner"], visibility=visibility)
    for name in ("admin", "member"):
        await rooms.join(users[name], room)
    await rooms.join(target, room)
    await rooms.set_role(users["owner"], room, users["admin"], pb.ROLE_ADMIN)
    return Scene(room, users, target)


async def snapshot(rooms: Rooms, scene: Scene) -> tuple[Any, ...]:
    owner = scene.users["owner"]
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=scene.room.id), metadata=owner.md)
    members = await rooms.stub.ListMembers(
        pb.ListMembersRequest(room_id=scene.room.id), metadata=owner.md
    )
    r = got.room
    return (
        r.name,
        r.topic,
        r.visibility,
        r.owner_id,
        r.invite_code,
        r.member_count,
        sorted((m.user_id, m.role) for m in members.members),
    )


def metadata_for(rooms: Rooms, scene: Scene, caller: str) -> tuple[tuple[str, str], ...]:
    if caller == "anonymous":
        return ()
    if caller == "expired":
        # Beyond the verifier's 30 s clock-skew leeway.
        return bearer_metadata(
            rooms.issue_token(user_id=scene.users["member"].id, ttl_seconds=-120)
        )
    if caller == "garbage":
        return bearer_metadata("not.a.jwt")
    if caller == "wrong_scheme":
        return (("authorization", "Basic " + scene.users["member"].token),)
    return scene.users[caller].md


@pytest.mark.parametrize("visibility", list(VISIBILITIES))
@pytest.mark.parametrize("rpc", list(REQUESTS))
async def test_authorization_matrix(rooms: Rooms, rpc: str, visibility: str) -> None:
    outcomes: dict[str, grpc.StatusCode] = {}
    expected = dict(zip(ROLES, EXPECTED[rpc][visibility], strict=True))
    expected.update({caller: UA for caller in UNAUTHENTICATED})
    for caller in (*ROLES, *UNAUTHENTICATED):
        scene = await make_scene(rooms, VISIBILITIES[visibility])
        before = await snapshot(rooms, scene)
        method, request = REQUESTS[rpc](scene)
        call = getattr(rooms.stub, method)(request, metadata=metadata_for(rooms, scene, caller))
        outcomes[caller] = await code_of(call)
        if outcomes[caller] != OK:
            assert await snapshot(rooms, scene) == before, f"{caller} changed the room"
    assert outcomes == expected


DIRECT_EXPECTED: dict[str, tuple[grpc.StatusCode, grpc.StatusCode, grpc.StatusCode]] = {
    #                  member outsider global_admin
    "GetRoom": (OK, NF, OK),
    "UpdateRoom": (FP, NF, FP),
    "DeleteRoom": (PD, NF, OK),
    "JoinRoom": (FP, NF, NF),
    "LeaveRoom": (FP, NF, FP),
    "ListMembers": (OK, NF, OK),
    "SetMemberRole": (FP, NF, FP),
    "RemoveMember": (FP, NF, FP),
    "RotateInviteCode": (FP, NF, FP),
    "CheckMembership": (OK, NF, OK),
    "BanMember": (FP, NF, FP),
    "MuteMember": (FP, NF, FP),
    "ListAuditLog": (PD, NF, OK),
}


@pytest.mark.parametrize("rpc", list(DIRECT_EXPECTED))
async def test_direct_room_matrix(rooms: Rooms, rpc: str) -> None:
    outcomes = []
    for caller in ("member", "outsider", "global_admin"):
        a, b = rooms.user(), rooms.user()
        opened = await rooms.stub.OpenDirectRoom(
            pb.OpenDirectRoomRequest(user_id=b.id), metadata=a.md
        )
        users = {
            "member": a,
            "outsider": rooms.user(),
            "global_admin": rooms.user(roles=("admin",)),
        }
        scene = Scene(opened.room, users, b)
        method, request = REQUESTS[rpc](scene)
        outcomes.append(
            await code_of(getattr(rooms.stub, method)(request, metadata=users[caller].md))
        )
        if outcomes[-1] != OK:
            members = await rooms.stub.ListMembers(
                pb.ListMembersRequest(room_id=opened.room.id), metadata=a.md
            )
            assert sorted(m.user_id for m in members.members) == sorted((a.id, b.id))
    assert tuple(outcomes) == DIRECT_EXPECTED[rpc]
