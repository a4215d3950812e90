"""Edits and deletes over the WebSocket, against two real gateway processes sharing a
real nats-server and the fake rooms service: authorization, live delivery on both
gateways, private-message routing and resume (replayed frames, intact prev chains)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from gateway_testkit import GatewayProc, OpenWs, WsClient, assert_chain, make_user, new_id

from roomcast.common.tokens import TokenSigner
from roomcast.rpc.rooms.v1 import rooms_pb2
from roomcast.testing.fakes import FakeRooms

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAIN_TYPES = ("message", "skip", "edit", "delete")


def chain(client: WsClient, room: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f.get("type") in CHAIN_TYPES and f.get("room") == room]


async def change(
    client: WsClient, kind: str, room: str, seq: int, content: str | None = None
) -> dict[str, Any]:
    cid = uuid.uuid4().hex[:16]
    frame: dict[str, Any] = {"type": kind, "room": room, "seq": seq, "client_id": cid}
    if content is not None:
        frame["body"] = {"type": "text", "content": content}
    before = len(client.frames)
    await client.send_json(frame)
    return await client.expect(
        lambda f: f.get("type") in ("ack", "error") and cid in (f.get("client_id"), f.get("ref")),
        start=before,
        what=f"{kind} answer",
    )


async def test_gateway_edit_and_delete_authorization_and_live_delivery(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob, admin = make_user(signer), make_user(signer), make_user(signer)
    room = new_id()
    gw_rooms.add_member(room, alice.id)
    gw_rooms.add_member(room, bob.id)
    gw_rooms.add_member(room, admin.id, rooms_pb2.ROLE_ADMIN)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[1].ws_url, bob)
    cm = await open_ws(cluster[1].ws_url, admin)
    for c in (ca, cb, cm):
        await c.subscribe(room)
    m1 = (await ca.send_text(room, "first"))["seq"]
    m2 = (await ca.send_text(room, "second"))["seq"]
    m3 = (await cb.send_text(room, "bob's"))["seq"]

    # edit by the sender: acked, delivered live on both gateways
    ack = await change(ca, "edit", room, m1, "first, edited")
    assert ack["type"] == "ack"
    assert ack["seq"] > m3
    for c in (ca, cb):
        edit = await c.expect(lambda f: f.get("type") == "edit", what="edit frame")
        assert edit["seq"] == ack["seq"]
        assert edit["prev"] == m3
        assert edit["target_seq"] == m1
        assert edit["room"] == room
        assert edit["body"] == {"type": "text", "content": "first, edited"}
        assert edit["sender"]["id"] == alice.id
        assert edit["edited_at"]

    # refused: someone else's edit, a plain member's delete, unknown targets
    refused = await change(cb, "edit", room, m1, "hijack")
    assert refused["type"] == "error"
    assert refused["code"] == "forbidden"
    refused = await change(cb, "delete", room, m2)
    assert refused["type"] == "error"
    assert refused["code"] == "forbidden"
    refused = await change(ca, "edit", room, ack["seq"], "edit of an edit")
    assert refused["code"] == "not_found"
    other_room = new_id()
    gw_rooms.add_member(other_room, alice.id)
    other = (await ca.send_text(other_room, "elsewhere"))["seq"]
    refused = await change(ca, "delete", room, other)
    assert refused["code"] == "not_found"  # a message of another room
    refused = await change(ca, "delete", room, 10**12)
    assert refused["code"] == "not_found"

    # delete by the sender and by an admin
    d1 = await change(ca, "delete", room, m2)
    d2 = await change(cm, "delete", room, m3)
    assert d1["type"] == d2["type"] == "ack"
    for c in (ca, cb, cm):
        await c.wait_until(
            lambda c=c: len([f for f in chain(c, room) if f["type"] == "delete"]) == 2,
            what="two deletes",
        )
        deletes = [f for f in chain(c, room) if f["type"] == "delete"]
        assert [d["target_seq"] for d in deletes] == [m2, m3]
        assert [d["seq"] for d in deletes] == [d1["seq"], d2["seq"]]
        assert all("body" not in d and d["deleted_at"] for d in deletes)
        assert deletes[1]["sender"]["id"] == admin.id
    # every frame of the room holds the chain: edits and deletes take their place
    live = chain(cb, room)
    assert [f["seq"] for f in live] == [m1, m2, m3, ack["seq"], d1["seq"], d2["seq"]]
    assert_chain(live)

    # resume from the first message: the same frames, in order, with their prev
    late = await open_ws(cluster[0].ws_url, bob)
    await late.subscribe(room, since=m1)
    await late.wait_until(lambda: len(chain(late, room)) == 5, what="replay")
    assert chain(late, room) == live[1:]

    # a retried edit (same client_id) is stored once
    cid = "retry-" + uuid.uuid4().hex[:8]
    frame = {
        "type": "edit",
        "room": room,
        "seq": m1,
        "client_id": cid,
        "body": {"type": "text", "content": "again"},
    }
    await ca.send_json(frame)
    first = await ca.expect(lambda f: f.get("type") == "ack" and f["client_id"] == cid)
    before = len(ca.frames)
    await ca.send_json(frame)
    second = await ca.expect(
        lambda f: f.get("type") == "ack" and f["client_id"] == cid, start=before
    )
    assert second["seq"] == first["seq"]
    assert second.get("duplicate") is True


async def test_gateway_change_of_private_message_reaches_only_its_two_users(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob, carol = make_user(signer), make_user(signer), make_user(signer)
    room = new_id()
    for user in (alice, bob, carol):
        gw_rooms.add_member(room, user.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[1].ws_url, bob)
    cc = await open_ws(cluster[1].ws_url, carol)
    for c in (ca, cb, cc):
        await c.subscribe(room)
    secret = (await ca.send_text(room, "psst", to=bob.id))["seq"]
    edit = await change(ca, "edit", room, secret, "psst, edited")
    assert edit["type"] == "ack"
    for c in (ca, cb):
        frame = await c.expect(lambda f: f.get("type") == "edit", what="edit")
        assert frame["body"]["content"] == "psst, edited"
    await cc.wait_until(lambda: len(chain(cc, room)) == 2, what="two skips")
    assert [f["type"] for f in chain(cc, room)] == ["skip", "skip"]
    assert_chain(chain(cc, room))
    assert "psst" not in str(cc.frames)
