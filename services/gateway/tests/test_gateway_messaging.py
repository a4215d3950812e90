"""The gateway's WebSocket contract, against two real gateway processes sharing a real
nats-server and the fake rooms service (see conftest.py)."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
from gateway_testkit import (
    GatewayProc,
    OpenWs,
    User,
    WsClient,
    assert_chain,
    make_user,
    new_id,
    room_with,
)
from nats.aio.client import Client as NatsClient
from websockets.exceptions import InvalidStatus

from roomcast.common.tokens import LEEWAY_SECONDS, TokenSigner
from roomcast.rpc.rooms.v1 import rooms_pb2
from roomcast.testing.fakes import FakeRoom, FakeRooms

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_gateway_users_on_two_gateways_exchange_messages(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    a, b = cluster
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    ca = await open_ws(a.ws_url, alice)
    cb = await open_ws(b.ws_url, bob)
    assert (await ca.subscribe(room))["seq"] == 0
    assert (await cb.subscribe(room))["seq"] == 0
    ack1 = await ca.send_text(room, "hi bob")
    assert ack1["type"] == "ack"
    assert ack1["id"] == str(ack1["seq"])
    ack2 = await cb.send_text(room, "hi alice")
    for client in (ca, cb):
        got = await client.wait_messages(room, 2)
        assert [m["seq"] for m in got] == [ack1["seq"], ack2["seq"]]
        assert [m["body"]["content"] for m in got] == ["hi bob", "hi alice"]
        assert got[0]["sender"]["id"] == alice.id
        assert got[0]["sender"]["username"] == alice.name
        assert got[1]["prev"] == got[0]["seq"]
        assert got[0]["prev"] == 0
        assert got[0]["id"] == str(got[0]["seq"])
        assert got[0]["sent_at"].endswith("Z")
        assert "to" not in got[0]


async def test_gateway_concurrent_senders_see_one_order(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    senders = [make_user(signer) for _ in range(4)]
    watchers = [make_user(signer) for _ in range(2)]
    room = room_with(gw_rooms, *(u.id for u in senders + watchers))
    clients = [
        await open_ws(cluster[i % 2].ws_url, user) for i, user in enumerate(senders + watchers)
    ]
    per_sender = 50
    for client in clients:
        await client.subscribe(room)

    async def send_all(client: WsClient, index: int) -> list[int]:
        cids = [f"s{index}-{n}" for n in range(per_sender)]
        for n, cid in enumerate(cids):  # pipelined: no wait for acks in between
            await client.send_json(
                {
                    "type": "send",
                    "room": room,
                    "client_id": cid,
                    "body": {"type": "text", "content": f"{index}:{n}"},
                }
            )
        acks = await client.wait_until(
            lambda: (
                found
                if len(found := [f for f in client.frames if f.get("type") == "ack"]) >= per_sender
                else None
            ),
            what="acks",
        )
        assert [a["client_id"] for a in acks] == cids  # acked in send order
        return [a["seq"] for a in acks]

    acked = await asyncio.gather(*(send_all(c, i) for i, c in enumerate(clients[:4])))
    all_acked = sorted(seq for seqs in acked for seq in seqs)
    assert len(set(all_acked)) == 4 * per_sender
    for seqs in acked:  # one client's messages are stored in its send order
        assert seqs == sorted(seqs)
    orders = []
    for client in clients:
        got = await client.wait_messages(room, 4 * per_sender)
        assert len(got) == 4 * per_sender
        assert_chain(got, start_prev=0)
        orders.append([m["seq"] for m in got])
    assert all(order == orders[0] for order in orders)
    assert orders[0] == all_acked


async def test_gateway_duplicate_send_returns_original_seq(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[1].ws_url, bob)
    await cb.subscribe(room)
    first = await ca.send_text(room, "once", client_id="retry-1")
    again = await ca.send_text(room, "once", client_id="retry-1")
    assert again["seq"] == first["seq"]
    assert again["duplicate"] is True
    assert "duplicate" not in first
    sentinel = await ca.send_text(room, "after")
    got = await cb.wait_messages(room, 2)
    await cb.expect(lambda f: f.get("seq") == sentinel["seq"])
    assert [m["seq"] for m in cb.messages(room)] == [first["seq"], sentinel["seq"]]
    assert got[1]["prev"] == first["seq"]
    # The same client_id in another room is not mistaken for a retry.
    elsewhere = room_with(gw_rooms, alice.id)
    reused = await ca.send_text(elsewhere, "other room", client_id="retry-1")
    assert (reused["type"], reused["code"]) == ("error", "client_id_reused")


async def test_gateway_non_member_cannot_subscribe_or_send(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, mallory = make_user(signer), make_user(signer)
    public_room = room_with(gw_rooms, alice.id)
    private_room = new_id()
    gw_rooms.rooms[private_room] = FakeRoom(visibility=rooms_pb2.VISIBILITY_PRIVATE)
    gw_rooms.add_member(private_room, alice.id)
    cm = await open_ws(cluster[0].ws_url, mallory)
    sub = await cm.subscribe(public_room)
    assert sub == {
        "type": "error",
        "code": "forbidden",
        "message": sub["message"],
        "ref": public_room,
    }
    ack = await cm.send_text(public_room, "let me in", client_id="m-1")
    assert ack["type"] == "error"
    assert ack["code"] == "forbidden"
    assert ack["ref"] == "m-1"
    for hidden in (private_room, new_id()):  # private and unknown rooms look alike
        sub = await cm.subscribe(hidden)
        assert (sub["type"], sub["code"]) == ("error", "not_found")
        ack = await cm.send_text(hidden, "hello?")
        assert (ack["type"], ack["code"]) == ("error", "not_found")
    # The connection is still fine.
    await cm.send_json({"type": "ping"})
    await cm.expect_type("pong")
    assert cm.closed is None


async def test_gateway_private_message_reaches_only_sender_and_recipient(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob, carol = make_user(signer), make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id, carol.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[1].ws_url, bob)
    cc = await open_ws(cluster[0].ws_url, carol)
    for client in (ca, cb, cc):
        await client.subscribe(room)
    public = await ca.send_text(room, "everyone")
    secret = await ca.send_text(room, "psst bob", to=bob.id)
    after = await cc.send_text(room, "carol here")
    for client in (ca, cb):
        got = await client.wait_messages(room, 3)
        assert got[1]["type"] == "message"
        assert got[1]["to"] == bob.id
        assert got[1]["body"]["content"] == "psst bob"
        assert_chain(got, start_prev=0)
    got = await cc.wait_messages(room, 3)
    assert got[1] == {
        "type": "skip",
        "room": room,
        "seq": secret["seq"],
        "prev": public["seq"],
    }
    assert got[2]["seq"] == after["seq"]
    assert_chain(got, start_prev=0)
    assert b"psst" not in orjson.dumps(cc.frames)
    # A replay applies the same rule.
    late = await open_ws(cluster[1].ws_url, carol)
    await late.subscribe(room, since=0)
    replayed = await late.wait_messages(room, 3)
    assert replayed[1]["type"] == "skip"
    assert replayed[1]["seq"] == secret["seq"]


async def test_gateway_resume_with_since_gets_exactly_the_missed_messages(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob = make_user(signer), make_user(signer)
    other_room = room_with(gw_rooms, bob.id)
    room = room_with(gw_rooms, alice.id, bob.id)
    cb = await open_ws(cluster[1].ws_url, bob)
    ca = await open_ws(cluster[0].ws_url, alice)
    await ca.subscribe(room)
    for n in range(3):
        await cb.send_text(room, f"before {n}")
    seen = await ca.wait_messages(room, 3)
    last = seen[-1]["seq"]
    await ca.close()
    missed = []
    for n in range(4):
        missed.append((await cb.send_text(room, f"missed {n}"))["seq"])
        await cb.send_text(other_room, "noise")  # interleaved sequences of another room
    ca = await open_ws(cluster[1].ws_url, alice)
    subscribed = await ca.subscribe(room, since=last)
    assert subscribed == {"type": "subscribed", "room": room, "seq": missed[-1]}
    replayed = await ca.wait_messages(room, 4)
    assert [m["seq"] for m in replayed] == missed
    assert_chain(replayed, start_prev=last)
    assert ca.frames.index(subscribed) < ca.frames.index(replayed[0])
    live = await cb.send_text(room, "live")
    got = await ca.wait_messages(room, 5)
    assert got[4]["seq"] == live["seq"]
    assert got[4]["prev"] == missed[-1]
    # Resubscribing while subscribed with since replays again, without duplicates.
    again = await ca.subscribe(room, since=missed[1])
    assert again["seq"] == live["seq"]
    await ca.wait_messages(room, 8)
    assert [m["seq"] for m in ca.messages(room)[5:]] == [missed[2], missed[3], live["seq"]]
    final = await cb.send_text(room, "final")
    await ca.expect(lambda f: f.get("seq") == final["seq"])
    assert len(ca.messages(room)) == 9


async def test_gateway_membership_removed_ends_subscription(
    open_ws: OpenWs,
    cluster: list[GatewayProc],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
) -> None:
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[1].ws_url, bob)
    await ca.subscribe(room)
    await cb.subscribe(room)
    await cb.send_text(room, "bob was here")  # bob's membership is now cached
    del gw_rooms.rooms[room].members[bob.id]
    event = {"type": "member_removed", "room_id": room, "user_id": bob.id, "actor_id": alice.id}
    started = time.monotonic()
    await nc.publish(f"chat.events.room.{room}", orjson.dumps(event))
    ended = await cb.expect(lambda f: f.get("type") == "unsubscribed", within=1.0)
    assert time.monotonic() - started < 1.0
    assert ended == {"type": "unsubscribed", "room": room, "reason": "member_removed"}
    notice = await cb.expect_type("event", room=room)
    assert notice["event"] == "member_removed"
    assert notice["user_id"] == bob.id
    await ca.expect(lambda f: f.get("type") == "event" and f.get("event") == "member_removed")
    # Bob gets nothing more from the room and can no longer send to it.
    nope = await cb.send_text(room, "still here?")
    assert (nope["type"], nope["code"]) == ("error", "forbidden")
    after = await ca.send_text(room, "bye bob")
    await ca.expect(lambda f: f.get("seq") == after["seq"])
    await cb.send_json({"type": "ping"})
    await cb.expect_type("pong")
    assert all(m["seq"] != after["seq"] for m in cb.messages(room))
    # Other events are relayed to the room.
    await nc.publish(
        f"chat.events.room.{room}",
        orjson.dumps({"type": "room_updated", "room_id": room, "room": {"name": "new"}}),
    )
    updated = await ca.expect(lambda f: f.get("event") == "room_updated")
    assert updated["room_info"] == {"name": "new"}


async def test_gateway_room_deleted_ends_every_subscription(
    open_ws: OpenWs,
    cluster: list[GatewayProc],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
) -> None:
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[0].ws_url, bob)
    await ca.subscribe(room)
    await cb.subscribe(room)
    await nc.publish(
        f"chat.events.room.{room}", orjson.dumps({"type": "room_deleted", "room_id": room})
    )
    for client in (ca, cb):
        ended = await client.expect_type("unsubscribed", room=room)
        assert ended["reason"] == "room_deleted"


async def test_gateway_session_revoked_closes_that_session_only(
    open_ws: OpenWs,
    cluster: list[GatewayProc],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
) -> None:
    uid = new_id()
    tokens = {}
    for sid in ("s-old", "s-new"):
        tokens[sid], _ = signer.issue_access(
            user_id=uid, username="sam", display_name="Sam", session_id=sid
        )
    old = await open_ws(cluster[0].ws_url, User(uid, "sam", tokens["s-old"]))
    new = await open_ws(cluster[0].ws_url, User(uid, "sam", tokens["s-new"]))
    await nc.publish(
        f"chat.events.user.{uid}",
        orjson.dumps({"type": "session_revoked", "user_id": uid, "session_id": "s-old"}),
    )
    closed = await old.wait_closed()
    assert closed.code == 4001
    await new.send_json({"type": "ping"})
    await new.expect_type("pong")
    assert new.closed is None


async def test_gateway_rest_on_the_same_port(cluster: list[GatewayProc]) -> None:
    gw = cluster[0]
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=5) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "roomcast_gateway_connections" in metrics.text
        assert "roomcast_gateway_http_requests_total" in metrics.text
        plain = await client.get("/v1/ws")  # not an upgrade: served by the HTTP app
        assert plain.status_code == 426
        assert plain.json()["error"]["code"] == "upgrade_required"
        missing = await client.get("/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        posted = await client.post("/healthz", content=b"x" * 1000)
        assert posted.status_code == 405
        # Keep-alive: several requests on one connection stay with the HTTP server.
        for _ in range(3):
            assert (await client.get("/healthz")).status_code == 200


async def test_gateway_request_head_limit(cluster: list[GatewayProc]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", cluster[0].gw_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    assert response.startswith(b"HTTP/1.1 431 ")
    writer.close()


async def test_gateway_oversize_frame_closes_1009(
    open_ws: OpenWs, cluster: list[GatewayProc], signer: TokenSigner
) -> None:
    client = await open_ws(cluster[0].ws_url, make_user(signer))
    await client.ws.send("x" * (70 * 1024))
    closed = await client.wait_closed()
    assert closed.code == 1009
    # Fragments are counted together.
    client = await open_ws(cluster[0].ws_url, make_user(signer))
    await client.ws.send(iter(["y" * 40_000, "y" * 40_000]))
    closed = await client.wait_closed()
    assert closed.code == 1009


async def test_gateway_bad_frames_get_errors_and_the_socket_survives(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice = make_user(signer)
    room = room_with(gw_rooms, alice.id)
    client = await open_ws(cluster[1].ws_url, alice)
    cases = [
        ("not json", "invalid_json", None),
        ("[1, 2]", "invalid_request", None),
        ('{"type": 5}', "invalid_request", None),
        ('{"type": "dance"}', "unknown_type", None),
        ('{"type": "subscribe", "room": 12}', "invalid_request", None),
        ('{"type": "subscribe", "room": "ROOM"}', "invalid_request", None),
        (f'{{"type": "subscribe", "room": "{room}", "since": "5"}}', "invalid_request", room),
        (f'{{"type": "subscribe", "room": "{room}", "since": true}}', "invalid_request", room),
        (f'{{"type": "subscribe", "room": "{room}", "since": -1}}', "invalid_request", room),
        (
            orjson.dumps(
                {"type": "send", "room": room, "client_id": "c 1", "body": {"type": "text"}}
            ).decode(),
            "invalid_request",
            room,
        ),
        (
            orjson.dumps(
                {"type": "send", "room": room, "client_id": "c1", "body": "hello"}
            ).decode(),
            "invalid_request",
            "c1",
        ),
        (
            orjson.dumps(
                {
                    "type": "send",
                    "room": room,
                    "client_id": "c2",
                    "body": {"type": "text", "content": {"$gt": ""}},
                }
            ).decode(),
            "invalid_request",
            "c2",
        ),
        (
            orjson.dumps(
                {
                    "type": "send",
                    "room": room,
                    "client_id": "c3",
                    "body": {"type": "text", "content": "z" * 4001},
                }
            ).decode(),
            "payload_too_large",
            "c3",
        ),
        (
            orjson.dumps(
                {
                    "type": "send",
                    "room": room,
                    "client_id": "c4",
                    "body": {"type": "text", "content": "hi"},
                    "to": "not-a-user",
                }
            ).decode(),
            "invalid_request",
            "c4",
        ),
        (f'{{"type": "typing", "room": "{room}"}}', "not_subscribed", room),
    ]
    for raw, code, ref in cases:
        before = len(client.frames)
        await client.ws.send(raw)
        error = await client.expect(lambda f: f.get("type") == "error", start=before, what=raw)
        assert error["code"] == code, raw
        assert error.get("ref") == ref, raw
    before = len(client.frames)
    await client.ws.send(b"\x00binary")
    error = await client.expect(lambda f: f.get("type") == "error", start=before)
    assert error["code"] == "invalid_request"
    assert (await client.subscribe(room))["type"] == "subscribed"
    ack = await client.send_text(room, "still works")
    assert ack["type"] == "ack"
    await client.wait_messages(room, 1)
    assert client.closed is None


async def test_gateway_unsubscribe_stops_delivery(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    other = room_with(gw_rooms, alice.id, bob.id)
    ca = await open_ws(cluster[0].ws_url, alice)
    cb = await open_ws(cluster[0].ws_url, bob)
    await ca.subscribe(room)
    await ca.subscribe(other)
    await cb.send_text(room, "one")
    await ca.wait_messages(room, 1)
    await ca.send_json({"type": "unsubscribe", "room": room})
    assert (await ca.expect_type("unsubscribed"))["room"] == room
    await cb.send_text(room, "two")
    sentinel = await cb.send_text(other, "sentinel")
    await ca.expect(lambda f: f.get("seq") == sentinel["seq"])
    assert len(ca.messages(room)) == 1


async def test_gateway_auth_is_required_first(
    open_ws: OpenWs, cluster: list[GatewayProc], signer: TokenSigner
) -> None:
    gw = cluster[0]
    silent = await open_ws(gw.ws_url)  # never authenticates: 1 s timeout here
    wrong_first = await open_ws(gw.ws_url)
    bad_token = await open_ws(gw.ws_url)
    await wrong_first.send_json({"type": "ping"})
    await bad_token.send_json({"type": "auth", "token": "not.a.token"})
    for client in (silent, wrong_first, bad_token):
        closed = await client.wait_closed(within=5)
        assert closed.code == 4001
    error = next(f for f in bad_token.frames if f.get("type") == "error")
    assert error["code"] == "invalid_token"


async def test_gateway_expired_token_is_refused_and_expiry_closes(
    open_ws: OpenWs, cluster: list[GatewayProc], signer: TokenSigner
) -> None:
    gw = cluster[1]
    stale = make_user(signer, ttl=60, now=time.time() - 3600)
    client = await open_ws(gw.ws_url)
    await client.send_json({"type": "auth", "token": stale.token})
    closed = await client.wait_closed()
    assert closed.code == 4001
    assert client.frames[-1]["code"] == "token_expired"
    # A token that expires while the socket is open closes it at expiry (exp plus the
    # shared leeway, when REST refuses it too), unless the client sent a fresh one first.
    uid = new_id()
    short, _ = signer.issue_access(
        user_id=uid, username="x", display_name="X", ttl_seconds=2, now=time.time() - LEEWAY_SECONDS
    )
    fresh, _ = signer.issue_access(user_id=uid, username="x", display_name="X", ttl_seconds=600)
    expiring = await open_ws(gw.ws_url, User(uid, "x", short))
    refreshed = await open_ws(gw.ws_url, User(uid, "x", short))
    await refreshed.send_json({"type": "auth", "token": fresh})
    await refreshed.wait_until(
        lambda: len([f for f in refreshed.frames if f.get("type") == "ready"]) == 2
    )
    closed = await expiring.wait_closed(within=10)
    assert closed.code == 4001
    await refreshed.send_json({"type": "ping"})
    await refreshed.expect_type("pong")
    assert refreshed.closed is None
    # Re-authenticating as someone else is refused.
    other = make_user(signer)
    await refreshed.send_json({"type": "auth", "token": other.token})
    closed = await refreshed.wait_closed()
    assert closed.code == 4003
    assert refreshed.frames[-1]["code"] == "user_mismatch"


async def test_gateway_origin_allowlist(
    open_ws: OpenWs, cluster: list[GatewayProc], signer: TokenSigner
) -> None:
    gw = cluster[0]
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(gw.ws_url, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    for origin in ("https://app.example", None):
        client = await open_ws(gw.ws_url, make_user(signer), origin=origin)
        await client.close()


async def test_gateway_subscription_limit_and_metrics(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    gw = cluster[1]
    alice = make_user(signer)
    rooms = [room_with(gw_rooms, alice.id) for _ in range(101)]
    client = await open_ws(gw.ws_url, alice)
    for room in rooms[:100]:
        assert (await client.subscribe(room))["type"] == "subscribed"
    refused = await client.subscribe(rooms[100])
    assert refused["code"] == "too_many_subscriptions"
    assert await gw.metric("roomcast_gateway_subscriptions") >= 100
    assert await gw.metric("roomcast_gateway_room_subscriptions") >= 100
    await client.send_json({"type": "unsubscribe", "room": rooms[0]})
    assert (await client.subscribe(rooms[100]))["type"] == "subscribed"
