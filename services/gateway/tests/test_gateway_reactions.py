"""Reactions over the WebSocket: ``react``/``unreact`` against two real gateway
processes sharing a real nats-server and the fake rooms service (see conftest.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from gateway_testkit import GatewayProc, OpenWs, WsClient, make_user, room_with

from roomcast.common.tokens import TokenSigner
from roomcast.testing.fakes import FakeRooms

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def react(
    client: WsClient,
    room: str,
    seq: Any,
    emoji: Any,
    *,
    kind: str = "react",
    client_id: str | None = None,
) -> dict[str, Any]:
    """Send one react/unreact frame; its ack or error."""
    cid = client_id or uuid.uuid4().hex[:16]
    before = len(client.frames)
    await client.send_json(
        {"type": kind, "room": room, "seq": seq, "emoji": emoji, "client_id": cid}
    )
    return await client.expect(
        lambda f: (
            f.get("type") in ("ack", "error") and (f.get("client_id") == cid or f.get("ref") == cid)
        ),
        start=before,
        what=f"ack {cid}",
    )


def reactions(client: WsClient, room: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f.get("type") == "reaction" and f.get("room") == room]


async def test_gateway_reactions_are_live_deduplicated_and_replayed(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob, carol = make_user(signer), make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id, carol.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[1].ws_url, bob)
    cc = await open_ws(cluster[0].ws_url, carol)
    for client in (ca, cb, cc):
        await client.subscribe(room)
    parent = await ca.send_text(room, "vote here")

    # bob reacts on the other gateway; a retry with the same client_id is acked with
    # the original seq and stored once
    first = await react(cb, room, parent["seq"], "👍", client_id="r1")
    again = await react(cb, room, parent["seq"], "👍", client_id="r1")
    assert first["type"] == "ack", first
    assert again == {**first, "duplicate": True}
    live = await ca.expect(lambda f: f.get("type") == "reaction", what="bob's reaction")
    assert live["seq"] == first["seq"]
    assert live["prev"] == parent["seq"]
    assert live["target_seq"] == parent["seq"]
    assert live["emoji"] == "👍"
    assert live["op"] == "add"
    assert live["sender"]["id"] == bob.id
    removed = await react(cb, room, parent["seq"], "👍", kind="unreact")
    assert removed["type"] == "ack", removed
    await ca.wait_until(lambda: len(reactions(ca, room)) == 2, what="the unreact")
    assert reactions(ca, room)[1]["op"] == "remove"

    # refusals: a bad emoji, a seq that is no message of the room, a non-member
    for bad in ("", " x", "a\u0000", 5, "x" * 100):
        refused = await react(cb, room, parent["seq"], bad)
        assert (refused["type"], refused.get("code")) == ("error", "invalid_emoji"), refused
    refused = await react(cb, room, first["seq"], "👍")  # a reaction is no message
    assert (refused["type"], refused.get("code")) == ("error", "not_found"), refused
    stranger = await open_ws(cluster[1].ws_url, make_user(signer))
    refused = await react(stranger, room, parent["seq"], "👍")
    assert refused["type"] == "error"
    assert refused["code"] == "forbidden", refused

    # a private message: its two people react, the reaction is a skip for carol, and
    # carol cannot react to it
    secret = await ca.send_text(room, "psst bob", to=bob.id)
    private = await react(cb, room, secret["seq"], "🤫")
    assert private["type"] == "ack", private
    seen = await ca.expect(
        lambda f: f.get("type") == "reaction" and f.get("seq") == private["seq"],
        what="the private reaction",
    )
    assert seen["target_seq"] == secret["seq"]
    hidden = await cc.expect(lambda f: f.get("seq") == private["seq"], what="carol's skip")
    assert hidden["type"] == "skip"
    refused = await react(cc, room, secret["seq"], "👀")
    assert (refused["type"], refused.get("code")) == ("error", "not_found"), refused

    # a resume replays each reaction exactly once, in the chain
    late = await open_ws(cluster[1].ws_url, alice)
    await late.subscribe(room, since=parent["seq"])
    await late.wait_until(lambda: len(reactions(late, room)) == 3, what="replayed reactions")
    assert [f["seq"] for f in reactions(late, room)] == [
        first["seq"],
        removed["seq"],
        private["seq"],
    ]
