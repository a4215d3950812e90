"""Every change publishes exactly one event of the documented shape on
``chat.events.room.<room_id>`` (core NATS), after the change is stored."""

from __future__ import annotations

from typing import Any

import grpc
from prometheus_client import REGISTRY
from rooms_harness import EventSink, Rooms, code_of

from roomcast.common.clock import now_ms
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb


def strip_time(events: list[dict[str, Any]], since_ms: int) -> list[dict[str, Any]]:
    now = now_ms()
    out = []
    for event in events:
        assert since_ms <= event["at_ms"] <= now
        out.append({k: v for k, v in event.items() if k != "at_ms"})
    return out


def published(type_: str) -> float:
    return REGISTRY.get_sample_value("roomcast_rooms_events_published_total", {"type": type_}) or 0


async def test_membership_events_have_the_documented_payloads(
    rooms: Rooms, events: EventSink
) -> None:
    start = now_ms()
    joined_before = published("member_joined")
    owner, admin, member = rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner, name="ev")
    await rooms.join(admin, room)
    await rooms.join(member, room)
    await rooms.join(member, room)  # idempotent: no second event
    await rooms.set_role(owner, room, admin, pb.ROLE_ADMIN)
    await rooms.stub.RemoveMember(
        pb.RemoveMemberRequest(room_id=room.id, user_id=member.id), metadata=admin.md
    )
    await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=admin.md)
    await rooms.stub.DeleteRoom(pb.DeleteRoomRequest(room_id=room.id), metadata=owner.md)
    got = strip_time(await events.wait_for(7), start)
    r = room.id
    assert got == [
        {
            "type": "member_joined",
            "room_id": r,
            "user_id": owner.id,
            "role": "owner",
            "actor_id": owner.id,
        },
        {
            "type": "member_joined",
            "room_id": r,
            "user_id": admin.id,
            "role": "member",
            "actor_id": admin.id,
        },
        {
            "type": "member_joined",
            "room_id": r,
            "user_id": member.id,
            "role": "member",
            "actor_id": member.id,
        },
        {
            "type": "role_changed",
            "room_id": r,
            "user_id": admin.id,
            "role": "admin",
            "actor_id": owner.id,
        },
        {"type": "member_removed", "room_id": r, "user_id": member.id, "actor_id": admin.id},
        {"type": "member_left", "room_id": r, "user_id": admin.id, "actor_id": admin.id},
        {"type": "room_deleted", "room_id": r, "actor_id": owner.id},
    ]
    assert set(events.subjects) == {f"chat.events.room.{r}"}
    assert published("member_joined") - joined_before == 3


async def test_room_updated_carries_public_fields_only(rooms: Rooms, events: EventSink) -> None:
    owner = rooms.user()
    room = await rooms.create(owner, name="before", visibility=pb.VISIBILITY_PRIVATE)
    start = now_ms()
    updated = await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, name="after", topic="hello"), metadata=owner.md
    )
    # A no-op update changes nothing and publishes nothing; the rename below proves
    # (NATS keeps one publisher's order) that nothing was published in between.
    await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, name="after"), metadata=owner.md
    )
    await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, name="last"), metadata=owner.md
    )
    got = strip_time((await events.wait_for(3))[1:], start)
    assert len(got) == 2
    first = got[0]
    assert first == {
        "type": "room_updated",
        "room_id": room.id,
        "actor_id": owner.id,
        "room": {
            "id": room.id,
            "name": "after",
            "topic": "hello",
            "visibility": "private",
            "owner_id": owner.id,
            "member_count": 1,
            "created_at_ms": room.created_at_ms,
            "updated_at_ms": updated.room.updated_at_ms,
            "slow_mode_seconds": 0,
            "retention_days": 0,
        },
    }
    assert room.invite_code not in str(got)
    assert got[1]["room"]["name"] == "last"


async def test_ownership_transfer_publishes_both_role_changes(
    rooms: Rooms, events: EventSink
) -> None:
    owner, heir = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(heir, room)
    start = now_ms()
    await rooms.set_role(owner, room, heir, pb.ROLE_OWNER)
    got = strip_time((await events.wait_for(5))[2:], start)
    assert got[0] == {
        "type": "role_changed",
        "room_id": room.id,
        "user_id": heir.id,
        "role": "owner",
        "actor_id": owner.id,
    }
    assert got[1] == {
        "type": "role_changed",
        "room_id": room.id,
        "user_id": owner.id,
        "role": "admin",
        "actor_id": owner.id,
    }
    assert got[2]["type"] == "room_updated"
    assert got[2]["room"]["owner_id"] == heir.id


async def test_direct_room_publishes_joins_once(rooms: Rooms, events: EventSink) -> None:
    a, b = rooms.user(), rooms.user()
    first = await rooms.stub.OpenDirectRoom(pb.OpenDirectRoomRequest(user_id=b.id), metadata=a.md)
    again = await rooms.stub.OpenDirectRoom(pb.OpenDirectRoomRequest(user_id=a.id), metadata=b.md)
    assert (first.created, again.created) == (True, False)
    # A later event proves nothing was published for the second open.
    later = await rooms.create(a)
    got = await events.wait_for(3)
    assert [(e["type"], e["room_id"], e.get("user_id"), e.get("role")) for e in got] == [
        ("member_joined", first.room.id, min(a.id, b.id), "member"),
        ("member_joined", first.room.id, max(a.id, b.id), "member"),
        ("member_joined", later.id, a.id, "owner"),
    ]
    assert all(e["actor_id"] == a.id for e in got)


async def test_refused_and_idempotent_calls_publish_nothing(
    rooms: Rooms, events: EventSink
) -> None:
    owner, member = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(member, room)
    await rooms.join(member, room)
    outcomes = [
        await code_of(call)
        for call in (
            rooms.stub.DeleteRoom(pb.DeleteRoomRequest(room_id=room.id), metadata=member.md),
            rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=owner.md),
            rooms.stub.UpdateRoom(
                pb.UpdateRoomRequest(room_id=room.id, name="x"), metadata=member.md
            ),
            rooms.stub.RotateInviteCode(
                pb.RotateInviteCodeRequest(room_id=room.id), metadata=owner.md
            ),
            rooms.stub.SetMemberRole(
                pb.SetMemberRoleRequest(room_id=room.id, user_id=member.id, role=pb.ROLE_MEMBER),
                metadata=owner.md,
            ),
        )
    ]
    assert outcomes == [
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OK,  # rotating the invite code changes nothing members see
        grpc.StatusCode.OK,  # already a member: no change
    ]
    await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=member.md)
    got = await events.wait_for(3)
    assert [e["type"] for e in got] == ["member_joined", "member_joined", "member_left"]
