"""One socket's sends in flight together: its answers and its stored messages keep the
order it sent them in, also around a refused send and a retried one (connection.py's
inline sends), against two real gateway processes sharing a real nats-server."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_testkit import GatewayProc, OpenWs, assert_chain, make_user, room_with

from roomcast.common.tokens import TokenSigner
from roomcast.testing.fakes import FakeRooms

pytestmark = pytest.mark.asyncio(loop_scope="session")

FRAMES = 50
# Where, among the 50 frames, the refused send (a room the sender is not in) and the
# retry of an earlier client_id go.
REFUSED_AT = 20
RETRY_AT = 30
RETRIED = 5


def _send(room: str, client_id: str, content: str) -> dict[str, Any]:
    return {
        "type": "send",
        "room": room,
        "client_id": client_id,
        "body": {"type": "text", "content": content},
    }


async def test_gateway_fifty_sends_without_waiting_keep_their_order(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob, carol = make_user(signer), make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    elsewhere = room_with(gw_rooms, carol.id)  # alice is not a member
    sender = await open_ws(cluster[0].ws_url, alice)
    receiver = await open_ws(cluster[1].ws_url, bob)
    await receiver.subscribe(room)
    # The first send warms the membership cache, so the rest take the cached path.
    first = await sender.send_text(room, "warm", client_id="warm")
    assert first["type"] == "ack"
    start = len(sender.frames)

    sent: list[str] = []  # client_ids in send order
    for n in range(FRAMES):
        if n == REFUSED_AT:
            cid = "refused"
            frame = _send(elsewhere, cid, "not mine")
        elif n == RETRY_AT:
            cid = f"c{RETRIED}"
            frame = _send(room, cid, f"m{RETRIED}")
        else:
            cid = f"c{n}"
            frame = _send(room, cid, f"m{n}")
        sent.append(cid)
        await sender.send_json(frame)  # no wait for the answer in between

    def answers() -> list[dict[str, Any]] | None:
        found = [f for f in sender.frames[start:] if f.get("type") in ("ack", "error")]
        return found if len(found) >= FRAMES else None

    got: list[dict[str, Any]] = await sender.wait_until(answers, what="50 answers")
    # One answer per frame, in send order: acks and the error alike.
    assert [f.get("client_id") or f.get("ref") for f in got] == sent
    refused = got[REFUSED_AT]
    assert refused["type"] == "error"
    assert refused["code"] in ("forbidden", "not_found")
    acks = [f for i, f in enumerate(got) if i != REFUSED_AT]
    assert all(f["type"] == "ack" for f in acks)
    retry = got[RETRY_AT]
    assert retry["duplicate"] is True
    assert retry["seq"] == got[RETRIED]["seq"]
    new = [f for i, f in enumerate(got) if i not in (REFUSED_AT, RETRY_AT)]
    assert not any(f.get("duplicate") for f in new)
    seqs = [f["seq"] for f in new]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)

    # Stored (and delivered on the other gateway) once each, in send order.
    stored = await receiver.wait_messages(room, 1 + len(new))
    assert len(stored) == 1 + len(new)
    assert_chain(stored, start_prev=0)
    assert [m["body"]["content"] for m in stored] == ["warm"] + [
        f"m{n}" for n in range(FRAMES) if n not in (REFUSED_AT, RETRY_AT)
    ]
    assert [m["seq"] for m in stored[1:]] == seqs
    # Nothing more arrives after a sentinel: the retry was not stored a second time.
    sentinel = await sender.send_text(room, "sentinel", client_id="sentinel")
    await receiver.expect(lambda f: f.get("seq") == sentinel["seq"])
    assert len(receiver.messages(room)) == 2 + len(new)
