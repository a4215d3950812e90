"""RoomView, the merge rules of presence (pure logic): a user is online while any gateway
reports them; reports carry the reporter's sequence and the newest wins per (gateway,
user), whatever order deltas and snapshots arrive in."""

from __future__ import annotations

import orjson

from roomcast.gateway.ephemeral.presence_view import MAX_LISTED, Change, RoomView, UserInfo

ROOM = "a" * 24


def user(n: int) -> UserInfo:
    return UserInfo(f"{n:024x}", f"user{n}", f"User {n}")


def test_online_while_any_gateway_reports_the_user() -> None:
    view = RoomView(ROOM)
    u = user(1)
    assert view.set("g1", u, True, 1, 0.0) == Change(u, True)
    assert view.set("g2", u, True, 1, 0.0) is None  # second gateway: no event
    assert view.set("g1", u, False, 2, 0.0) is None  # still on g2
    assert view.set("g2", u, False, 2, 0.0) == Change(u, False)
    assert view.online == {}


def test_older_reports_are_ignored() -> None:
    view = RoomView(ROOM)
    u = user(1)
    view.set("g1", u, True, 5, 0.0)
    assert view.set("g1", u, False, 4, 0.0) is None  # a late delta
    assert u.id in view.online
    # a snapshot composed before the newest delta cannot undo it
    view.set("g1", u, False, 7, 0.0)
    assert view.snapshot("g1", 6, [u], 0.0) == []
    assert u.id not in view.online


def test_snapshot_replaces_what_a_gateway_reported() -> None:
    view = RoomView(ROOM)
    a, b, c = user(1), user(2), user(3)
    view.set("g1", a, True, 1, 0.0)
    view.set("g1", b, True, 2, 0.0)
    changes = view.snapshot("g1", 10, [b, c], 0.0)
    assert set(changes) == {Change(a, False), Change(c, True)}
    assert set(view.online) == {b.id, c.id}
    # a delta newer than the snapshot survives a late copy of it
    view.set("g1", b, False, 11, 0.0)
    assert view.snapshot("g1", 10, [b, c], 0.0) == []
    assert set(view.online) == {c.id}


def test_a_dead_gateway_takes_only_its_own_users() -> None:
    view = RoomView(ROOM)
    a, b = user(1), user(2)
    view.set("g1", a, True, 1, 0.0)
    view.set("g2", a, True, 1, 0.0)
    view.set("g2", b, True, 2, 0.0)
    assert view.remove_gateway("g2") == [Change(b, False)]
    assert set(view.online) == {a.id}
    assert view.remove_gateway("g2") == []


def test_tombstones_are_swept_after_a_while() -> None:
    view = RoomView(ROOM)
    u = user(1)
    view.set("g1", u, True, 1, 0.0)
    view.set("g1", u, False, 2, 5.0)
    assert view.tombstones == 1
    view.sweep(older_than=4.0)
    assert view.tombstones == 1  # too recent
    view.sweep(older_than=6.0)
    assert view.tombstones == 0
    assert view.gateways() == []


def test_answer_is_sorted_encoded_once_and_capped() -> None:
    view = RoomView(ROOM)
    for n in (3, 1, 2):
        view.set("g1", user(n), True, n, 0.0)
    answer = view.answer()
    assert view.answer() is answer  # cached until the next change
    decoded = orjson.loads(answer)
    assert decoded["type"] == "presence"
    assert decoded["room"] == ROOM
    assert [u["id"] for u in decoded["online"]] == [user(n).id for n in (1, 2, 3)]
    assert decoded["online"][0] == {"id": user(1).id, "username": "user1", "display_name": "User 1"}
    assert decoded["count"] == 3
    view.set("g1", user(4), True, 4, 0.0)
    assert view.answer() is not answer
    for n in range(10, 10 + MAX_LISTED):
        view.set("g1", user(n), True, n, 0.0)
    big = orjson.loads(view.answer())
    assert len(big["online"]) == MAX_LISTED
    assert big["count"] == MAX_LISTED + 4
    assert big["truncated"] is True


def test_a_profile_change_refreshes_the_answer() -> None:
    view = RoomView(ROOM)
    u = user(1)
    view.set("g1", u, True, 1, 0.0)
    renamed = UserInfo(u.id, u.username, "New Name")
    assert view.set("g2", renamed, True, 1, 0.0) is None
    assert orjson.loads(view.answer())["online"][0]["display_name"] == "New Name"
