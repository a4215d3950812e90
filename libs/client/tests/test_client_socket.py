"""RoomcastSocket against the in-test fake gateway: handshake, send/ack, items, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roomcast.client import (
    Ack,
    ConnectionClosed,
    ErrorFrame,
    Event,
    Gap,
    Item,
    Message,
    RequestRejected,
    RoomcastSocket,
    Unsubscribed,
    connect,
)

ROOM = "a" * 24
OTHER_ROOM = "b" * 24
FAST = {"backoff_initial": 0.01, "start_timeout": 10.0}


async def next_item(sock: RoomcastSocket, kind: type[Any] = object) -> Item:
    """The next item of the given type (earlier items of other types are skipped)."""
    async with asyncio.timeout(10):
        async for item in sock:
            if isinstance(item, kind):
                return item
    raise AssertionError("socket ended")


async def test_client_auth_then_ready(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, user = backend.add_user("alice")
    sock = await connect(gateway.url, token, **FAST)
    try:
        assert sock.connected
        assert sock.user == user
        assert sock.url == f"ws://127.0.0.1:{gateway.port}/v1/ws"
        assert gateway.received[0] == {"type": "auth", "token": token}
        assert sock.stats.connects == 1
        assert sock.stats.reconnects == 0
        assert await sock.ping() > 0
    finally:
        await sock.close()
    assert not sock.connected


async def test_client_bad_token_is_fatal_after_one_retry(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    with pytest.raises(ConnectionClosed) as info:
        await connect(gateway.url, "not-a-token", **FAST)
    assert info.value.code == 4001
    assert "invalid_token" in info.value.reason
    # one retry (a token provider may hand out a fresh token), then give up
    assert len(gateway.frames("auth")) == 2


async def test_client_send_is_acked_and_echoed(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, user = backend.add_user("alice")
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        subscribed = await sock.subscribe(ROOM)
        assert subscribed.seq == 0
        assert not subscribed.resumed
        ack = await sock.send(ROOM, "hello", client_id="c-1")
        assert ack == Ack(client_id="c-1", id="m1", seq=1, duplicate=False)
        message = await next_item(sock, Message)
        assert isinstance(message, Message)
        assert (message.room, message.seq, message.prev, message.content) == (ROOM, 1, 0, "hello")
        assert message.sender.id == user["id"]
        assert message.sender.username == "alice"
        assert not message.replayed
        assert sock.last_seq(ROOM) == 1
        assert sock.stats.sent == sock.stats.acks == sock.stats.messages == 1
        assert gateway.frames("send")[0] == {
            "type": "send",
            "room": ROOM,
            "client_id": "c-1",
            "body": {"type": "text", "content": "hello"},
        }


async def test_client_pipelined_sends_resolve_in_order(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, _user = backend.add_user("alice")
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        futures = [sock.send_future(ROOM, f"m{i}") for i in range(50)]
        acks = await asyncio.gather(*futures)
        assert [a.seq for a in acks] == list(range(1, 51))
        assert len({a.client_id for a in acks}) == 50
        assert [m["body"]["content"] for m in backend.messages(ROOM)] == [
            f"m{i}" for i in range(50)
        ]


async def test_client_gap_and_duplicate_detection(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, user = backend.add_user("alice")
    gaps: list[Gap] = []
    async with RoomcastSocket(gateway.url, token, on_gap=gaps.append, **FAST) as sock:
        await sock.subscribe(ROOM)

        def msg(seq: int, prev: int) -> dict[str, Any]:
            return {
                "type": "message",
                "room": ROOM,
                "id": f"x{seq}",
                "seq": seq,
                "prev": prev,
                "sender": user,
                "body": {"type": "text", "content": str(seq)},
                "sent_at": 0,
            }

        await gateway.push(msg(5, 0))  # chain ok (head was 0)
        await gateway.push(msg(5, 0))  # duplicate: dropped
        await gateway.push(msg(9, 7))  # gap: 7 != 5
        await gateway.push(msg(3, 0))  # duplicate (older): dropped
        await gateway.push(msg(12, 9))  # chain ok again
        got = [await next_item(sock, Message) for _ in range(3)]
        assert [m.seq for m in got if isinstance(m, Message)] == [5, 9, 12]
        assert sock.stats.duplicates == 2
        assert sock.stats.gaps == 1
        assert gaps == [Gap(room=ROOM, expected_prev=5, prev=7, seq=9)]
        assert sock.last_seq(ROOM) == 12


async def test_client_skip_frames_advance_the_chain(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token_a, _alice = backend.add_user("alice")
    _token_b, bob = backend.add_user("bob")
    _token_c, carol = backend.add_user("carol")
    async with RoomcastSocket(gateway.url, token_a, **FAST) as sock:
        await sock.subscribe(ROOM)
        await backend.publish(ROOM, bob, "psst carol", to=carol["id"])
        await backend.publish(ROOM, bob, "hi all")
        message = await next_item(sock, Message)
        assert isinstance(message, Message)
        assert message.content == "hi all"
        assert (message.seq, message.prev) == (2, 1)
        assert sock.stats.skips == 1
        assert sock.stats.gaps == 0
        assert sock.stats.messages == 1


async def test_client_private_message_reaches_recipient(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token_a, _alice = backend.add_user("alice")
    token_b, bob = backend.add_user("bob")
    async with (
        RoomcastSocket(gateway.url, token_a, **FAST) as alice_sock,
        RoomcastSocket(gateway.url, token_b, **FAST) as bob_sock,
    ):
        await bob_sock.subscribe(ROOM)
        await alice_sock.send(ROOM, "for bob", to=bob["id"])
        message = await next_item(bob_sock, Message)
        assert isinstance(message, Message)
        assert message.to == bob["id"]
        assert message.content == "for bob"


async def test_client_error_frame_rejects_the_send(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, _user = backend.add_user("alice")
    backend.forbidden_rooms.add(OTHER_ROOM)
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        with pytest.raises(RequestRejected) as info:
            await sock.send(OTHER_ROOM, "nope", client_id="c-9")
        assert (info.value.code, info.value.ref) == ("forbidden", "c-9")
        with pytest.raises(RequestRejected) as sub_info:
            await sock.subscribe(OTHER_ROOM)
        assert sub_info.value.code == "forbidden"
        assert OTHER_ROOM not in sock.rooms  # not retried on reconnect
        # an error that answers nothing pending is an item
        await gateway.push({"type": "error", "code": "slow_down", "message": "careful"})
        assert await next_item(sock, ErrorFrame) == ErrorFrame("slow_down", "careful")
        assert sock.stats.rejected == 3
        # the session is still usable
        assert (await sock.send(ROOM, "fine")).seq == 1


async def test_client_events_and_server_unsubscribe(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, _user = backend.add_user("alice")
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        await sock.subscribe(ROOM)
        event = {"type": "event", "room": ROOM, "event": "member_joined", "user_id": "u"}
        await gateway.push(event)
        assert await next_item(sock) == Event(ROOM, "member_joined", event)
        await gateway.push({"type": "unsubscribed", "room": ROOM, "reason": "kicked"})
        assert await next_item(sock) == Unsubscribed(ROOM, "kicked")
        assert sock.rooms == []


async def test_client_unsubscribe(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, _user = backend.add_user("alice")
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        await sock.subscribe(ROOM)
        await sock.unsubscribe(ROOM)
        assert sock.rooms == []
        assert gateway.frames("unsubscribe") == [{"type": "unsubscribe", "room": ROOM}]


async def test_client_close_fails_pending_and_ends_iteration(
    backend: Any, start_gateway: Any
) -> None:
    gateway = await start_gateway()
    gateway.hold_acks = True
    token, _user = backend.add_user("alice")
    sock = await connect(gateway.url, token, **FAST)
    pending = sock.send_future(ROOM, "never acked")
    reader = asyncio.ensure_future(next_item(sock))
    await sock.close()
    with pytest.raises(ConnectionClosed) as info:
        await pending
    assert info.value.code == 1000
    with pytest.raises(AssertionError, match="socket ended"):
        await reader
    with pytest.raises(ConnectionClosed):
        await sock.send(ROOM, "after close")


async def test_client_forbidden_close_is_fatal(backend: Any, start_gateway: Any) -> None:
    gateway = await start_gateway()
    token, _user = backend.add_user("alice")
    sock = await connect(gateway.url, token, **FAST)
    await gateway.close_all(4003, "banned")
    with pytest.raises(ConnectionClosed) as info:
        await next_item(sock)
    assert (info.value.code, info.value.reason) == (4003, "banned")
    assert sock.stats.close_codes[4003] == 1
    assert len(gateway.frames("auth")) == 1  # no reconnect attempt
    await sock.close()


async def test_client_on_item_callback_mode(
    backend: Any, start_gateway: Any, eventually: Any
) -> None:
    gateway = await start_gateway()
    token, _user = backend.add_user("alice")
    seen: list[Item] = []
    async with RoomcastSocket(gateway.url, token, on_item=seen.append, **FAST) as sock:
        await sock.subscribe(ROOM)
        for i in range(3):
            await sock.send(ROOM, f"m{i}")
        await eventually(lambda: len(seen) == 3, "three messages")
        assert [m.content for m in seen if isinstance(m, Message)] == ["m0", "m1", "m2"]


async def test_client_rate_limited_send_is_retried_with_same_client_id(
    backend: Any, start_gateway: Any
) -> None:
    gateway = await start_gateway()
    gateway.rate_limit_sends = 2
    token, _user = backend.add_user("alice")
    async with RoomcastSocket(gateway.url, token, **FAST) as sock:
        await sock.subscribe(ROOM)
        ack = await sock.send(ROOM, "patience", client_id="slow-1")
        assert ack.seq == 1
        assert [f["client_id"] for f in gateway.frames("send")] == ["slow-1"] * 3
        assert sock.stats.retried_sends == 2
        assert len(backend.messages(ROOM)) == 1
