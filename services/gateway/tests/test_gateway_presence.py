"""Presence and typing across real gateway processes sharing a real nats-server (the
fake rooms service answers membership): who is online in a room on every gateway,
online/offline events, typing notices, and gateways that die or drain."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from gateway_testkit import (
    CuttableProxy,
    GatewayProc,
    OpenWs,
    Spawner,
    User,
    WsClient,
    base_env,
    make_user,
    room_with,
)

from roomcast.common.tokens import TokenSigner
from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.processes import NatsServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Fast presence for the tests that kill gateways: heartbeat every 0.5 s, dead after 3
# missed, checked 4 times per interval: the documented bound is 3 x 0.5 + 0.125 s.
FAST_HEARTBEAT = 0.5
FAST_MISSED = 3
FAST_BOUND = FAST_HEARTBEAT * FAST_MISSED + FAST_HEARTBEAT / 4
FAST_PRESENCE = {
    "ROOMCAST_GATEWAY_PRESENCE_HEARTBEAT_SECONDS": str(FAST_HEARTBEAT),
    "ROOMCAST_GATEWAY_PRESENCE_MISSED_HEARTBEATS": str(FAST_MISSED),
}
# Slack for delivering the offline event on this loaded 2-core machine, on top of the
# documented detection bound.
DELIVERY_SLACK = 1.5


def is_presence_event(frame: dict[str, Any], user: User, status: str, room: str) -> bool:
    return (
        frame.get("type") == "presence"
        and frame.get("room") == room
        and frame.get("status") == status
        and frame.get("user", {}).get("id") == user.id
    )


def presence_events(client: WsClient, room: str, user: User | None = None) -> list[dict[str, Any]]:
    return [
        f
        for f in client.frames
        if f.get("type") == "presence"
        and f.get("room") == room
        and "status" in f
        and (user is None or f["user"]["id"] == user.id)
    ]


async def query(client: WsClient, room: str) -> list[str]:
    """The user ids a presence query answers, in order."""
    before = len(client.frames)
    await client.send_json({"type": "presence", "room": room})
    answer = await client.expect(
        lambda f: (
            (f.get("type") == "presence" and "online" in f and f.get("room") == room)
            or (f.get("type") == "error" and f.get("ref") == room)
        ),
        start=before,
        what=f"presence answer for {room}",
    )
    assert answer["type"] == "presence", answer
    assert answer["count"] == len(answer["online"])
    return [u["id"] for u in answer["online"]]


async def wait_online(client: WsClient, room: str, expected: set[str], within: float = 10) -> None:
    """Poll presence queries until they answer ``expected`` (another gateway's view)."""
    deadline = time.monotonic() + within
    while True:
        got = set(await query(client, room))
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"presence {got} != {expected}")
        await asyncio.sleep(0.05)  # polling another gateway's state: no event to wait on


async def test_gateway_presence_is_one_view_across_gateways(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    a, b = cluster
    alice, bob, carol = make_user(signer), make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id, carol.id)
    ca = await open_ws(a.ws_url, alice)
    cb = await open_ws(b.ws_url, bob)
    cb2 = await open_ws(a.ws_url, bob)  # bob's second device, on the other gateway
    cc = await open_ws(b.ws_url, carol)
    await ca.subscribe(room)
    assert await query(ca, room) == [alice.id]

    await cb.subscribe(room)
    event = await ca.expect(lambda f: is_presence_event(f, bob, "online", room))
    assert event["user"] == {
        "id": bob.id,
        "username": bob.name,
        "display_name": f"User {bob.id[:6]}",
    }
    # B opened the room after A: its snapshot brought alice
    assert set(await query(cb, room)) == {alice.id, bob.id}
    assert await query(ca, room) == sorted([alice.id, bob.id])

    # bob's second socket, on A: still one bob, no second event
    await cb2.subscribe(room)
    await cc.subscribe(room)
    await ca.expect(lambda f: is_presence_event(f, carol, "online", room))
    assert len(presence_events(ca, room, bob)) == 1
    assert set(await query(ca, room)) == {alice.id, bob.id, carol.id}

    # bob's first socket goes: bob is still online through the other one
    await cb.close()
    await cc.send_json({"type": "unsubscribe", "room": room})
    await ca.expect(lambda f: is_presence_event(f, carol, "offline", room))
    assert [f["status"] for f in presence_events(ca, room, bob)] == ["online"]
    assert set(await query(ca, room)) == {alice.id, bob.id}

    # bob's last socket leaves the room: offline everywhere
    await cb2.send_json({"type": "unsubscribe", "room": room})
    await ca.expect(lambda f: is_presence_event(f, bob, "offline", room))
    await cc.subscribe(room)
    await wait_online(cc, room, {alice.id, carol.id})
    # a socket is never told about other rooms, nor about itself before its query
    assert all(f["room"] == room for f in presence_events(ca, room))
    assert await a.metric("roomcast_gateway_presence_events_total", 'status="online"') >= 2
    assert await a.metric("roomcast_gateway_presence_gateways") >= 1


async def test_gateway_presence_needs_a_subscription(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice = make_user(signer)
    room = room_with(gw_rooms, alice.id)
    client = await open_ws(cluster[0].ws_url, alice)
    for kind in ("presence", "typing"):
        before = len(client.frames)
        await client.send_json({"type": kind, "room": room})
        error = await client.expect(lambda f: f.get("type") == "error", start=before)
        assert (error["code"], error["ref"]) == ("not_subscribed", room)
    # subscribe and query in one go: commands run in order
    await client.send_json({"type": "subscribe", "room": room})
    assert await query(client, room) == [alice.id]
    assert client.closed is None


async def test_gateway_typing_reaches_the_others_on_every_gateway_rate_limited(
    open_ws: OpenWs, cluster: list[GatewayProc], gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    a, b = cluster
    alice, bob, carol = make_user(signer), make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id, carol.id)
    ca = await open_ws(a.ws_url, alice)
    ca2 = await open_ws(b.ws_url, alice)
    cb = await open_ws(b.ws_url, bob)
    cc = await open_ws(a.ws_url, carol)
    for client in (ca, ca2, cb, cc):
        await client.subscribe(room)
    dropped_before = await a.metric("roomcast_gateway_typing_total", 'result="dropped"')

    def typing_of(client: WsClient, user: User) -> list[dict[str, Any]]:
        return [
            f
            for f in client.frames
            if f.get("type") == "typing" and f["room"] == room and f["user"]["id"] == user.id
        ]

    for _ in range(3):
        await ca.send_json({"type": "typing", "room": room})
    # a presence query is answered after the typing commands before it: they are
    # published by then; carol's notice, from the same gateway, comes after them
    await query(ca, room)
    await cc.send_json({"type": "typing", "room": room})
    for watcher in (cb, ca2, cc):
        if watcher is not cc:
            await watcher.expect(lambda f, w=watcher: bool(typing_of(w, carol)))
        else:
            await watcher.expect(lambda f: bool(typing_of(cc, alice)))
    assert len(typing_of(cb, alice)) == 1  # the two extra notices were dropped
    notice = typing_of(cb, alice)[0]
    assert notice["user"] == {
        "id": alice.id,
        "username": alice.name,
        "display_name": f"User {alice.id[:6]}",
    }
    # alice's own sockets (on both gateways) never hear her typing
    assert typing_of(ca, alice) == []
    assert typing_of(ca2, alice) == []
    assert len(typing_of(cc, alice)) == 1
    assert await a.metric("roomcast_gateway_typing_total", 'result="dropped"') >= (
        dropped_before + 2
    )

    # after the interval (2 s) a notice goes through again
    started = time.monotonic()
    while len(typing_of(cb, alice)) < 2:
        assert time.monotonic() - started < 10, "typing stayed blocked"
        await ca.send_json({"type": "typing", "room": room})
        await asyncio.sleep(0.3)  # a user typing: one keystroke every 300 ms
    assert time.monotonic() - started >= 1.0
    assert all(client.closed is None for client in (ca, ca2, cb, cc))


async def _online_pair(
    open_ws: OpenWs,
    spawn: Spawner,
    gw_env: dict[str, str],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
) -> tuple[GatewayProc, GatewayProc, str, User, User, WsClient, WsClient]:
    """Gateways A and B (fast heartbeats); alice on A and bob on B, both in a room and
    seeing each other online."""
    env = {**gw_env, **FAST_PRESENCE}
    gw_a = await spawn(env, "presence-a")
    gw_b = await spawn(env, "presence-b")
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    ca = await open_ws(gw_a.ws_url, alice)
    cb = await open_ws(gw_b.ws_url, bob)
    await ca.subscribe(room)
    await cb.subscribe(room)
    await ca.expect(lambda f: is_presence_event(f, bob, "online", room))
    await wait_online(cb, room, {alice.id, bob.id})
    return gw_a, gw_b, room, alice, bob, ca, cb


async def test_gateway_killed_takes_its_users_offline_within_the_bound(
    open_ws: OpenWs,
    gw_env: dict[str, str],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    gw_a, gw_b, room, alice, bob, ca, _cb = await _online_pair(
        open_ws, spawn, gw_env, gw_rooms, signer
    )
    # the shared cluster's gateways are on the same NATS: count relative to now
    peers = await gw_a.metric("roomcast_gateway_presence_gateways")
    assert peers >= 1
    killed_at = time.monotonic()
    gw_b.kill()  # SIGKILL: no goodbye, no offline delta
    event = await ca.expect(
        lambda f: is_presence_event(f, bob, "offline", room),
        within=FAST_BOUND + DELIVERY_SLACK + 5,
    )
    elapsed = time.monotonic() - killed_at
    assert event["user"]["id"] == bob.id
    assert elapsed <= FAST_BOUND + DELIVERY_SLACK, f"offline after {elapsed:.2f} s"
    # detected by missed heartbeats, not by anything faster
    assert elapsed >= FAST_HEARTBEAT * (FAST_MISSED - 1)
    assert await query(ca, room) == [alice.id]
    assert await gw_a.metric("roomcast_gateway_presence_gateways") == peers - 1


async def test_gateway_drained_takes_its_users_offline_at_once(
    open_ws: OpenWs,
    gw_env: dict[str, str],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    # Default heartbeats (2 s x 3): the offline event must not wait for them.
    gw_a = await spawn(gw_env, "drain-a")
    gw_b = await spawn(gw_env, "drain-b")
    alice, bob, carol = make_user(signer), make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id, carol.id)
    ca = await open_ws(gw_a.ws_url, alice)
    cb = await open_ws(gw_b.ws_url, bob)
    cc = await open_ws(gw_b.ws_url, carol)
    for client in (ca, cb, cc):
        await client.subscribe(room)
    await wait_online(ca, room, {alice.id, bob.id, carol.id})
    started = time.monotonic()
    gw_b.signal(signal.SIGTERM)
    for user in (bob, carol):
        await ca.expect(lambda f, u=user: is_presence_event(f, u, "offline", room))
    assert time.monotonic() - started < 4.0  # well before 3 missed heartbeats (6 s)
    assert await asyncio.to_thread(gw_b.wait, 15) == 0
    assert await query(ca, room) == [alice.id]


async def test_gateway_cut_off_from_nats_is_repaired_when_it_returns(
    open_ws: OpenWs,
    gw_jwks: JwksServer,
    gw_rooms: FakeRooms,
    gw_nats: NatsServer,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    """B loses NATS long enough to be declared dead; meanwhile carol comes and goes on A
    (deltas B never hears) and dave arrives. When B is back, both views are whole."""
    proxy = CuttableProxy("127.0.0.1", gw_nats.port)
    await proxy.start()
    direct = {**base_env(gw_nats.url, gw_jwks.url, gw_rooms.target), **FAST_PRESENCE}
    via_proxy = {
        **base_env(f"nats://127.0.0.1:{proxy.port}", gw_jwks.url, gw_rooms.target),
        **FAST_PRESENCE,
    }
    alice, bob, carol, dave = (make_user(signer) for _ in range(4))
    room = room_with(gw_rooms, alice.id, bob.id, carol.id, dave.id)
    try:
        gw_a = await spawn(direct, "presence-direct")
        gw_b = await spawn(via_proxy, "presence-cut")
        ca = await open_ws(gw_a.ws_url, alice)
        cb = await open_ws(gw_b.ws_url, bob)
        cc = await open_ws(gw_a.ws_url, carol)
        await ca.subscribe(room)
        await cc.subscribe(room)
        await cb.subscribe(room)
        await wait_online(cb, room, {alice.id, bob.id, carol.id})
        await ca.expect(lambda f: is_presence_event(f, bob, "online", room))

        proxy.cut()
        # A stops hearing B: bob goes offline there (B's users are unknown, not gone)
        await ca.expect(
            lambda f: is_presence_event(f, bob, "offline", room),
            within=FAST_BOUND + DELIVERY_SLACK + 5,
        )
        await cc.send_json({"type": "unsubscribe", "room": room})
        await cc.expect_type("unsubscribed", room=room)
        cd = await open_ws(gw_a.ws_url, dave)
        await cd.subscribe(room)

        proxy.restore()
        # B published its full state and asked for snapshots; A heard B come back
        await ca.expect(
            lambda f: (
                sum(1 for g in presence_events(ca, room, bob) if g["status"] == "online") == 2
            ),
            within=20,
        )
        await wait_online(ca, room, {alice.id, bob.id, dave.id}, within=20)
        await wait_online(cb, room, {alice.id, bob.id, dave.id}, within=20)
        assert cb.closed is None
    finally:
        await proxy.stop()
