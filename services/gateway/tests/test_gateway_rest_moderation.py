"""The moderation rows of the REST contract, through the gateway to the REAL auth and
rooms processes: bans (403 ``banned`` on every rejoin), mutes until a time, slow mode
and retention through ``PATCH /v1/rooms/{id}``, and the audit log with its cursor."""

from __future__ import annotations

import datetime as dt

from test_gateway_rest_kit import Gateway, assert_error, bearer, new_id


def in_minutes(minutes: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).isoformat()


async def test_a_banned_user_cannot_join_again_until_unbanned(gw: Gateway) -> None:
    owner, bob = await gw.register(), await gw.register()
    room = await gw.create_room(owner["token"], visibility="private")
    base = f"/v1/rooms/{room['id']}"
    joined = await gw.client.post(
        f"{base}/join", json={"invite_code": room["invite_code"]}, headers=bearer(bob["token"])
    )
    assert joined.status_code == 200, joined.text

    banned = await gw.client.put(f"{base}/bans/{bob['id']}", headers=bearer(owner["token"]))
    assert banned.status_code == 200, banned.text
    assert banned.json()["ban"]["user_id"] == bob["id"]
    assert banned.json()["ban"]["actor_id"] == owner["id"]
    members = await gw.client.get(f"{base}/members", headers=bearer(owner["token"]))
    assert [m["user_id"] for m in members.json()["items"]] == [owner["id"]]
    fresh = (await gw.client.get(base, headers=bearer(owner["token"]))).json()["room"]
    assert fresh["invite_code"] != room["invite_code"]
    for code in (room["invite_code"], fresh["invite_code"]):
        again = await gw.client.post(
            f"{base}/join", json={"invite_code": code}, headers=bearer(bob["token"])
        )
        assert_error(again, 403, "banned")
    listed = await gw.client.get(f"{base}/bans", headers=bearer(owner["token"]))
    assert [b["user_id"] for b in listed.json()["items"]] == [bob["id"]]

    # bob cannot ban the owner back, nor can anyone ban through a malformed path.
    assert_error(
        await gw.client.put(f"{base}/bans/{owner['id']}", headers=bearer(bob["token"])), 404
    )
    assert_error(await gw.client.put(f"{base}/bans/not-an-id", headers=bearer(owner["token"])), 404)

    lifted = await gw.client.delete(f"{base}/bans/{bob['id']}", headers=bearer(owner["token"]))
    assert lifted.status_code == 204
    rejoined = await gw.client.post(
        f"{base}/join", json={"invite_code": fresh["invite_code"]}, headers=bearer(bob["token"])
    )
    assert rejoined.status_code == 200, rejoined.text


async def test_mutes_take_a_time_in_the_future(gw: Gateway) -> None:
    owner, carol = await gw.register(), await gw.register()
    room = await gw.create_room(owner["token"])
    base = f"/v1/rooms/{room['id']}"
    await gw.client.post(f"{base}/join", json={}, headers=bearer(carol["token"]))
    path = f"{base}/mutes/{carol['id']}"
    until = in_minutes(10)
    muted = await gw.client.put(path, json={"until": until}, headers=bearer(owner["token"]))
    assert muted.status_code == 200, muted.text
    got = dt.datetime.fromisoformat(muted.json()["mute"]["until"])
    assert abs((got - dt.datetime.fromisoformat(until)).total_seconds()) < 0.01

    for body in (
        {"until": in_minutes(-1)},  # past
        {"until": in_minutes(60 * 24 * 400)},  # beyond 366 days
        {"until": "tomorrow"},
        {"until": 1_900_000_000},
        {},
        {"until": until, "extra": 1},
    ):
        refused = await gw.client.put(path, json=body, headers=bearer(owner["token"]))
        assert_error(refused, 400)
    naive = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=5)
    refused = await gw.client.put(
        path, json={"until": naive.isoformat()}, headers=bearer(owner["token"])
    )
    assert_error(refused, 400)
    # A member cannot mute.
    assert_error(
        await gw.client.put(
            f"{base}/mutes/{owner['id']}", json={"until": until}, headers=bearer(carol["token"])
        ),
        403,
    )
    ended = await gw.client.delete(path, headers=bearer(owner["token"]))
    assert ended.status_code == 204


async def test_slow_mode_and_retention_are_patched_with_bounds(gw: Gateway) -> None:
    owner = await gw.register()
    room = await gw.create_room(owner["token"])
    assert (room["slow_mode_seconds"], room["retention_days"]) == (0, 0)
    base = f"/v1/rooms/{room['id']}"
    patched = await gw.client.patch(
        base, json={"slow_mode_seconds": 30, "retention_days": 7}, headers=bearer(owner["token"])
    )
    assert patched.status_code == 200, patched.text
    assert (
        patched.json()["room"]["slow_mode_seconds"],
        patched.json()["room"]["retention_days"],
    ) == (
        30,
        7,
    )
    for body in (
        {"slow_mode_seconds": -1},
        {"slow_mode_seconds": 21601},
        {"retention_days": 3651},
        {"retention_days": "7"},
        {"slow_mode_seconds": True},
        {"slow_mode_seconds": None},
    ):
        assert_error(await gw.client.patch(base, json=body, headers=bearer(owner["token"])), 400)
    got = (await gw.client.get(base, headers=bearer(owner["token"]))).json()["room"]
    assert (got["slow_mode_seconds"], got["retention_days"]) == (30, 7)


async def test_the_audit_log_pages_newest_first_for_managers_only(gw: Gateway) -> None:
    owner, member = await gw.register(), await gw.register()
    room = await gw.create_room(owner["token"])
    base = f"/v1/rooms/{room['id']}"
    await gw.client.post(f"{base}/join", json={}, headers=bearer(member["token"]))
    for topic in ("a", "b", "c"):
        await gw.client.patch(base, json={"topic": topic}, headers=bearer(owner["token"]))
    await gw.client.put(f"{base}/bans/{new_id()}", headers=bearer(owner["token"]))

    first = await gw.client.get(f"{base}/audit?limit=2", headers=bearer(owner["token"]))
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["action"] for e in page["items"]] == ["ban", "room_updated"]
    assert page["items"][1]["details"] == {"topic": "c"}
    assert page["items"][1]["actor_id"] == owner["id"]
    assert page["items"][1]["target_user_id"] is None
    second = await gw.client.get(
        f"{base}/audit", params={"cursor": page["next_cursor"]}, headers=bearer(owner["token"])
    )
    assert [e["details"].get("topic") for e in second.json()["items"]] == ["b", "a"]
    assert second.json()["next_cursor"] is None

    assert_error(await gw.client.get(f"{base}/audit", headers=bearer(member["token"])), 403)
    assert_error(
        await gw.client.get(f"{base}/audit?cursor=zz", headers=bearer(owner["token"])), 400
    )
    # No route edits or removes an entry.
    for method in ("DELETE", "PATCH", "PUT", "POST"):
        answer = await gw.client.request(method, f"{base}/audit", headers=bearer(owner["token"]))
        assert answer.status_code == 405
