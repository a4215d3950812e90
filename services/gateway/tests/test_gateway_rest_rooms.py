"""The room rows of the REST contract through the gateway, against the REAL auth and
rooms processes: the whole lifecycle, listing and pagination, direct rooms, and the
mapping of rooms' refusals to HTTP statuses."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from test_gateway_rest_kit import (
    Gateway,
    assert_error,
    bearer,
    new_id,
)

IssueToken = Any
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


def assert_room_shape(room: dict[str, Any]) -> None:
    assert set(room) == {
        "id",
        "name",
        "topic",
        "visibility",
        "owner_id",
        "member_count",
        "created_at",
        "updated_at",
        "my_role",
        "invite_code",
        "direct_user_ids",
        "slow_mode_seconds",
        "retention_days",
    }, room
    assert OBJECT_ID.match(room["id"])
    created = dt.datetime.fromisoformat(room["created_at"])
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 300


async def test_room_lifecycle(gw: Gateway) -> None:
    c = gw.client
    alice, bob, carol = [await gw.register() for _ in range(3)]

    # create: 201, the creator is the owner and sees the invite code
    lobby = await gw.create_room(alice["token"], name="Lobby", topic="hello")
    assert_room_shape(lobby)
    assert lobby["name"] == "Lobby"
    assert lobby["topic"] == "hello"
    assert lobby["visibility"] == "public"
    assert lobby["owner_id"] == alice["id"]
    assert lobby["member_count"] == 1
    assert lobby["my_role"] == "owner"
    assert isinstance(lobby["invite_code"], str)
    assert lobby["direct_user_ids"] is None
    room_url = f"/v1/rooms/{lobby['id']}"

    # get, as an outsider of a public room: no role, no invite code
    seen = (await c.get(room_url, headers=bearer(bob["token"]))).json()["room"]
    assert seen["id"] == lobby["id"]
    assert seen["my_role"] is None
    assert seen["invite_code"] is None

    # patch: owner yes, outsider 403
    patched = await c.patch(
        room_url, json={"name": "Lobby 2", "topic": "new"}, headers=bearer(alice["token"])
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["room"]["name"] == "Lobby 2"
    assert patched.json()["room"]["topic"] == "new"
    denied = await c.patch(room_url, json={"topic": "x"}, headers=bearer(bob["token"]))
    assert_error(denied, 403, "insufficient_role")

    # join a public room: 200 {room, member}; joining again is idempotent
    for _ in range(2):
        joined = await c.post(f"{room_url}/join", json={}, headers=bearer(bob["token"]))
        assert joined.status_code == 200, joined.text
        assert joined.json()["member"]["user_id"] == bob["id"]
        assert joined.json()["member"]["role"] == "member"
        assert joined.json()["room"]["member_count"] == 2
    # no body at all is fine too
    carol_join = await c.post(f"{room_url}/join", headers=bearer(carol["token"]))
    assert carol_join.status_code == 200, carol_join.text

    # members, paginated by user id
    first = await c.get(f"{room_url}/members?limit=2", headers=bearer(bob["token"]))
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["items"]) == 2
    assert page["next_cursor"]
    rest = await c.get(
        f"{room_url}/members",
        params={"limit": 2, "cursor": page["next_cursor"]},
        headers=bearer(bob["token"]),
    )
    everyone = page["items"] + rest.json()["items"]
    assert rest.json()["next_cursor"] is None
    assert sorted(m["user_id"] for m in everyone) == sorted([alice["id"], bob["id"], carol["id"]])
    assert {m["user_id"]: m["role"] for m in everyone}[alice["id"]] == "owner"
    assert all(dt.datetime.fromisoformat(m["joined_at"]) for m in everyone)

    # role change: the owner makes bob an admin; bob now sees the invite code
    promoted = await c.put(
        f"{room_url}/members/{bob['id']}", json={"role": "admin"}, headers=bearer(alice["token"])
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {
        "member": {
            "user_id": bob["id"],
            "role": "admin",
            "joined_at": promoted.json()["member"]["joined_at"],
        }
    }
    as_admin = (await c.get(room_url, headers=bearer(bob["token"]))).json()["room"]
    assert as_admin["my_role"] == "admin"
    assert as_admin["invite_code"] == lobby["invite_code"]
    # a member cannot change roles; an admin cannot touch the owner
    assert_error(
        await c.put(
            f"{room_url}/members/{bob['id']}",
            json={"role": "member"},
            headers=bearer(carol["token"]),
        ),
        403,
        "insufficient_role",
    )
    assert_error(
        await c.delete(f"{room_url}/members/{alice['id']}", headers=bearer(bob["token"])),
        403,
        "insufficient_role",
    )

    # kick: the admin removes carol (204, empty body); she is gone from the list
    kicked = await c.delete(f"{room_url}/members/{carol['id']}", headers=bearer(bob["token"]))
    assert kicked.status_code == 204
    assert kicked.content == b""
    members = (await c.get(f"{room_url}/members", headers=bearer(bob["token"]))).json()
    assert carol["id"] not in [m["user_id"] for m in members["items"]]
    # kicking someone who is not a member: 404
    assert_error(
        await c.delete(f"{room_url}/members/{new_id()}", headers=bearer(alice["token"])),
        404,
        "member_not_found",
    )

    # leave: bob 204; the owner must hand ownership over first: 409
    left = await c.post(f"{room_url}/leave", json={}, headers=bearer(bob["token"]))
    assert left.status_code == 204
    assert left.content == b""
    assert_error(
        await c.post(f"{room_url}/leave", headers=bearer(alice["token"])),
        409,
        "owner_must_transfer",
    )

    # delete: only the owner (bob, no longer a member, is refused), then 404
    assert_error(await c.delete(room_url, headers=bearer(bob["token"])), 403, "insufficient_role")
    deleted = await c.delete(room_url, headers=bearer(alice["token"]))
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(await c.get(room_url, headers=bearer(alice["token"])), 404, "room_not_found")
    assert_error(await c.delete(room_url, headers=bearer(alice["token"])), 404, "room_not_found")


async def test_private_room_invite_codes(gw: Gateway, issue_token: IssueToken) -> None:
    c = gw.client
    owner, member, outsider = issue_token(), issue_token(), issue_token()
    room = await gw.create_room(owner, name="Secret", visibility="private")
    assert room["visibility"] == "private"
    url = f"/v1/rooms/{room['id']}"

    # outsiders cannot tell it from a missing room
    missing = await c.get(f"/v1/rooms/{new_id()}", headers=bearer(outsider))
    hidden = await c.get(url, headers=bearer(outsider))
    assert_error(hidden, 404, "room_not_found")
    assert hidden.json() == missing.json()
    # join without a code or with a wrong one: 404 as well
    assert_error(await c.post(f"{url}/join", headers=bearer(outsider)), 404, "room_not_found")
    wrong = await c.post(f"{url}/join", json={"invite_code": "nope"}, headers=bearer(outsider))
    assert_error(wrong, 404, "room_not_found")
    # with the code: in
    ok = await c.post(
        f"{url}/join", json={"invite_code": room["invite_code"]}, headers=bearer(member)
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["room"]["my_role"] == "member"
    assert ok.json()["room"]["invite_code"] is None  # members do not see it

    # rotation: owner only; the old code stops working at once
    assert_error(
        await c.post(f"{url}/invite-code", headers=bearer(member)), 403, "insufficient_role"
    )
    rotated = await c.post(f"{url}/invite-code", headers=bearer(owner))
    assert rotated.status_code == 200, rotated.text
    new_code = rotated.json()["invite_code"]
    assert isinstance(new_code, str)
    assert new_code != room["invite_code"]
    old = await c.post(
        f"{url}/join", json={"invite_code": room["invite_code"]}, headers=bearer(outsider)
    )
    assert_error(old, 404, "room_not_found")
    new = await c.post(f"{url}/join", json={"invite_code": new_code}, headers=bearer(outsider))
    assert new.status_code == 200, new.text

    # visibility change through PATCH
    public = await c.patch(url, json={"visibility": "public"}, headers=bearer(owner))
    assert public.json()["room"]["visibility"] == "public"
    # delete: a member may not (403); an outsider of a private room sees nothing (404)
    await c.patch(url, json={"visibility": "private"}, headers=bearer(owner))
    assert_error(await c.delete(url, headers=bearer(member)), 403, "insufficient_role")
    assert_error(await c.delete(url, headers=bearer(issue_token())), 404, "room_not_found")
    assert (await c.delete(url, headers=bearer(owner))).status_code == 204


async def test_listing_scopes_prefix_and_pagination(gw: Gateway, issue_token: IssueToken) -> None:
    c = gw.client
    user, other = issue_token(), issue_token()
    prefix = f"pfx{uuid.uuid4().hex[:10]}"
    created = [await gw.create_room(user, name=f"{prefix}-{i}") for i in range(3)]
    secret = await gw.create_room(user, name=f"{prefix}-secret", visibility="private")

    # public scope (the default), by name prefix, two per page
    first = await c.get("/v1/rooms", params={"q": prefix, "limit": 2}, headers=bearer(other))
    assert first.status_code == 200, first.text
    page1 = first.json()
    assert len(page1["items"]) == 2
    assert page1["next_cursor"]
    second = await c.get(
        "/v1/rooms",
        params={"q": prefix.upper(), "limit": 2, "cursor": page1["next_cursor"]},
        headers=bearer(other),
    )
    page2 = second.json()
    assert page2["next_cursor"] is None
    listed = [r["id"] for r in page1["items"] + page2["items"]]
    assert sorted(listed) == sorted(r["id"] for r in created)  # the private one is not there
    assert all(r["my_role"] is None for r in page1["items"])

    # joined scope: every room of the caller, private included, with the caller's role
    joined = await c.get("/v1/rooms", params={"scope": "joined", "q": prefix}, headers=bearer(user))
    items = joined.json()["items"]
    assert sorted(r["id"] for r in items) == sorted([*listed, secret["id"]])
    assert {r["my_role"] for r in items} == {"owner"}
    nothing = await c.get("/v1/rooms", params={"scope": "joined"}, headers=bearer(other))
    # no notifier in this module's stack: the count is null, the listing still answers
    assert nothing.json() == {"items": [], "next_cursor": None, "unread_notifications": None}

    # bad query parameters: 400, never a 500
    for params in (
        {"scope": "everything"},
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"cursor": "x" * 65},
        {"q": "q" * 65},
    ):
        assert_error(await c.get("/v1/rooms", params=params, headers=bearer(user)), 400)
    # a cursor rooms cannot decode: rooms' INVALID_ARGUMENT, mapped to 400
    garbage = await c.get("/v1/rooms", params={"cursor": "garbage!"}, headers=bearer(user))
    assert_error(garbage, 400, "invalid_request")
    assert "cursor" in garbage.json()["error"]["message"]
    member_cursor = await c.get(
        f"/v1/rooms/{created[0]['id']}/members",
        params={"cursor": page1["next_cursor"]},  # a room-list cursor is not a members cursor
        headers=bearer(user),
    )
    assert_error(member_cursor, 400, "invalid_request")


async def test_direct_rooms_are_the_same_room_every_time(gw: Gateway) -> None:
    c = gw.client
    alice, bob, carol = [await gw.register() for _ in range(3)]

    first = await c.post("/v1/dms", json={"user_id": bob["id"]}, headers=bearer(alice["token"]))
    assert first.status_code == 201, first.text
    room = first.json()["room"]
    assert_room_shape(room)
    assert room["visibility"] == "direct"
    assert room["owner_id"] is None
    assert sorted(room["direct_user_ids"]) == sorted([alice["id"], bob["id"]])
    assert room["my_role"] == "member"
    assert room["invite_code"] is None

    again = await c.post("/v1/dms", json={"user_id": bob["id"]}, headers=bearer(alice["token"]))
    assert again.status_code == 200
    assert again.json()["room"]["id"] == room["id"]
    other_side = await c.post(
        "/v1/dms", json={"user_id": alice["id"]}, headers=bearer(bob["token"])
    )
    assert other_side.status_code == 200
    assert other_side.json()["room"]["id"] == room["id"]

    # nobody else can see, join, or reshape it
    url = f"/v1/rooms/{room['id']}"
    assert_error(await c.get(url, headers=bearer(carol["token"])), 404, "room_not_found")
    assert_error(await c.post(f"{url}/join", headers=bearer(carol["token"])), 404)
    assert_error(
        await c.post(f"{url}/leave", headers=bearer(alice["token"])), 409, "direct_room_fixed"
    )
    assert_error(
        await c.patch(url, json={"name": "x"}, headers=bearer(alice["token"])),
        409,
        "direct_room_fixed",
    )

    # a user auth does not know: 404; yourself or a malformed id: 400
    unknown = await c.post("/v1/dms", json={"user_id": new_id()}, headers=bearer(alice["token"]))
    assert_error(unknown, 404, "user_not_found")
    me = await c.post("/v1/dms", json={"user_id": alice["id"]}, headers=bearer(alice["token"]))
    assert_error(me, 400, "invalid_request")
    for bad in ("bob", alice["id"].upper(), 12, None, {"$ne": None}, [alice["id"]]):
        response = await c.post("/v1/dms", json={"user_id": bad}, headers=bearer(alice["token"]))
        assert_error(response, 400, "invalid_request")


async def test_room_creation_rate_limit_is_429_with_retry_after(
    gw: Gateway, issue_token: IssueToken
) -> None:
    token = issue_token()
    statuses = []
    # rooms allows 30 creations per user per minute (its default bucket).
    for i in range(31):
        response = await gw.client.post(
            "/v1/rooms", json={"name": f"r{i}", "visibility": "public"}, headers=bearer(token)
        )
        statuses.append(response.status_code)
    assert statuses[:30] == [201] * 30
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    # another user is not affected
    other = await gw.client.post(
        "/v1/rooms", json={"name": "ok", "visibility": "public"}, headers=bearer(issue_token())
    )
    assert other.status_code == 201
