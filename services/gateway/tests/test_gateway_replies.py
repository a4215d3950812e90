"""Replies over the WebSocket: ``send`` with ``reply_to`` against two real gateway
processes sharing a real nats-server and the fake rooms service (see conftest.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from gateway_testkit import GatewayProc, OpenWs, WsClient, make_user, room_with

from roomcast.common.tokens import TokenSigner
from roomcast.testing.fakes import FakeRooms

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def send_reply(
    client: WsClient, room: str, content: str, reply_to: Any, *, to: str | None = None
) -> dict[str, Any]:
    """Send one reply frame; its ack or error."""
    cid = uuid.uuid4().hex[:16]
    frame: dict[str, Any] = {
        "type": "send",
        "room": room,
        "client_id": cid,
        "body": {"type": "text", "content": content},
        "reply_to": reply_to,
    }
    if to is not None:
        frame["to"] = to
    before = len(client.frames)
    await client.send_json(frame)
    return await client.expect(
        lambda f: (
            f.get("type") in ("ack", "error") and (f.get("client_id") == cid or f.get("ref") == cid)
        ),
        start=before,
        what=f"ack {cid}",
    )


async def test_gateway_reply_is_live_on_the_other_gateway_and_checked(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob, carol = make_user(signer), make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id, carol.id)
    other_room = room_with(gw_rooms, alice.id, bob.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[1].ws_url, bob)
    cc = await open_ws(cluster[0].ws_url, carol)
    for client in (ca, cb, cc):
        await client.subscribe(room)
    parent = await ca.send_text(room, "question?")
    reply = await send_reply(cb, room, "answer", parent["seq"])
    assert reply["type"] == "ack", reply
    got = await ca.wait_messages(room, 2)
    assert got[1]["seq"] == reply["seq"]
    assert got[1]["reply_to"] == parent["seq"]
    assert "to" not in got[1]

    # a parent in another room, a seq that is no message, a bad value: error frames
    elsewhere = await ca.send_text(other_room, "elsewhere")
    for bad in (elsewhere["seq"], reply["seq"] + 10_000):
        refused = await send_reply(cb, room, "nope", bad)
        assert (refused["type"], refused.get("code")) == ("error", "invalid_reply_to"), refused
    for bad in (0, -1, "1", 1.5, True):
        refused = await send_reply(cb, room, "nope", bad)
        assert (refused["type"], refused.get("code")) == ("error", "invalid_request"), refused

    # a private parent: its two people reply privately to each other (the gateway sets
    # ``to``), a third person may not reply, a reply naming someone else is refused
    secret = await ca.send_text(room, "psst bob", to=bob.id)
    private_reply = await send_reply(cb, room, "ok alice", secret["seq"])
    assert private_reply["type"] == "ack", private_reply
    seen = await ca.expect(
        lambda f: f.get("type") == "message" and f.get("seq") == private_reply["seq"],
        what="the private reply",
    )
    assert seen["to"] == alice.id
    assert seen["reply_to"] == secret["seq"]
    hidden = await cc.expect(
        lambda f: f.get("seq") == private_reply["seq"], what="the private reply's skip"
    )
    assert hidden["type"] == "skip"
    for refused in (
        await send_reply(cc, room, "me too", secret["seq"]),
        await send_reply(cb, room, "to carol", secret["seq"], to=carol.id),
    ):
        assert (refused["type"], refused.get("code")) == ("error", "invalid_reply_to"), refused
