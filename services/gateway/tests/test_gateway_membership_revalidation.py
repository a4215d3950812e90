"""A removed member loses access even when the gateway never hears of the removal: a
membership answer in flight during a kick does not admit, a kick published while the
gateway was cut off from NATS ends the subscription at the reconnect, and a kick whose
event never comes ends it within the revalidation bound, also when rooms is too old
to answer FilterMembers. Real gateway processes and real NATS; rooms is the fake (its
answers can be held back)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from gateway_testkit import (
    TEST_AUDIENCE,
    TEST_ISSUER,
    WAIT,
    CuttableProxy,
    OpenWs,
    Spawner,
    WsClient,
    base_env,
    make_user,
    room_with,
)
from nats.aio.client import Client as NatsClient

from roomcast.common.subjects import room_events_subject
from roomcast.common.tokens import TokenSigner, TokenVerifier
from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.processes import NatsServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

FAST = {
    "ROOMCAST_GATEWAY_RATE_LIMIT_PER_SECOND": "2000",
    "ROOMCAST_GATEWAY_RATE_LIMIT_BURST": "2000",
}
# Nothing but the path under test may remove access: answers trusted for an hour and
# no periodic sweep within the test.
NO_PERIODIC = {
    "ROOMCAST_GATEWAY_MEMBERSHIP_CACHE_TTL_SECONDS": "3600",
    "ROOMCAST_GATEWAY_MEMBERSHIP_REVALIDATE_INTERVAL_SECONDS": "3600",
}
# The periodic bound under test: answers at most 1 s old, swept every 0.5 s.
TTL_SECONDS = 1.0
SWEEP_SECONDS = 0.5
# Slack over the bound for one CheckMembership and the frame's trip on a loaded
# 2-core machine.
SLACK_SECONDS = 3.0


async def publish_kick(nc: NatsClient, room: str, user_id: str) -> None:
    event = {"type": "member_removed", "room_id": room, "user_id": user_id, "actor_id": user_id}
    await nc.publish(room_events_subject(room), orjson.dumps(event))
    await nc.flush()


def frames_of(client: WsClient, room: str, kind: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f.get("type") == kind and f.get("room") == room]


async def assert_cut_off(sender: WsClient, watcher: WsClient, kicked: WsClient, room: str) -> None:
    """A message sent now reaches the watcher and not the kicked member, whose own
    send is refused."""
    sent = await sender.send_text(room, "after the kick")
    assert sent["type"] == "ack", sent
    await watcher.expect(lambda f: f.get("seq") == sent["seq"], what="the watcher's copy")
    assert all(m.get("seq") != sent["seq"] for m in kicked.messages(room))
    refused = await kicked.send_text(room, "still here?")
    assert refused["type"] == "error", refused


async def test_a_subscribe_in_flight_during_a_kick_is_not_admitted(
    open_ws: OpenWs,
    gw_jwks: JwksServer,
    gw_rooms: FakeRooms,
    gw_nats: NatsServer,
    nc: NatsClient,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    gw = await spawn({**base_env(gw_nats.url, gw_jwks.url, gw_rooms.target), **FAST}, "gw-race")
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    watcher = await open_ws(gw.ws_url, alice)
    assert (await watcher.subscribe(room))["type"] == "subscribed"
    kicked = await open_ws(gw.ws_url, bob)
    gw_rooms.hold = asyncio.Event()
    held = gw_rooms.held
    try:
        await kicked.send_json({"type": "subscribe", "room": room})
        deadline = time.monotonic() + WAIT
        while gw_rooms.held == held:  # rooms has decided "member" and holds it back
            assert time.monotonic() < deadline, "the subscribe never reached rooms"
            await asyncio.sleep(0.01)
        del gw_rooms.rooms[room].members[bob.id]
        seen = await gw.metric("roomcast_gateway_events_received_total", 'type="member_removed"')
        await publish_kick(nc, room, bob.id)
        while (
            await gw.metric("roomcast_gateway_events_received_total", 'type="member_removed"')
            <= seen
        ):
            assert time.monotonic() < deadline, "the gateway never got the kick"
            await asyncio.sleep(0.02)
    finally:
        hold, gw_rooms.hold = gw_rooms.hold, None
        hold.set()
    # The held "member" answer predates the kick: it must not admit.
    refused = await kicked.expect(
        lambda f: f.get("type") in ("subscribed", "error") and room in (f.get("room"), f.get("ref"))
    )
    assert refused["type"] == "error", refused
    await assert_cut_off(watcher, watcher, kicked, room)
    assert not frames_of(kicked, room, "subscribed")


async def test_a_kick_missed_while_cut_off_from_nats_ends_access_at_the_reconnect(
    open_ws: OpenWs,
    gw_jwks: JwksServer,
    gw_rooms: FakeRooms,
    gw_nats: NatsServer,
    nc: NatsClient,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    proxy = CuttableProxy("127.0.0.1", gw_nats.port)
    await proxy.start()
    try:
        cut_gw = await spawn(
            {
                **base_env(f"nats://127.0.0.1:{proxy.port}", gw_jwks.url, gw_rooms.target),
                **FAST,
                **NO_PERIODIC,
            },
            "gw-cut",
        )
        direct_gw = await spawn(
            {**base_env(gw_nats.url, gw_jwks.url, gw_rooms.target), **FAST}, "gw-direct"
        )
        alice, bob, carol = (make_user(signer) for _ in range(3))
        room = room_with(gw_rooms, alice.id, bob.id, carol.id)
        sender = await open_ws(direct_gw.ws_url, alice)
        watcher = await open_ws(cut_gw.ws_url, carol)
        kicked = await open_ws(cut_gw.ws_url, bob)
        for client in (sender, watcher, kicked):
            assert (await client.subscribe(room))["type"] == "subscribed"
        warm = await kicked.send_text(room, "bob's membership is cached")
        assert warm["type"] == "ack", warm
        reconnects = await cut_gw.metric("roomcast_gateway_nats_reconnects_total")

        proxy.cut()  # the gateway loses NATS; the kick's event goes out meanwhile
        del gw_rooms.rooms[room].members[bob.id]
        await publish_kick(nc, room, bob.id)
        proxy.restore()

        ended = await kicked.expect(
            lambda f: f.get("type") == "unsubscribed" and f.get("room") == room, within=30
        )
        assert ended["reason"] == "member_removed"
        assert await cut_gw.metric("roomcast_gateway_nats_reconnects_total") > reconnects
        await assert_cut_off(sender, watcher, kicked, room)
        assert not frames_of(watcher, room, "unsubscribed")  # members keep their place
    finally:
        await spawn.stop_all()
        await proxy.stop()


async def test_a_kick_whose_event_never_comes_ends_access_within_the_bound(
    open_ws: OpenWs,
    gw_jwks: JwksServer,
    gw_rooms: FakeRooms,
    gw_nats: NatsServer,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    env = {
        **base_env(gw_nats.url, gw_jwks.url, gw_rooms.target),
        **FAST,
        "ROOMCAST_GATEWAY_MEMBERSHIP_CACHE_TTL_SECONDS": str(TTL_SECONDS),
        "ROOMCAST_GATEWAY_MEMBERSHIP_REVALIDATE_INTERVAL_SECONDS": str(SWEEP_SECONDS),
    }
    gw = await spawn(env, "gw-sweep")
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    watcher = await open_ws(gw.ws_url, alice)
    kicked = await open_ws(gw.ws_url, bob)
    for client in (watcher, kicked):
        assert (await client.subscribe(room))["type"] == "subscribed"

    del gw_rooms.rooms[room].members[bob.id]  # removed, and no event is ever published
    removed = time.monotonic()
    bound = TTL_SECONDS + SWEEP_SECONDS
    ended = await kicked.expect(
        lambda f: f.get("type") == "unsubscribed" and f.get("room") == room,
        within=bound + SLACK_SECONDS,
    )
    assert ended["reason"] == "member_removed"
    assert time.monotonic() - removed < bound + SLACK_SECONDS
    assert await gw.metric("roomcast_gateway_revalidation_ended_subscriptions_total") == 1
    await assert_cut_off(watcher, watcher, kicked, room)
    # The member, re-checked by the same sweeps, keeps their subscription.
    assert not frames_of(watcher, room, "unsubscribed")


async def test_a_sweep_asks_rooms_once_per_room_not_once_per_member(
    open_ws: OpenWs,
    gw_jwks: JwksServer,
    gw_rooms: FakeRooms,
    gw_nats: NatsServer,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    env = {
        **base_env(gw_nats.url, gw_jwks.url, gw_rooms.target),
        **FAST,
        "ROOMCAST_GATEWAY_MEMBERSHIP_CACHE_TTL_SECONDS": str(TTL_SECONDS),
        "ROOMCAST_GATEWAY_MEMBERSHIP_REVALIDATE_INTERVAL_SECONDS": str(SWEEP_SECONDS),
    }
    gw = await spawn(env, "gw-batch")
    users = [make_user(signer) for _ in range(8)]
    room = room_with(gw_rooms, *(u.id for u in users))
    clients = [await open_ws(gw.ws_url, u) for u in users]
    for client in clients:
        assert (await client.subscribe(room))["type"] == "subscribed"
    kicked_user, kicked = users[3], clients[3]
    stayers = clients[:3] + clients[4:]
    before = dict(gw_rooms.method_calls)
    started = time.monotonic()

    del gw_rooms.rooms[room].members[kicked_user.id]  # no event is ever published
    ended = await kicked.expect(
        lambda f: f.get("type") == "unsubscribed" and f.get("room") == room,
        within=TTL_SECONDS + SWEEP_SECONDS + SLACK_SECONDS,
    )
    assert ended["reason"] == "member_removed"
    # Two more sweeps of the room, with only the members left subscribed.
    deadline = time.monotonic() + WAIT
    while gw_rooms.method_calls["FilterMembers"] - before.get("FilterMembers", 0) < 3:
        assert time.monotonic() < deadline, "the sweeps never asked rooms"
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    filtered = gw_rooms.method_calls["FilterMembers"] - before.get("FilterMembers", 0)
    checked = gw_rooms.method_calls["CheckMembership"] - before.get("CheckMembership", 0)

    # Per pair, each TTL would have cost one CheckMembership per subscribed member (8,
    # then 7); per room it costs one FilterMembers per TTL (plus one when the asker
    # is the removed user, who is refused and replaced).
    assert checked == 0
    assert filtered <= elapsed / TTL_SECONDS + 2
    assert await gw.metric("roomcast_gateway_revalidation_ended_subscriptions_total") == 1
    for client in stayers:
        assert not frames_of(client, room, "unsubscribed")
    await assert_cut_off(stayers[0], stayers[-1], kicked, room)


async def test_a_rooms_without_filter_members_is_asked_per_member_and_still_ends_access(
    open_ws: OpenWs,
    gw_jwks: JwksServer,
    gw_nats: NatsServer,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    # An older rooms during a rolling upgrade: FilterMembers answers UNIMPLEMENTED.
    old_rooms = FakeRooms(
        TokenVerifier.from_jwks(signer.jwks(), issuer=TEST_ISSUER, audience=TEST_AUDIENCE),
        filter_members_implemented=False,
    )
    await old_rooms.start()
    try:
        env = {
            **base_env(gw_nats.url, gw_jwks.url, old_rooms.target),
            **FAST,
            "ROOMCAST_GATEWAY_MEMBERSHIP_CACHE_TTL_SECONDS": str(TTL_SECONDS),
            "ROOMCAST_GATEWAY_MEMBERSHIP_REVALIDATE_INTERVAL_SECONDS": str(SWEEP_SECONDS),
        }
        gw = await spawn(env, "gw-old-rooms")
        alice, bob = make_user(signer), make_user(signer)
        room = room_with(old_rooms, alice.id, bob.id)
        watcher = await open_ws(gw.ws_url, alice)
        kicked = await open_ws(gw.ws_url, bob)
        for client in (watcher, kicked):
            assert (await client.subscribe(room))["type"] == "subscribed"
        checked = old_rooms.method_calls["CheckMembership"]

        del old_rooms.rooms[room].members[bob.id]  # removed, and no event is ever published
        removed = time.monotonic()
        bound = TTL_SECONDS + SWEEP_SECONDS
        ended = await kicked.expect(
            lambda f: f.get("type") == "unsubscribed" and f.get("room") == room,
            within=bound + SLACK_SECONDS,
        )
        assert ended["reason"] == "member_removed"
        assert time.monotonic() - removed < bound + SLACK_SECONDS
        # The sweep tried FilterMembers, was refused, and asked per member instead.
        assert old_rooms.method_calls["FilterMembers"] >= 1
        assert old_rooms.method_calls["CheckMembership"] > checked
        assert await gw.metric("roomcast_gateway_revalidation_ended_subscriptions_total") == 1
        await assert_cut_off(watcher, watcher, kicked, room)
        # The member, re-checked by the same sweeps, keeps their subscription.
        assert not frames_of(watcher, room, "unsubscribed")
    finally:
        await spawn.stop_all()
        await old_rooms.stop()
