"""Invite codes keep private rooms private: a kick rotates the code (the kicked user's
old code no longer opens the room, even racing the kick), and no code, whatever its
characters, tells a private room from a missing one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from rooms_harness import EventSink, Rooms, User, code_of, new_user_id

from roomcast.rooms.validation import MAX_INVITE_CODE_CHARS
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
# Kick/rejoin races tried; each is one real interleaving on the server.
RACE_ROUNDS = 12
# Odd codes tried per run; each costs two JoinRoom calls.
MAX_CODE_EXAMPLES = 60


async def kick(rooms: Rooms, actor: User, room: pb.Room, target: User) -> None:
    await rooms.stub.RemoveMember(
        pb.RemoveMemberRequest(room_id=room.id, user_id=target.id), metadata=actor.md
    )


async def join_with(rooms: Rooms, user: User, room_id: str, code: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rooms.stub.JoinRoom(
            pb.JoinRoomRequest(room_id=room_id, invite_code=code), metadata=user.md
        )
    return err.value


async def current_code(rooms: Rooms, user: User, room: pb.Room) -> str:
    reply = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=user.md)
    return reply.room.invite_code


async def test_a_kicked_user_cannot_rejoin_a_private_room_with_the_old_code(rooms: Rooms) -> None:
    owner, admin, kicked, newcomer = rooms.user(), rooms.user(), rooms.user(), rooms.user()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    old_code = room.invite_code
    for user in (admin, kicked):
        await rooms.join(user, room, old_code)
    await rooms.set_role(owner, room, admin, pb.ROLE_ADMIN)

    await kick(rooms, admin, room, kicked)

    refused = await join_with(rooms, kicked, room.id, old_code)
    missing = await join_with(rooms, kicked, new_user_id(), old_code)
    # Exactly what a wrong code or a missing room gets: the room stays invisible.
    assert (refused.code(), refused.details()) == (missing.code(), missing.details())
    assert refused.code() == NOT_FOUND
    # Those who saw the code before see the new one; it works for the next invitee.
    new_code = await current_code(rooms, owner, room)
    assert new_code
    assert new_code != old_code
    assert await current_code(rooms, admin, room) == new_code
    joined = await rooms.join(newcomer, room, new_code)
    assert joined.member.user_id == newcomer.id
    check = rooms.stub.CheckMembership(
        pb.CheckMembershipRequest(room_id=room.id), metadata=kicked.md
    )
    assert await code_of(check) == NOT_FOUND


async def test_rejoins_racing_the_kick_do_not_keep_the_user_in(rooms: Rooms) -> None:
    """The kicked user hammers JoinRoom with the old code before, during and after the
    kick: whichever order the server runs them in, the user ends up out."""
    owner = rooms.user()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    for _ in range(RACE_ROUNDS):
        code = await current_code(rooms, owner, room)
        kicked = rooms.user()
        await rooms.join(kicked, room, code)
        kicking = asyncio.ensure_future(kick(rooms, owner, room, kicked))
        after_kick = 0
        # Until two rejoins have been answered after the kick returned.
        while after_kick < 2:
            done = kicking.done()
            await code_of(
                rooms.stub.JoinRoom(
                    pb.JoinRoomRequest(room_id=room.id, invite_code=code), metadata=kicked.md
                )
            )
            after_kick += done
        await kicking
        check = rooms.stub.CheckMembership(
            pb.CheckMembershipRequest(room_id=room.id), metadata=kicked.md
        )
        assert await code_of(check) == NOT_FOUND
    listed = await rooms.stub.ListMembers(pb.ListMembersRequest(room_id=room.id), metadata=owner.md)
    assert [m.user_id for m in listed.members] == [owner.id]
    fresh = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
    assert fresh.room.member_count == 1


async def test_a_join_undone_by_a_racing_rotation_publishes_the_removal(
    rooms: Rooms, events: EventSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exact interleaving: the join reads the room (old code), a kick rotates the
    code, then the join inserts the membership. JoinRoom undoes it, and says so with
    the kick's event: a gateway that asked rooms during the gap and cached "member"
    drops it, instead of letting the user read the room until the cache expires."""
    owner, kicked = rooms.user(), rooms.user()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    store = rooms.running.store
    insert = store.add_member
    in_the_gap: list[grpc.StatusCode] = []

    async def rotated_first(room_id: str, user_id: str, *args: Any, **kwargs: Any) -> Any:
        if user_id == kicked.id:
            await store.rotate_invite_code(room_id)  # the kick's rotation lands here
            inserted = await insert(room_id, user_id, *args, **kwargs)
            # A gateway asking now is told "member" (and caches it).
            check = pb.CheckMembershipRequest(room_id=room_id)
            in_the_gap.append(await code_of(rooms.stub.CheckMembership(check, metadata=kicked.md)))
            return inserted
        return await insert(room_id, user_id, *args, **kwargs)

    monkeypatch.setattr(store, "add_member", rotated_first)
    refused = await join_with(rooms, kicked, room.id, room.invite_code)
    assert refused.code() == NOT_FOUND
    assert in_the_gap == [grpc.StatusCode.OK]  # the gap the event must close was there

    removed = await events.wait_for_type("member_removed")
    assert removed["room_id"] == room.id
    assert removed["user_id"] == kicked.id
    assert [e for e in events.of_type("member_joined") if e["user_id"] == kicked.id] == []
    check = rooms.stub.CheckMembership(
        pb.CheckMembershipRequest(room_id=room.id), metadata=kicked.md
    )
    assert await code_of(check) == NOT_FOUND


ODD_CODES = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=MAX_INVITE_CODE_CHARS + 40),
    st.text(alphabet=st.characters(min_codepoint=0x80, codec="utf-8"), min_size=1, max_size=20),
    st.sampled_from(["ü" * 12, "ß", "é", "\u202e" * 12, "👩‍👩‍👧", "\x00", "a" * 5000]),
)


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Hypothesis keeps caches in ./.hypothesis; keep them out of the work tree."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    try:
        yield
    finally:
        set_hypothesis_home_dir(None)


@pytest.mark.usefixtures("hypothesis_home")
async def test_no_invite_code_tells_a_private_room_from_a_missing_one(rooms: Rooms) -> None:
    """Any code but the right one: a private room answers exactly as a missing room
    (NOT_FOUND), or INVALID_ARGUMENT for an over-long code, whatever the room."""
    owner, outsider = rooms.user(), rooms.user()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    loop = asyncio.get_running_loop()

    async def answers(code: str) -> tuple[tuple[grpc.StatusCode, str], tuple[grpc.StatusCode, str]]:
        private = await join_with(rooms, outsider, room.id, code)
        missing = await join_with(rooms, outsider, new_user_id(), code)
        return (private.code(), private.details()), (missing.code(), missing.details())

    @hypothesis_settings(
        max_examples=MAX_CODE_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(code=ODD_CODES)
    def property_holds(code: str) -> None:
        if code == room.invite_code:
            return
        private, missing = asyncio.run_coroutine_threadsafe(answers(code), loop).result(30)
        assert private == missing, code
        expected = INVALID if len(code) > MAX_INVITE_CODE_CHARS else NOT_FOUND
        assert private[0] == expected, (code, private)

    # Hypothesis drives the examples from a thread; the calls run on this loop.
    await asyncio.to_thread(property_holds)
