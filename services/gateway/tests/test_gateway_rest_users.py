"""Finding people through the gateway, against the REAL auth and rooms processes:
members listings carry usernames and display names, and GET /v1/users?username= finds
a user by exact name (public profile only)."""

from __future__ import annotations

from test_gateway_rest_kit import (
    Gateway,
    RestStack,
    assert_error,
    bearer,
    gateway_opener,
    stopped,
)

from roomcast.testing.processes import MongoServer


async def test_members_listing_names_every_member(gw: Gateway) -> None:
    owner = await gw.register(display_name="Olive Owner")
    guests = [await gw.register() for _ in range(3)]
    room = await gw.create_room(owner["token"], name="named")
    for guest in guests:
        joined = await gw.client.post(
            f"/v1/rooms/{room['id']}/join", headers=bearer(guest["token"])
        )
        assert joined.status_code == 200, joined.text
    seen: list[dict[str, object]] = []
    cursor = None
    while True:  # two pages: names on every page, not only the first
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await gw.client.get(
            f"/v1/rooms/{room['id']}/members", params=params, headers=bearer(guests[0]["token"])
        )
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    expected = {
        u["id"]: (u["user"]["username"], u["user"]["display_name"]) for u in [owner, *guests]
    }
    assert {m["user_id"]: (m["username"], m["display_name"]) for m in seen} == expected
    assert expected[owner["id"]][1] == "Olive Owner"
    assert all(set(m) == {"user_id", "role", "joined_at", "username", "display_name"} for m in seen)


async def test_find_user_by_exact_username(gw: Gateway) -> None:
    me = await gw.register()
    other = await gw.register(email="someone@example.com")
    name = other["user"]["username"]
    found = await gw.client.get(
        "/v1/users", params={"username": name.upper()}, headers=bearer(me["token"])
    )
    assert found.status_code == 200, found.text
    user = found.json()["user"]
    assert user["id"] == other["id"]
    assert user["username"] == name
    assert "email" not in user
    missing = await gw.client.get(
        "/v1/users", params={"username": name[:-1]}, headers=bearer(me["token"])
    )
    assert_error(missing, 404, "user_not_found")
    for params in ({"username": "a b"}, {"username": "x"}, {}):
        bad = await gw.client.get("/v1/users", params=params, headers=bearer(me["token"]))
        assert_error(bad, 400, "invalid_request")
    anonymous = await gw.client.get("/v1/users", params={"username": name})
    assert_error(anonymous, 401, "missing_token")


async def test_members_listing_with_auth_down_answers_with_cached_or_null_names(
    mongo_server: MongoServer, signing_key_pem: bytes
) -> None:
    private = RestStack(mongo_server.url, signing_key_pem).start()
    try:
        async with gateway_opener(private)() as gw:
            owner, early, late = [await gw.register() for _ in range(3)]
            room = await gw.create_room(owner["token"], name="resilient")
            path = f"/v1/rooms/{room['id']}/members"
            await gw.client.post(f"/v1/rooms/{room['id']}/join", headers=bearer(early["token"]))
            named = await gw.client.get(path, headers=bearer(owner["token"]))
            assert {m["username"] for m in named.json()["items"]} == {
                owner["user"]["username"],
                early["user"]["username"],
            }
            await gw.client.post(f"/v1/rooms/{room['id']}/join", headers=bearer(late["token"]))
            stopped(private.auth)
            # Names seen a moment ago are reused; the newcomer cannot be named, and the
            # listing still answers.
            listing = await gw.client.get(path, headers=bearer(owner["token"]))
            assert listing.status_code == 200, listing.text
            names = {m["user_id"]: m["username"] for m in listing.json()["items"]}
            assert names == {
                owner["id"]: owner["user"]["username"],
                early["id"]: early["user"]["username"],
                late["id"]: None,
            }
            lookup = await gw.client.get(
                "/v1/users", params={"username": "someone"}, headers=bearer(owner["token"])
            )
            assert_error(lookup, 503, "dependency_unavailable")
    finally:
        private.stop()
