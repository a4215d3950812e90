"""Bans, mutes, slow mode, retention settings and the audit log, through the real
server (grpc.aio, SecantusDB, nats-server)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from rooms_harness import EventSink, Rooms, User, code_of

from roomcast.common import retention
from roomcast.common.clock import now_ms
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def ban(rooms: Rooms, actor: User, room: pb.Room, target: User) -> pb.Ban:
    reply = await rooms.stub.BanMember(
        pb.BanMemberRequest(room_id=room.id, user_id=target.id), metadata=actor.md
    )
    return reply.ban


async def check(rooms: Rooms, user: User, room: pb.Room) -> pb.CheckMembershipResponse:
    return await rooms.stub.CheckMembership(
        pb.CheckMembershipRequest(room_id=room.id), metadata=user.md
    )


async def audit(rooms: Rooms, reader: User, room: pb.Room, **kw: Any) -> pb.ListAuditLogResponse:
    return await rooms.stub.ListAuditLog(
        pb.ListAuditLogRequest(room_id=room.id, **kw), metadata=reader.md
    )


async def code_now(rooms: Rooms, owner: User, room: pb.Room) -> str:
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
    return got.room.invite_code


# ---------------------------------------------------------------------------- bans


async def test_a_banned_member_is_removed_and_cannot_rejoin_even_with_the_new_code(
    rooms: Rooms, events: EventSink
) -> None:
    owner, admin, bob = rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    await rooms.join(admin, room)
    await rooms.join(bob, room)
    await rooms.set_role(owner, room, admin, pb.ROLE_ADMIN)

    got = await ban(rooms, admin, room, bob)
    assert (got.user_id, got.actor_id) == (bob.id, admin.id)
    assert abs(got.created_at_ms - now_ms()) < 10_000

    removed = await events.wait_for_type("member_removed")
    assert (removed["user_id"], removed["actor_id"]) == (bob.id, admin.id)
    assert await code_of(check(rooms, bob, room)) == NOT_FOUND
    new_code = await code_now(rooms, owner, room)
    assert new_code != room.invite_code  # rotated with the ban
    for code in (room.invite_code, new_code):
        refused = await refusal(rooms.join(bob, room, code))
        assert refused.code() == DENIED
        assert (refused.details() or "").startswith("banned:")
    members = await rooms.stub.ListMembers(
        pb.ListMembersRequest(room_id=room.id), metadata=owner.md
    )
    assert sorted(m.user_id for m in members.members) == sorted((owner.id, admin.id))


async def test_a_ban_outlives_the_membership_and_unban_lets_the_user_back(rooms: Rooms) -> None:
    owner, carol = rooms.user(), rooms.user()
    room = await rooms.create(owner)  # public
    await ban(rooms, owner, room, carol)  # not a member: banned all the same
    refused = await refusal(rooms.join(carol, room))
    assert refused.code() == DENIED
    assert (refused.details() or "").startswith("banned:")

    listed = await rooms.stub.ListBans(pb.ListBansRequest(room_id=room.id), metadata=owner.md)
    assert [b.user_id for b in listed.bans] == [carol.id]

    await rooms.stub.UnbanMember(
        pb.UnbanMemberRequest(room_id=room.id, user_id=carol.id), metadata=owner.md
    )
    joined = await rooms.join(carol, room)
    assert joined.member.user_id == carol.id
    listed = await rooms.stub.ListBans(pb.ListBansRequest(room_id=room.id), metadata=owner.md)
    assert list(listed.bans) == []


async def test_banning_twice_keeps_the_first_ban_and_one_audit_entry(rooms: Rooms) -> None:
    owner, admin, dave = rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(admin, room)
    await rooms.set_role(owner, room, admin, pb.ROLE_ADMIN)
    await rooms.join(dave, room)
    first = await ban(rooms, admin, room, dave)
    second = await ban(rooms, owner, room, dave)
    assert (second.actor_id, second.created_at_ms) == (first.actor_id, first.created_at_ms)
    entries = (await audit(rooms, owner, room)).entries
    assert [e.action for e in entries if e.action == "ban"] == ["ban"]


async def test_who_can_be_banned(rooms: Rooms) -> None:
    owner, admin, admin2 = rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner)
    for user in (admin, admin2):
        await rooms.join(user, room)
        await rooms.set_role(owner, room, user, pb.ROLE_ADMIN)
    assert (await refusal(ban(rooms, admin, room, admin2))).code() == DENIED
    assert (await refusal(ban(rooms, admin, room, owner))).code() == DENIED
    assert (await refusal(ban(rooms, owner, room, owner))).code() == INVALID
    garbage = rooms.stub.BanMember(
        pb.BanMemberRequest(room_id=room.id, user_id="{'$gt': ''}"), metadata=owner.md
    )
    assert await code_of(garbage) == INVALID
    await ban(rooms, owner, room, admin2)  # the owner outranks an admin
    assert await code_of(check(rooms, admin2, room)) == grpc.StatusCode.OK
    assert (await check(rooms, admin2, room)).member is False


async def test_a_join_racing_the_ban_is_undone_and_published(
    rooms: Rooms, events: EventSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving a check before the insert cannot catch: the join has passed
    its ban check, then the whole ban runs (finding no membership to remove), then the
    join inserts. JoinRoom's re-check after the insert undoes it and publishes the
    removal, so a gateway that cached "member" in the gap drops it."""
    owner, eve = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    store = rooms.running.store
    insert = store.add_member

    async def banned_first(room_id: str, user_id: str, *args: Any, **kwargs: Any) -> Any:
        if user_id == eve.id:
            await ban(rooms, owner, room, eve)
        return await insert(room_id, user_id, *args, **kwargs)

    monkeypatch.setattr(store, "add_member", banned_first)
    refused = await refusal(rooms.join(eve, room))
    assert refused.code() == DENIED
    assert (refused.details() or "").startswith("banned:")
    removed = await events.wait_for_type("member_removed")
    assert removed["user_id"] == eve.id
    assert (await check(rooms, eve, room)).member is False
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
    assert got.room.member_count == 1


# --------------------------------------------------------------------------- mutes


async def test_a_mute_is_in_the_membership_answer_and_survives_a_rejoin(
    rooms: Rooms, events: EventSink
) -> None:
    owner, bob = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(bob, room)
    assert (await check(rooms, bob, room)).muted_until_ms == 0
    until = now_ms() + 60_000
    muted = await rooms.stub.MuteMember(
        pb.MuteMemberRequest(room_id=room.id, user_id=bob.id, until_ms=until), metadata=owner.md
    )
    assert muted.muted_until_ms == until
    event = await events.wait_for_type("member_muted")
    assert (event["user_id"], event["muted_until_ms"]) == (bob.id, until)
    answer = await check(rooms, bob, room)
    assert (answer.member, answer.muted_until_ms) == (True, until)

    # Leaving and joining again does not end it.
    await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=bob.md)
    await rooms.join(bob, room)
    assert (await check(rooms, bob, room)).muted_until_ms == until

    await rooms.stub.UnmuteMember(
        pb.UnmuteMemberRequest(room_id=room.id, user_id=bob.id), metadata=owner.md
    )
    await events.wait_for_type("member_unmuted")
    assert (await check(rooms, bob, room)).muted_until_ms == 0


async def test_mute_end_bounds(rooms: Rooms) -> None:
    owner, bob = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(bob, room)
    year = 366 * 24 * 3600 * 1000
    for until in (0, now_ms() - 1000, now_ms() + year + 60_000, -5):
        call = rooms.stub.MuteMember(
            pb.MuteMemberRequest(room_id=room.id, user_id=bob.id, until_ms=until),
            metadata=owner.md,
        )
        assert await code_of(call) == INVALID, until
    assert (await check(rooms, bob, room)).muted_until_ms == 0


# ------------------------------------------------------- slow mode and retention


async def test_slow_mode_and_retention_are_room_settings_with_bounds(rooms: Rooms) -> None:
    owner, bob, late = rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner)
    await rooms.join(bob, room)
    updated = await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, slow_mode_seconds=30, retention_days=7),
        metadata=owner.md,
    )
    assert (updated.room.slow_mode_seconds, updated.room.retention_days) == (30, 7)
    await rooms.join(late, room)
    outsider = rooms.user()
    for user in (owner, bob, late, outsider):  # members (copied) and non-members
        assert (await check(rooms, user, room)).slow_mode_seconds == 30

    for field, value in (
        ("slow_mode_seconds", -1),
        ("slow_mode_seconds", 6 * 3600 + 1),
        ("retention_days", -1),
        ("retention_days", 3651),
    ):
        call = rooms.stub.UpdateRoom(
            pb.UpdateRoomRequest(room_id=room.id, **{field: value}), metadata=owner.md
        )
        assert await code_of(call) == INVALID, (field, value)
    member_try = rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, slow_mode_seconds=0), metadata=bob.md
    )
    assert await code_of(member_try) == DENIED

    # Off again; a name change leaves the settings alone.
    await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, slow_mode_seconds=0, name="renamed"),
        metadata=owner.md,
    )
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=bob.md)
    assert (got.room.slow_mode_seconds, got.room.retention_days) == (0, 7)
    assert (await check(rooms, late, room)).slow_mode_seconds == 0


async def test_retention_periods_reach_the_bucket_history_reads(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner)
    other = await rooms.create(owner, name="other")
    kv = await retention.open_bucket(rooms.nats.jetstream(), replicas=1, create=True)
    for r, days in ((room, 3), (other, 10)):
        await rooms.stub.UpdateRoom(
            pb.UpdateRoomRequest(room_id=r.id, retention_days=days), metadata=owner.md
        )
    periods = await retention.read_all(kv)
    assert (periods.get(room.id), periods.get(other.id)) == (3, 10)

    await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, retention_days=0), metadata=owner.md
    )
    await rooms.stub.DeleteRoom(pb.DeleteRoomRequest(room_id=other.id), metadata=owner.md)
    periods = await retention.read_all(kv)
    assert room.id not in periods
    assert other.id not in periods

    # A period MongoDB has but the bucket lost (written while NATS was away) is put
    # back by the next round; a key of no room is removed.
    await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, retention_days=5), metadata=owner.md
    )
    await kv.delete(room.id)
    stray = "f" * 24
    await kv.put(stray, retention.encode(1))
    assert await rooms.running.retention.sync_once() >= 2
    periods = await retention.read_all(kv)
    assert periods.get(room.id) == 5
    assert stray not in periods


# ------------------------------------------------------------------- the audit log


async def test_the_audit_log_records_moderation_roles_and_settings(rooms: Rooms) -> None:
    owner, admin, bob, carol = rooms.user(), rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    for user in (admin, bob, carol):
        await rooms.join(user, room)
    await rooms.set_role(owner, room, admin, pb.ROLE_ADMIN)
    until = now_ms() + 60_000
    md = admin.md
    await rooms.stub.MuteMember(
        pb.MuteMemberRequest(room_id=room.id, user_id=bob.id, until_ms=until), metadata=md
    )
    await rooms.stub.UnmuteMember(
        pb.UnmuteMemberRequest(room_id=room.id, user_id=bob.id), metadata=md
    )
    await rooms.stub.UpdateRoom(
        pb.UpdateRoomRequest(room_id=room.id, slow_mode_seconds=10), metadata=md
    )
    await rooms.stub.RemoveMember(
        pb.RemoveMemberRequest(room_id=room.id, user_id=carol.id), metadata=md
    )
    await ban(rooms, admin, room, bob)
    await rooms.stub.UnbanMember(
        pb.UnbanMemberRequest(room_id=room.id, user_id=bob.id), metadata=md
    )
    await rooms.stub.RotateInviteCode(pb.RotateInviteCodeRequest(room_id=room.id), metadata=md)
    await rooms.stub.RecordMessageDeletion(
        pb.RecordMessageDeletionRequest(room_id=room.id, seq=42, sender_id=bob.id), metadata=md
    )

    entries = list((await audit(rooms, owner, room)).entries)
    got = [(e.action, e.actor_id, e.target_user_id, dict(e.details)) for e in entries]
    assert got == [
        ("message_deleted", admin.id, bob.id, {"seq": "42"}),
        ("invite_rotated", admin.id, "", {}),
        ("unban", admin.id, bob.id, {}),
        ("ban", admin.id, bob.id, {}),
        ("kick", admin.id, carol.id, {}),
        ("room_updated", admin.id, "", {"slow_mode_seconds": "10"}),
        ("unmute", admin.id, bob.id, {}),
        ("mute", admin.id, bob.id, {"until_ms": str(until)}),
        ("role_changed", owner.id, admin.id, {"role": "admin", "previous_role": "member"}),
    ]
    times = [e.at_ms for e in entries]
    assert times == sorted(times, reverse=True)
    assert abs(times[0] - now_ms()) < 60_000

    # Readable by managers and global admins, not by members.
    assert await code_of(audit(rooms, admin, room)) == grpc.StatusCode.OK
    assert await code_of(audit(rooms, rooms.user(roles=("admin",)), room)) == grpc.StatusCode.OK
    await rooms.join(carol, room, await code_now(rooms, owner, room))
    assert await code_of(audit(rooms, carol, room)) == DENIED


async def test_the_audit_log_pages_with_a_cursor(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner)
    for i in range(7):
        await rooms.stub.UpdateRoom(
            pb.UpdateRoomRequest(room_id=room.id, topic=f"t{i}"), metadata=owner.md
        )
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = await audit(rooms, owner, room, limit=3, cursor=cursor)
        seen += [e.details["topic"] for e in page.entries]
        pages += 1
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == [f"t{i}" for i in reversed(range(7))]
    assert pages == 3
    bad = audit(rooms, owner, room, cursor="garbage!")
    assert await code_of(bad) == INVALID
    members_cursor = await rooms.stub.ListBans(
        pb.ListBansRequest(room_id=room.id), metadata=owner.md
    )
    assert members_cursor.next_cursor == ""
