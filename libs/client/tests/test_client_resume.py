"""Reconnect, resume and exactly-once sends across gateway restarts (fake gateways)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from typing import Any

import pytest

from roomcast.client import (
    ConnectionClosed,
    Item,
    Message,
    RoomcastSocket,
    SendUnconfirmed,
    Subscribed,
    Unsubscribed,
    connect,
)
from roomcast.testing.processes import free_port

ROOM = "a" * 24
OTHER_ROOM = "b" * 24
FAST = {"backoff_initial": 0.01, "start_timeout": 10.0}


async def next_item(sock: RoomcastSocket, kind: type[Any] = object) -> Item:
    async with asyncio.timeout(10):
        async for item in sock:
            if isinstance(item, kind):
                return item
    raise AssertionError("socket ended")


class TokenProvider:
    """Hands out the next token on every call (a fresh token per connect)."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.calls = 0

    async def __call__(self) -> str:
        token = self.tokens[min(self.calls, len(self.tokens) - 1)]
        self.calls += 1
        return token


async def test_client_resume_on_other_gateway_after_1012(
    backend: Any, start_gateway: Any, eventually: Any
) -> None:
    gw1 = await start_gateway()
    gw2 = await start_gateway()
    token1, alice = backend.add_user("alice")
    token2 = "token-alice-2"
    backend.users_by_token[token2] = alice
    _token_b, bob = backend.add_user("bob")
    provider = TokenProvider([token1, token2])
    sock = await connect([gw1.url, gw2.url], provider, **FAST)
    try:
        await sock.subscribe(ROOM)
        assert (await sock.send(ROOM, "one")).seq == 1

        # The gateway stores the next send but "dies" before acking it (its live copy
        # still arrives).
        gw1.hold_acks = True
        pending = sock.send_future(ROOM, "two", client_id="c-two")
        await eventually(lambda: sock.last_seq(ROOM) == 2, "the live copy of 'two'")
        # Two messages the client never sees live (in flight when the gateway died).
        await backend.publish(ROOM, bob, "missed 1", fanout=False)
        await backend.publish(ROOM, bob, "missed 2", fanout=False)
        await gw1.close_all(1012, "restarting")

        async with asyncio.timeout(10):
            ack = await pending
        assert (ack.client_id, ack.seq, ack.duplicate) == ("c-two", 2, True)
        # exactly once: the retried send did not create a second message
        assert [m["body"]["content"] for m in backend.messages(ROOM)] == [
            "one",
            "two",
            "missed 1",
            "missed 2",
        ]

        # re-auth with a fresh token, on the next gateway, resuming from the last seq
        assert provider.calls == 2
        assert gw2.received[0] == {"type": "auth", "token": token2}
        await eventually(lambda: gw2.frames("subscribe") != [], "the resume on gw2")
        assert gw2.frames("subscribe") == [{"type": "subscribe", "room": ROOM, "since": 2}]
        # Its live copy (our user, our client_id) proved it stored: acked, not re-sent.
        assert gw2.frames("send") == []
        assert sock.url == f"ws://127.0.0.1:{gw2.port}/v1/ws"

        items = [await next_item(sock) for _ in range(5)]
        messages = [i for i in items if isinstance(i, Message)]
        assert [m.content for m in messages] == ["one", "two", "missed 1", "missed 2"]
        assert [m.replayed for m in messages] == [False, False, True, True]
        resumed = [i for i in items if isinstance(i, Subscribed)]
        assert resumed == [Subscribed(ROOM, seq=4, since=2, truncated=False, resumed=True)]

        stats = sock.stats
        assert (stats.reconnects, stats.resumed_messages, stats.retried_sends) == (1, 2, 0)
        assert (stats.duplicate_acks, stats.gaps, stats.duplicates) == (1, 0, 0)
        assert stats.close_codes[1012] == 1
    finally:
        await sock.close()


async def test_client_second_url_when_first_refuses(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, _user = backend.add_user("alice")
    dead = f"http://127.0.0.1:{free_port()}"
    async with RoomcastSocket([dead, gateway.url], token, **FAST) as sock:
        assert sock.url == f"ws://127.0.0.1:{gateway.port}/v1/ws"
        assert sock.stats.connect_failures == 1
        assert sock.stats.connects == 1


async def test_client_reauth_after_token_expiry_close(
    backend: Any, start_gateway: Any, eventually: Any
) -> None:
    gateway = await start_gateway()
    token1, alice = backend.add_user("alice")
    backend.users_by_token["token-2"] = alice
    provider = TokenProvider([token1, "token-2"])
    async with RoomcastSocket(gateway.url, provider, **FAST) as sock:
        await sock.subscribe(ROOM)
        await gateway.close_all(4001, "token_expired")
        await eventually(lambda: sock.stats.reconnects == 1, "a reconnect")
        assert [f["token"] for f in gateway.frames("auth")] == [token1, "token-2"]
        assert sock.stats.close_codes[4001] == 1
        # the subscription came back: live messages flow again
        assert (await sock.send(ROOM, "after")).seq == 1
        message = await next_item(sock, Message)
        assert isinstance(message, Message)
        assert message.content == "after"


async def test_client_truncated_resume_is_not_a_gap(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, _alice = backend.add_user("alice")
    _token_b, bob = backend.add_user("bob")
    backend.replay_limit = 1
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        await sock.subscribe(ROOM)
        await sock.send(ROOM, "seen")
        for i in range(3):
            await backend.publish(ROOM, bob, f"missed {i}", fanout=False)
        await gateway.close_all(1012)
        resumed = await next_item(sock, Subscribed)
        assert resumed == Subscribed(ROOM, seq=4, since=1, truncated=True, resumed=True)
        message = await next_item(sock, Message)
        assert isinstance(message, Message)
        assert (message.content, message.prev, message.replayed) == ("missed 2", 3, True)
        assert sock.stats.truncated_resumes == 1
        assert sock.stats.gaps == 0


async def test_client_server_ended_subscription_is_not_resumed(
    backend: Any, start_gateway: Any, eventually: Any
) -> None:
    gateway = await start_gateway()
    token, _user = backend.add_user("alice")
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        await sock.subscribe(ROOM)
        await sock.subscribe(OTHER_ROOM)
        await gateway.push({"type": "unsubscribed", "room": OTHER_ROOM, "reason": "room_deleted"})
        await eventually(lambda: sock.rooms == [ROOM], "the room to be dropped")
        await gateway.close_all(1012)
        await eventually(lambda: len(gateway.frames("subscribe")) == 3, "the resubscribe")
        assert gateway.frames("subscribe")[-1] == {"type": "subscribe", "room": ROOM, "since": 0}


async def test_client_gives_up_after_deadline(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, _user = backend.add_user("alice")
    sock = await connect(gateway.url, token, give_up_after=0.3, **FAST)
    await gateway.stop()  # closes the connection (1001) and refuses new ones
    with pytest.raises(ConnectionClosed):
        await next_item(sock)
    assert sock.stats.close_codes[1001] == 1
    assert sock.stats.connect_failures >= 1
    with pytest.raises(ConnectionClosed):
        await sock.send(ROOM, "too late")
    await sock.close()


async def test_client_backpressure_keeps_order(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, _alice = backend.add_user("alice")
    _token_b, bob = backend.add_user("bob")
    count = 500
    async with RoomcastSocket(gateway.url, token, max_buffered_items=5, **FAST) as sock:
        await sock.subscribe(ROOM)

        async def publish() -> None:
            for i in range(count):
                await backend.publish(ROOM, bob, f"m{i}-" + "x" * 200)

        publisher = asyncio.create_task(publish())
        got = [await next_item(sock, Message) for _ in range(count)]
        await publisher
        assert [m.seq for m in got if isinstance(m, Message)] == list(range(1, count + 1))
        assert (sock.stats.gaps, sock.stats.duplicates, sock.stats.messages) == (0, 0, count)
        assert sock.stats.read_pauses >= 1  # the buffer filled: reading stopped and resumed
        assert (sock.stats.reconnects, sock.stats.close_codes) == (0, {})


async def test_client_draining_gateway_requests_move_to_the_next(
    backend: Any, start_gateway: Any
) -> None:
    gw1 = await start_gateway()
    gw2 = await start_gateway()
    token, _alice = backend.add_user("alice")
    async with RoomcastSocket([gw1.url, gw2.url], token, **FAST) as sock:
        gw1.draining = True  # refuses with gateway_restarting, then closes 1012
        subscribing = asyncio.ensure_future(sock.subscribe(ROOM))
        sending = sock.send_future(ROOM, "during drain", client_id="c-drain")
        async with asyncio.timeout(10):
            subscribed = await subscribing
            ack = await sending
        assert subscribed.room == ROOM
        assert (ack.client_id, ack.duplicate) == ("c-drain", False)
        assert [m["body"]["content"] for m in backend.messages(ROOM)] == ["during drain"]
        assert sock.url == f"ws://127.0.0.1:{gw2.port}/v1/ws"
        assert sock.stats.close_codes[1012] == 1
        assert gw2.frames("send")[0]["client_id"] == "c-drain"


async def test_client_resume_retries_a_transient_refusal(
    backend: Any, start_gateway: Any, eventually: Any
) -> None:
    gateway = await start_gateway()
    token, _alice = backend.add_user("alice")
    _token_b, bob = backend.add_user("bob")
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        await sock.subscribe(ROOM)
        backend.fail_subscribes = ["unavailable"]
        await gateway.close_all(1012)
        # initial + refused resume + retried resume (same connection)
        await eventually(lambda: len(gateway.frames("subscribe")) == 3, "the retried resume")
        assert sock.stats.reconnects == 1
        assert sock.rooms == [ROOM]
        await eventually(lambda: any(c.subs for c in gateway.conns), "the live subscription")
        await backend.publish(ROOM, bob, "still here")
        message = await next_item(sock, Message)
        assert isinstance(message, Message)
        assert message.content == "still here"


async def test_client_resume_refused_for_good_ends_the_room(
    backend: Any, start_gateway: Any
) -> None:
    gateway = await start_gateway()
    token, _alice = backend.add_user("alice")
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        await sock.subscribe(ROOM)
        backend.forbidden_rooms.add(ROOM)  # kicked while away
        await gateway.close_all(1012)
        assert await next_item(sock, Unsubscribed) == Unsubscribed(ROOM, "forbidden")
        assert sock.rooms == []


def fake_jwt(exp: float) -> str:
    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'none'})}.{seg({'exp': int(exp), 'n': os.urandom(4).hex()})}.x"


async def test_client_renews_the_token_on_the_live_socket(
    backend: Any, start_gateway: Any, eventually: Any
) -> None:
    gateway = await start_gateway()
    _token, alice = backend.add_user("alice")
    issued: list[str] = []

    async def provider() -> str:
        token = fake_jwt(time.time() + 2)  # renewed ~0.4 s before it expires
        backend.users_by_token[token] = alice
        issued.append(token)
        return token

    async with RoomcastSocket(gateway.url, provider, **FAST) as sock:
        await eventually(lambda: sock.stats.reauths >= 1, "a token renewal")
        assert [f["token"] for f in gateway.frames("auth")][:2] == issued[:2]
        assert sock.stats.connects == 1  # same socket, no reconnect
        assert sock.stats.close_codes == {}


async def test_client_unacked_send_past_the_resend_window_in_an_unwatched_room_is_unconfirmed(
    backend: Any, start_gateway: Any, eventually: Any
) -> None:
    gw = await start_gateway()
    token, _alice = backend.add_user("alice")
    # resend_window=0: every transmitted send counts as older than the server's window.
    sock = await connect([gw.url], token, resend_window=0.0, **FAST)
    try:
        gw.hold_acks = True
        pending = sock.send_future(OTHER_ROOM, "stored, ack lost")  # room not subscribed
        await eventually(lambda: len(backend.messages(OTHER_ROOM)) == 1, "the stored message")
        await gw.close_all(1012, "restarting")
        with pytest.raises(SendUnconfirmed) as info:
            async with asyncio.timeout(10):
                await pending
        assert (info.value.code, info.value.ref) == ("unconfirmed", pending_client_id(gw))
        await eventually(lambda: sock.stats.reconnects == 1, "the reconnect")
        # Not re-sent: a resend past the window would have stored it twice.
        assert len(gw.frames("send")) == 1
        assert len(backend.messages(OTHER_ROOM)) == 1
        assert sock.stats.unconfirmed_sends == 1
    finally:
        await sock.close()


def pending_client_id(gw: Any) -> str:
    return str(gw.frames("send")[0]["client_id"])
