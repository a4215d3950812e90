"""Room life across two real gateway processes: membership and room events reach every
subscribed socket on every gateway, removals end subscriptions (and presence) within a
second everywhere, revoked sessions close their sockets everywhere, and a rate-limited
command is answered with its ref. Rooms' and auth's events are published on the real
nats-server exactly as those services publish them (docs/events.md)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from gateway_testkit import (
    GatewayProc,
    OpenWs,
    Spawner,
    User,
    WsClient,
    make_user,
    new_id,
    room_with,
)
from nats.aio.client import Client as NatsClient

from roomcast.common.clock import now_ms
from roomcast.common.subjects import room_events_subject, user_events_subject
from roomcast.common.tokens import TokenSigner
from roomcast.testing.fakes import FakeRooms

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The contract: a removed user's subscriptions end within one second on every gateway.
REMOVAL_DEADLINE_SECONDS = 1.0


async def publish_room_event(nc: NatsClient, room_id: str, kind: str, **fields: Any) -> None:
    event = {
        "type": kind,
        "room_id": room_id,
        "actor_id": new_id(),
        "at_ms": now_ms(),
    }
    event.update(fields)
    await nc.publish(room_events_subject(room_id), orjson.dumps(event))
    await nc.flush()


def events_of(client: WsClient, room: str, kind: str) -> list[dict[str, Any]]:
    return [
        f
        for f in client.frames
        if f.get("type") == "event" and f["room"] == room and f["event"] == kind
    ]


def unsubscribed(client: WsClient, room: str) -> dict[str, Any] | None:
    for frame in client.frames:
        if frame.get("type") == "unsubscribed" and frame.get("room") == room:
            return frame
    return None


async def open_all(
    open_ws: OpenWs, cluster: list[GatewayProc], placements: list[tuple[User, int]], room: str
) -> list[WsClient]:
    clients = []
    for user, gateway in placements:
        client = await open_ws(cluster[gateway].ws_url, user)
        clients.append(client)
        await client.subscribe(room)
    return clients


async def test_gateway_room_events_reach_every_gateway(
    open_ws: OpenWs,
    cluster: list[GatewayProc],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
) -> None:
    alice, bob, carol, dave = (make_user(signer) for _ in range(4))
    room = room_with(gw_rooms, alice.id, bob.id, carol.id)
    clients = await open_all(open_ws, cluster, [(alice, 0), (bob, 0), (bob, 1), (carol, 1)], room)
    gw_rooms.add_member(room, dave.id)
    await publish_room_event(nc, room, "member_joined", user_id=dave.id, role="member")
    await publish_room_event(nc, room, "role_changed", user_id=bob.id, role="admin")
    info = {"id": room, "name": "renamed", "topic": "t", "visibility": "public"}
    await publish_room_event(nc, room, "room_updated", room=info)
    for client in clients:
        await client.wait_until(lambda c=client: events_of(c, room, "room_updated"))
        joined = events_of(client, room, "member_joined")
        assert [(e["user_id"], e["role"]) for e in joined] == [(dave.id, "member")]
        changed = events_of(client, room, "role_changed")
        assert [(e["user_id"], e["role"]) for e in changed] == [(bob.id, "admin")]
        assert events_of(client, room, "room_updated")[0]["room_info"] == info
        # the order rooms published them in
        kinds = [f["event"] for f in client.frames if f.get("type") == "event"]
        assert kinds == ["member_joined", "role_changed", "room_updated"]
    # dave, just joined, can subscribe at once (no stale "not a member")
    cd = await open_ws(cluster[1].ws_url, dave)
    assert (await cd.subscribe(room))["type"] == "subscribed"


@pytest.mark.parametrize("kind", ["member_removed", "member_left"])
async def test_gateway_removed_member_is_cut_off_on_every_gateway(
    open_ws: OpenWs,
    cluster: list[GatewayProc],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
    kind: str,
) -> None:
    alice, bob, carol = (make_user(signer) for _ in range(3))
    room = room_with(gw_rooms, alice.id, bob.id, carol.id)
    ca, cb_a, cb_b, cc = await open_all(
        open_ws, cluster, [(alice, 0), (bob, 0), (bob, 1), (carol, 1)], room
    )
    clients = [ca, cb_a, cb_b, cc]
    await ca.expect(
        lambda f: f.get("type") == "presence" and f.get("user", {}).get("id") == carol.id
    )
    del gw_rooms.rooms[room].members[bob.id]
    published = time.monotonic()
    await publish_room_event(nc, room, kind, user_id=bob.id)
    for client in (cb_a, cb_b):
        frame = await client.wait_until(lambda c=client: unsubscribed(c, room))
        assert frame["reason"] == kind
    assert time.monotonic() - published < REMOVAL_DEADLINE_SECONDS
    for client in clients:
        event = (await client.wait_until(lambda c=client: events_of(c, room, kind)))[0]
        assert event["user_id"] == bob.id
    # bob is offline for the others, on both gateways
    for watcher in (ca, cc):
        await watcher.expect(
            lambda f: (
                f.get("type") == "presence"
                and f.get("status") == "offline"
                and f["user"]["id"] == bob.id
            )
        )
    # nothing more reaches bob; the others still talk
    ack = await cc.send_text(room, "after bob")
    await ca.expect(lambda f: f.get("seq") == ack["seq"])
    for client in (cb_a, cb_b):
        assert [m for m in client.messages(room) if m["seq"] == ack["seq"]] == []
        # and bob cannot come back without rejoining
        assert (await client.subscribe(room))["code"] == "forbidden"
    assert cb_a.closed is None


async def test_gateway_deleted_room_ends_every_subscription(
    open_ws: OpenWs,
    cluster: list[GatewayProc],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
) -> None:
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    clients = await open_all(open_ws, cluster, [(alice, 0), (bob, 1), (alice, 1)], room)
    del gw_rooms.rooms[room]
    published = time.monotonic()
    await publish_room_event(nc, room, "room_deleted")
    for client in clients:
        frame = await client.wait_until(lambda c=client: unsubscribed(c, room))
        assert frame["reason"] == "room_deleted"
        assert events_of(client, room, "room_deleted")
    assert time.monotonic() - published < REMOVAL_DEADLINE_SECONDS
    for client in clients:
        assert (await client.subscribe(room))["code"] == "not_found"


async def test_gateway_revoked_session_closes_its_sockets_on_every_gateway(
    open_ws: OpenWs,
    cluster: list[GatewayProc],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
) -> None:
    revoked_sid, kept_sid = uuid.uuid4().hex, uuid.uuid4().hex
    bob = make_user(signer, session_id=revoked_sid)
    # the same user, another session (another device that logged in separately)
    token, _ = signer.issue_access(
        user_id=bob.id,
        username=bob.name,
        display_name=f"User {bob.id[:6]}",
        session_id=kept_sid,
        ttl_seconds=900,
    )
    bob_other = User(bob.id, bob.name, token)
    alice = make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    ca, cb_a, cb_b, cb_kept = await open_all(
        open_ws, cluster, [(alice, 0), (bob, 0), (bob, 1), (bob_other, 1)], room
    )
    event = {"type": "session_revoked", "user_id": bob.id, "session_id": revoked_sid}
    await nc.publish(user_events_subject(bob.id), orjson.dumps({**event, "reason": "logout"}))
    for client in (cb_a, cb_b):
        assert (await client.wait_closed()).code == 4001
    # the other session is untouched, and bob is still online through it
    ack = await cb_kept.send_text(room, "still here")
    assert ack["type"] == "ack"
    await ca.expect(lambda f: f.get("seq") == ack["seq"])
    offline = [f for f in ca.frames if f.get("type") == "presence" and f.get("status") == "offline"]
    assert offline == []
    # now that one too (a revoked refresh family): bob goes offline
    await nc.publish(
        user_events_subject(bob.id),
        orjson.dumps({**event, "session_id": kept_sid, "reason": "reuse"}),
    )
    assert (await cb_kept.wait_closed()).code == 4001
    # the revoked sessions' tokens, still unexpired, cannot open sockets again
    for gateway in cluster:
        for user in (bob, bob_other):
            again = await open_ws(gateway.ws_url)
            await again.send_json({"type": "auth", "token": user.token})
            assert (await again.wait_closed()).code == 4001
            assert again.frames[-1]["code"] == "session_revoked"
    await ca.expect(
        lambda f: (
            f.get("type") == "presence"
            and f.get("status") == "offline"
            and f["user"]["id"] == bob.id
        )
    )
    assert ca.closed is None


async def test_gateway_rate_limited_commands_carry_their_ref(
    open_ws: OpenWs,
    gw_env: dict[str, str],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    env = {
        **gw_env,
        "ROOMCAST_GATEWAY_RATE_LIMIT_PER_SECOND": "1",
        "ROOMCAST_GATEWAY_RATE_LIMIT_BURST": "6",
        # high enough that this test never reaches 4008 (the flood test does)
        "ROOMCAST_GATEWAY_RATE_LIMIT_MAX_VIOLATIONS": "100",
    }
    gw = await spawn(env, "gw-ratelimit-ref")
    alice = make_user(signer)
    room = room_with(gw_rooms, alice.id)
    other = room_with(gw_rooms, alice.id)
    client = await open_ws(gw.ws_url, alice)  # the auth frame spends one token
    try:
        await client.subscribe(room)  # and this one another
        client_ids = [f"c{i}" for i in range(12)]
        for cid in client_ids:
            await client.send_json(
                {
                    "type": "send",
                    "room": room,
                    "client_id": cid,
                    "body": {"type": "text", "content": cid},
                }
            )
        await client.send_json({"type": "subscribe", "room": other})
        await client.ws.send("not json")

        def answered() -> bool:
            refs = {
                f.get("client_id") or f.get("ref")
                for f in client.frames
                if f.get("type") in ("ack", "error")
            }
            return set(client_ids) | {other} <= refs

        await client.wait_until(answered, what="an answer for every command")
        acked = {f["client_id"] for f in client.frames if f.get("type") == "ack"}
        limited = [f for f in client.frames if f.get("code") == "rate_limited"]
        refused = {f.get("ref") for f in limited}
        assert acked
        assert acked | (refused - {other, None}) == set(client_ids)
        assert not acked & refused
        assert other in refused  # a refused subscribe names its room
        assert None in refused  # a frame that does not parse has no ref
        assert all(f["message"] for f in limited)
        assert client.closed is None
        # the refused sends are simply retried (same client_id) once the rate allows
        retry = sorted(set(client_ids) - acked)[0]
        started = time.monotonic()
        while True:
            answer = await client.send_text(room, retry, client_id=retry)
            if answer["type"] == "ack":
                break
            assert answer["code"] == "rate_limited"
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.5)  # the client backing off, as told
    finally:
        await gw.astop()
