"""The joined-rooms view carries the caller's unread notification count from the
notifier, and still lists the rooms when the notifier cannot answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import AsyncMongoClient
from test_gateway_rest_kit import Gateway, RestStack, bearer, gateway_opener

# The module's stack (conftest.py) runs the notifier too.
REST_STACK_NOTIFIER = True


def notification(user: str, room: str, seq: int) -> dict[str, Any]:
    """A notification as the notifier's consumer stores it."""
    return {
        "_id": f"{seq}:{user}",
        "user": user,
        "kind": "mention",
        "room": room,
        "seq": seq,
        "sender": {"id": "0" * 24, "username": "someone"},
        "preview": f"hello {seq}",
        "sent_at": dt.datetime.now(dt.UTC).isoformat(),
        "private": False,
        "push": "none",
        "created_at": dt.datetime.now(dt.UTC),
    }


async def joined(gw: Gateway, token: str) -> dict[str, Any]:
    response = await gw.client.get("/v1/rooms", params={"scope": "joined"}, headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_joined_rooms_carry_the_unread_notification_count(
    gw: Gateway, stack: RestStack
) -> None:
    user = await gw.register()
    room = await gw.create_room(user["token"], name="count")
    assert (await joined(gw, user["token"]))["unread_notifications"] == 0

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
    try:
        await client[stack.databases[3]]["notifications"].insert_many(
            [notification(user["id"], room["id"], seq) for seq in (5, 6, 7)]
        )
    finally:
        await client.close()
    body = await joined(gw, user["token"])
    assert body["unread_notifications"] == 3
    assert [item["id"] for item in body["items"]] == [room["id"]]

    read = await gw.client.post(
        "/v1/notifications/read", json={"up_to": 6}, headers=bearer(user["token"])
    )
    assert read.status_code == 200, read.text
    assert (await joined(gw, user["token"]))["unread_notifications"] == 1

    # the public listing has no such field
    public = await gw.client.get("/v1/rooms", headers=bearer(user["token"]))
    assert "unread_notifications" not in public.json()

    # a notifier that cannot answer nulls the count; the rooms are still listed
    async with gateway_opener(stack)(notifier_url="http://127.0.0.1:9") as down:
        body = await joined(down, user["token"])
        assert body["unread_notifications"] is None
        assert [item["id"] for item in body["items"]] == [room["id"]]
