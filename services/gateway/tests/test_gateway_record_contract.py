"""The stored-record contract at the gateway, with real gateway processes and a real
nats-server: text history could not store is refused with an error frame (never acked),
anything else is relayed exactly as sent; edits and deletes have their own
deduplication namespace, so reusing a send's client_id does not swallow them."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from gateway_testkit import GatewayProc, OpenWs, WsClient, make_user, room_with

from roomcast.common.tokens import TokenSigner
from roomcast.testing.fakes import FakeRooms

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def answer(client: WsClient, raw: str, cid: str) -> dict[str, Any]:
    """Send a raw frame text (escapes exactly as written) and wait for its ack or error."""
    before = len(client.frames)
    await client.ws.send(raw)
    return await client.expect(
        lambda f: f.get("type") in ("ack", "error") and cid in (f.get("client_id"), f.get("ref")),
        start=before,
        what=f"answer to {cid}",
    )


def send_frame(room: str, cid: str, content_literal: str) -> str:
    """A send frame whose content is the JSON string literal ``content_literal``."""
    head = orjson.dumps({"type": "send", "room": room, "client_id": cid}).decode()
    return head[:-1] + ',"body":{"type":"text","content":' + content_literal + "}}"


async def test_gateway_refuses_text_history_cannot_store_and_relays_the_rest_exactly(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[1].ws_url, bob)
    for c in (ca, cb):
        await c.subscribe(room)

    refused = await answer(ca, send_frame(room, "nul-1", '"a\\u0000b"'), "nul-1")
    assert refused["type"] == "error"
    assert refused["code"] == "invalid_request"
    assert "U+0000" in refused["message"]

    refused = await answer(ca, send_frame(room, "lone-1", '"a\\ud800b"'), "lone-1")
    assert refused["type"] == "error"
    assert refused["code"] == "invalid_request"
    assert "surrogate" in refused["message"]

    # RTL, combining marks, an emoji as a surrogate pair escape, other controls: exact.
    exotic_literal = (
        '"\\u202eabc \\u05e9\\u05dc\\u05d5\\u05dd e\\u0301\\u0301 \\ud83d\\ude00\\u0001\\t"'
    )
    exotic = orjson.loads(exotic_literal)
    ack = await answer(ca, send_frame(room, "exotic-1", exotic_literal), "exotic-1")
    assert ack["type"] == "ack"
    got = await cb.expect(lambda f: f.get("type") == "message", what="the exotic message")
    assert got["seq"] == ack["seq"]
    assert got["body"] == {"type": "text", "content": exotic}
    # The refused ones never took a place in the room's chain.
    assert [f["content"] for f in (m["body"] for m in cb.messages(room))] == [exotic]


async def test_gateway_edit_and_delete_reusing_a_send_client_id_are_applied(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice = make_user(signer)
    room = room_with(gw_rooms, alice.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    await ca.subscribe(room)
    cid = uuid.uuid4().hex[:16]
    sent = await ca.send_text(room, "original", client_id=cid)
    assert sent["type"] == "ack"

    edit = {
        "type": "edit",
        "room": room,
        "seq": sent["seq"],
        "client_id": cid,
        "body": {"type": "text", "content": "edited"},
    }
    edited = await answer(ca, orjson.dumps(edit).decode(), cid)
    assert edited["type"] == "ack"
    assert not edited.get("duplicate")
    assert edited["seq"] > sent["seq"]
    frame = await ca.expect(lambda f: f.get("type") == "edit", what="the edit frame")
    assert (frame["seq"], frame["body"]["content"]) == (edited["seq"], "edited")

    # A retried edit is still deduplicated within its own namespace.
    retried = await answer(ca, orjson.dumps(edit).decode(), cid)
    assert (retried["seq"], retried.get("duplicate")) == (edited["seq"], True)

    delete = {"type": "delete", "room": room, "seq": sent["seq"], "client_id": cid}
    deleted = await answer(ca, orjson.dumps(delete).decode(), cid)
    assert deleted["type"] == "ack"
    assert not deleted.get("duplicate")
    assert deleted["seq"] > edited["seq"]
    await ca.expect(lambda f: f.get("type") == "delete", what="the delete frame")
