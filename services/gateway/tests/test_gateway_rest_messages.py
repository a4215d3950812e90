"""``GET /v1/rooms/{id}/messages`` through the gateway, served by the REAL history
process (which consumes the CHAT stream and asks the real rooms about membership)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import nats
import orjson
from test_gateway_rest_kit import (
    Gateway,
    RestStack,
    assert_error,
    bearer,
    gateway_opener,
    stopped,
)

from roomcast.common.chatstream import StreamSettings, ensure_chat_stream
from roomcast.common.subjects import room_subject
from roomcast.testing.polling import eventually
from roomcast.testing.processes import free_port

IssueToken = Any


# The module's stack (conftest.py) runs history too.
REST_STACK_HISTORY = True


def record(room_id: str, user_id: str, content: str) -> bytes:
    """A chat record as a gateway publishes it on ``chat.room.<id>``."""
    return orjson.dumps(
        {
            "kind": "message",
            "room": room_id,
            "sender": {
                "id": user_id,
                "username": f"u{user_id[:6]}",
                "display_name": "Sender",
                "avatar_url": None,
            },
            "body": {"type": "text", "content": content},
            "sent_at": dt.datetime.now(dt.UTC).isoformat(),
            "client_id": uuid.uuid4().hex,
        }
    )


async def publish(stack: RestStack, room_id: str, user_id: str, count: int) -> list[int]:
    nc = await nats.connect(stack.nats.url)
    try:
        js = nc.jetstream()
        await ensure_chat_stream(js, StreamSettings(), update=False)
        seqs = []
        for i in range(count):
            ack = await js.publish(
                room_subject(room_id),
                record(room_id, user_id, f"m{i}"),
                headers={"Nats-Msg-Id": uuid.uuid4().hex},
            )
            seqs.append(int(ack.seq))
        return seqs
    finally:
        await nc.close()


async def test_history_pages_are_relayed(
    gw: Gateway, stack: RestStack, issue_token: IssueToken
) -> None:
    owner_id = uuid.uuid4().hex[:24]
    owner = issue_token(user_id=owner_id)
    room = await gw.create_room(owner, name="chatty")
    url = f"/v1/rooms/{room['id']}/messages"
    seqs = await publish(stack, room["id"], owner_id, 5)

    async def stored() -> bool:
        response = await gw.client.get(url, headers=bearer(owner))
        return response.status_code == 200 and len(response.json()["items"]) == 5

    await eventually(stored, within=30, what="history to store the 5 messages")

    newest = await gw.client.get(url, params={"limit": 2}, headers=bearer(owner))
    assert newest.status_code == 200, newest.text
    page = newest.json()
    assert [m["seq"] for m in page["items"]] == [seqs[4], seqs[3]]
    assert page["items"][0]["body"] == {"type": "text", "content": "m4"}
    assert page["items"][0]["room"] == room["id"]
    assert page["next_before"] == seqs[3]
    older = await gw.client.get(
        url, params={"limit": 10, "before": page["next_before"]}, headers=bearer(owner)
    )
    assert [m["seq"] for m in older.json()["items"]] == seqs[2::-1]
    assert older.json()["next_before"] is None

    # a public room the caller has not joined: history's 403; a stranger's token for a
    # private room: 404, exactly as for a room that does not exist
    assert_error(await gw.client.get(url, headers=bearer(issue_token())), 403)
    secret = await gw.create_room(owner, name="secret", visibility="private")
    hidden = await gw.client.get(
        f"/v1/rooms/{secret['id']}/messages", headers=bearer(issue_token())
    )
    assert_error(hidden, 404)

    # paging parameters are checked at the edge
    for params in ({"limit": 0}, {"limit": 101}, {"before": 0}, {"before": "x"}, {"limit": "1e3"}):
        assert_error(await gw.client.get(url, params=params, headers=bearer(owner)), 400)
    assert_error(await gw.client.get(url), 401, "missing_token")


async def test_history_down_is_503(stack: RestStack, issue_token: IssueToken) -> None:
    # A history replica of its own, so stopping it leaves the module's one alone.
    port = free_port()
    replica = stack.start_history_replica(port)
    async with gateway_opener(stack)(history_url=f"http://127.0.0.1:{port}") as gw:
        token = issue_token()
        room = await gw.create_room(token)
        url = f"/v1/rooms/{room['id']}/messages"
        ok = await gw.client.get(url, headers=bearer(token))
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"items": [], "next_before": None}
        stopped(replica)
        down = await gw.client.get(url, headers=bearer(token))
        assert_error(down, 503, "dependency_unavailable")
        assert "history" in down.json()["error"]["message"]


async def test_thread_pages_are_relayed(
    gw: Gateway, stack: RestStack, issue_token: IssueToken
) -> None:
    owner_id = uuid.uuid4().hex[:24]
    owner = issue_token(user_id=owner_id)
    room = await gw.create_room(owner, name="threads")
    [parent] = await publish(stack, room["id"], owner_id, 1)
    nc = await nats.connect(stack.nats.url)
    try:
        js = nc.jetstream()
        replies = []
        for i in range(3):
            raw = orjson.loads(record(room["id"], owner_id, f"r{i}"))
            raw["reply_to"] = parent
            ack = await js.publish(
                room_subject(room["id"]),
                orjson.dumps(raw),
                headers={"Nats-Msg-Id": uuid.uuid4().hex},
            )
            replies.append(int(ack.seq))
    finally:
        await nc.close()
    url = f"/v1/rooms/{room['id']}/messages/{parent}/replies"

    async def stored() -> bool:
        response = await gw.client.get(url, headers=bearer(owner))
        return response.status_code == 200 and len(response.json()["items"]) == 3

    await eventually(stored, within=30, what="history to store the 3 replies")
    page = (await gw.client.get(url, params={"limit": 2}, headers=bearer(owner))).json()
    assert [m["seq"] for m in page["items"]] == [replies[2], replies[1]]
    assert all(m["reply_to"] == parent for m in page["items"])
    assert page["next_before"] == replies[1]
    older = await gw.client.get(url, params={"before": page["next_before"]}, headers=bearer(owner))
    assert [m["seq"] for m in older.json()["items"]] == [replies[0]]

    # the parent is in the room's history with its reply count
    listed = (await gw.client.get(f"/v1/rooms/{room['id']}/messages", headers=bearer(owner))).json()
    assert {m["seq"]: m.get("reply_count") for m in listed["items"]}[parent] == 3

    # a seq that is not a message of this room: history's 404; bad input at the edge
    missing = f"/v1/rooms/{room['id']}/messages/{replies[2] + 1000}/replies"
    assert_error(await gw.client.get(missing, headers=bearer(owner)), 404)
    bad = f"/v1/rooms/{room['id']}/messages/0/replies"
    assert_error(await gw.client.get(bad, headers=bearer(owner)), 400)
    assert_error(await gw.client.get(url, params={"limit": 0}, headers=bearer(owner)), 400)
    assert_error(await gw.client.get(url, headers=bearer(issue_token())), 403)
    assert_error(await gw.client.get(url), 401, "missing_token")
