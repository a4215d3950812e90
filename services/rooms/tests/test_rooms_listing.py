"""ListRooms and ListMembers: scopes, name prefixes, limits and cursor pagination."""

from __future__ import annotations

import grpc
import pytest
from rooms_harness import Rooms, User, code_of

from roomcast.rooms.validation import JOINED_ROOMS, MEMBERS, PUBLIC_ROOMS, encode_cursor
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb


async def page_through(rooms: Rooms, user: User, **fields: object) -> tuple[list[pb.Room], int]:
    seen: list[pb.Room] = []
    cursor = ""
    pages = 0
    while True:
        resp = await rooms.stub.ListRooms(
            pb.ListRoomsRequest(cursor=cursor, **fields),  # type: ignore[arg-type]
            metadata=user.md,
        )
        pages += 1
        seen.extend(resp.rooms)
        if not resp.next_cursor:
            return seen, pages
        cursor = resp.next_cursor


async def test_public_scope_lists_public_rooms_in_pages(rooms: Rooms) -> None:
    owner, viewer = rooms.user(), rooms.user()
    public = [await rooms.create(owner, name=f"pub {i}") for i in range(7)]
    await rooms.create(owner, name="hidden", visibility=pb.VISIBILITY_PRIVATE)
    await rooms.stub.OpenDirectRoom(pb.OpenDirectRoomRequest(user_id=viewer.id), metadata=owner.md)
    await rooms.join(viewer, public[2])
    seen, pages = await page_through(rooms, viewer, scope=pb.LIST_SCOPE_PUBLIC, limit=3)
    assert [r.id for r in seen] == [r.id for r in public]
    assert pages == 3
    roles = {r.id: r.my_role for r in seen}
    assert roles[public[2].id] == pb.ROLE_MEMBER
    assert roles[public[0].id] == pb.ROLE_UNSPECIFIED
    assert {r.id: r.member_count for r in seen}[public[2].id] == 2
    assert all(r.invite_code == "" for r in seen)
    # The owner sees their codes in listings too.
    mine, _ = await page_through(rooms, owner, scope=pb.LIST_SCOPE_PUBLIC)
    assert all(r.invite_code for r in mine)
    # Unspecified scope means public.
    default, _ = await page_through(rooms, viewer)
    assert [r.id for r in default] == [r.id for r in public]


async def test_pagination_is_stable_under_inserts(rooms: Rooms) -> None:
    owner = rooms.user()
    first = [await rooms.create(owner, name=f"r{i}") for i in range(4)]
    page = await rooms.stub.ListRooms(pb.ListRoomsRequest(limit=2), metadata=owner.md)
    assert [r.id for r in page.rooms] == [r.id for r in first[:2]]
    later = [await rooms.create(owner, name=f"late{i}") for i in range(2)]
    rest, _ = await page_through(rooms, owner)
    rest_after = await rooms.stub.ListRooms(
        pb.ListRoomsRequest(limit=100, cursor=page.next_cursor), metadata=owner.md
    )
    assert [r.id for r in rest_after.rooms] == [r.id for r in first[2:] + later]
    assert len(rest) == 6


async def test_joined_scope_lists_every_visibility_of_the_caller(rooms: Rooms) -> None:
    owner, user = rooms.user(), rooms.user()
    a = await rooms.create(owner, name="alpha")
    b = await rooms.create(owner, name="beta", visibility=pb.VISIBILITY_PRIVATE)
    await rooms.create(owner, name="gamma")  # not joined
    await rooms.join(user, a)
    await rooms.join(user, b)
    dm = await rooms.stub.OpenDirectRoom(
        pb.OpenDirectRoomRequest(user_id=owner.id), metadata=user.md
    )
    mine = await rooms.create(user, name="mine", visibility=pb.VISIBILITY_PRIVATE)
    seen, pages = await page_through(rooms, user, scope=pb.LIST_SCOPE_JOINED, limit=2)
    assert sorted(r.id for r in seen) == sorted([a.id, b.id, dm.room.id, mine.id])
    assert [r.id for r in seen] == sorted(r.id for r in seen)  # room id order
    assert pages == 2
    by_id = {r.id: r for r in seen}
    assert by_id[mine.id].my_role == pb.ROLE_OWNER
    assert by_id[mine.id].invite_code == mine.invite_code
    assert by_id[b.id].my_role == pb.ROLE_MEMBER
    assert by_id[dm.room.id].visibility == pb.VISIBILITY_DIRECT
    assert sorted(by_id[dm.room.id].direct_user_ids) == sorted([owner.id, user.id])


@pytest.mark.parametrize("scope", [pb.LIST_SCOPE_PUBLIC, pb.LIST_SCOPE_JOINED])
async def test_name_prefix_is_literal_and_case_insensitive(rooms: Rooms, scope: int) -> None:
    owner = rooms.user()
    names = ["Dev talk", "dev.ops", "devops", "Design", "a.b", "a+b", "ab", "Ünïcode", "(x)"]
    made = {n: await rooms.create(owner, name=n) for n in names}

    async def names_for(prefix: str) -> list[str]:
        seen, _ = await page_through(rooms, owner, scope=scope, name_prefix=prefix, limit=2)
        return sorted(r.name for r in seen)

    assert await names_for("DEV") == sorted(["Dev talk", "dev.ops", "devops"])
    assert await names_for("dev.") == ["dev.ops"]  # "." is not a wildcard
    assert await names_for("a.") == ["a.b"]
    assert await names_for("a+") == ["a+b"]
    assert await names_for(".*") == []
    assert await names_for("(") == ["(x)"]
    assert await names_for("ünï") == ["Ünïcode"]
    assert await names_for("") == sorted(names)
    assert set(made) == set(names)


async def test_limits_default_and_cap(rooms: Rooms) -> None:
    owner = rooms.user()
    for i in range(3):
        await rooms.create(owner, name=f"r{i}")
    resp = await rooms.stub.ListRooms(pb.ListRoomsRequest(limit=0), metadata=owner.md)
    assert len(resp.rooms) == 3
    assert resp.next_cursor == ""
    big = await rooms.stub.ListRooms(pb.ListRoomsRequest(limit=10_000), metadata=owner.md)
    assert len(big.rooms) == 3
    assert (
        await code_of(rooms.stub.ListRooms(pb.ListRoomsRequest(limit=-1), metadata=owner.md))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_cursors_are_checked(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner)
    some_id = "a" * 24
    bad = [
        "garbage!!",
        "x" * 65,
        "%%%",
        encode_cursor(JOINED_ROOMS, some_id),  # another listing's cursor
        encode_cursor(MEMBERS, some_id),
        encode_cursor(PUBLIC_ROOMS, some_id)[:-3],  # truncated
        "é",
    ]
    for cursor in bad:
        call = rooms.stub.ListRooms(pb.ListRoomsRequest(cursor=cursor), metadata=owner.md)
        assert await code_of(call) == grpc.StatusCode.INVALID_ARGUMENT, cursor
    call = rooms.stub.ListMembers(
        pb.ListMembersRequest(room_id=room.id, cursor=encode_cursor(PUBLIC_ROOMS, some_id)),
        metadata=owner.md,
    )
    assert await code_of(call) == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_members_pages_through_everyone(rooms: Rooms) -> None:
    owner = rooms.user()
    room = await rooms.create(owner)
    users = [rooms.user() for _ in range(6)]
    for u in users:
        await rooms.join(u, room)
    seen: list[pb.Member] = []
    cursor = ""
    while True:
        resp = await rooms.stub.ListMembers(
            pb.ListMembersRequest(room_id=room.id, limit=4, cursor=cursor), metadata=users[0].md
        )
        seen.extend(resp.members)
        if not resp.next_cursor:
            break
        cursor = resp.next_cursor
    assert sorted(m.user_id for m in seen) == sorted([owner.id, *(u.id for u in users)])
    assert len(seen) == 7
    roles = {m.user_id: m.role for m in seen}
    assert roles[owner.id] == pb.ROLE_OWNER
    assert all(m.joined_at_ms > 0 for m in seen)


async def test_joined_scan_limit_returns_short_pages_with_a_cursor(
    rooms: Rooms, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roomcast.rooms import listing

    monkeypatch.setattr(listing, "JOINED_BATCH", 2)
    monkeypatch.setattr(listing, "JOINED_SCAN_LIMIT", 3)
    owner = rooms.user()
    made = [await rooms.create(owner, name=f"room {i}") for i in range(7)]
    needle = await rooms.create(owner, name="needle")
    seen, pages = await page_through(rooms, owner, scope=pb.LIST_SCOPE_JOINED, name_prefix="nee")
    assert [r.id for r in seen] == [needle.id]
    assert pages == 3  # 3 + 3 rooms scanned with nothing found, then the rest
    everything, _ = await page_through(rooms, owner, scope=pb.LIST_SCOPE_JOINED, limit=3)
    assert [r.id for r in everything] == [r.id for r in [*made, needle]]
