"""Room life on the whole stack, two gateways, through the public contract only (REST +
the SDK): direct messages, private messages to members only, membership events live on
every gateway, presence and typing across gateways, sessions ending on logout and on a
reused refresh token, and a killed gateway's users going offline."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from e2e_helpers import PASSWORD, Collector, open_socket

from roomcast.client import (
    ApiError,
    Event,
    Presence,
    RateLimited,
    RequestRejected,
    RoomcastHttp,
    RoomcastSocket,
    Typing,
    Unsubscribed,
)
from roomcast.testing.stack import Stack

# The contract: a removed member's subscriptions end within one second on every gateway.
REMOVAL_DEADLINE_SECONDS = 1.0
# Default presence settings: 3 missed heartbeats of 2 s, checked every 0.5 s.
DEAD_GATEWAY_BOUND_SECONDS = 6.5
# Delivering the offline event on a loaded 2-core machine, on top of the bound.
DELIVERY_SLACK_SECONDS = 2.0


# Accounts registered once per test session. auth allows 10 registrations and 10 logins
# per 30 s per IP (and the other end-to-end tests log in too), so a test continues the
# previous test's session of an account with its refresh token (not rate limited) and
# logs in only when there is none (first use, or the session was logged out).
_ACCOUNTS: dict[str, str] = {}
_SESSIONS: dict[str, RoomcastHttp] = {}
# Longest a test waits for auth's rate limit to let a login or registration through.
RATE_LIMIT_PATIENCE_SECONDS = 60.0


async def _retrying(call: Callable[[], Awaitable[Any]]) -> Any:
    """``call()``, retried after the Retry-After auth's rate limit answers with."""
    deadline = time.monotonic() + RATE_LIMIT_PATIENCE_SECONDS
    while True:
        try:
            return await call()
        except RateLimited as exc:
            if time.monotonic() + exc.retry_after > deadline:
                raise
            await asyncio.sleep(exc.retry_after)  # the server said when to come back


async def login_as(base_url: str, role: str) -> RoomcastHttp:
    """A client of the account playing ``role`` in these tests."""
    http = RoomcastHttp(base_url)
    previous = _SESSIONS.get(role)
    if previous is not None and previous.refresh_token is not None:
        http.refresh_token, previous.refresh_token = previous.refresh_token, None
        try:
            await http.refresh()
        except ApiError:
            http.refresh_token = None  # logged out meanwhile: log in again
        else:
            _SESSIONS[role] = http
            return http
    username = _ACCOUNTS.get(role)
    if username is None:
        username = f"{role}{uuid.uuid4().hex[:10]}"
        await _retrying(lambda: http.register(username, PASSWORD))
        _ACCOUNTS[role] = username
    await _retrying(lambda: http.login(username, PASSWORD))
    _SESSIONS[role] = http
    return http


def uid(http: RoomcastHttp) -> str:
    assert http.user is not None
    return str(http.user["id"])


def events(c: Collector, room: str, kind: str) -> list[Event]:
    return [i for i in c.items if isinstance(i, Event) and i.room == room and i.event == kind]


def ended(c: Collector, room: str) -> list[Unsubscribed]:
    return [i for i in c.items if isinstance(i, Unsubscribed) and i.room == room]


def presence_changes(c: Collector, room: str, user_id: str, status: str) -> list[Presence]:
    return [
        i
        for i in c.items
        if isinstance(i, Presence)
        and i.room == room
        and i.data.get("status") == status
        and i.data["user"]["id"] == user_id
    ]


async def online(sock: RoomcastSocket, c: Collector, room: str) -> list[str]:
    """Ask who is online; the user ids of the answer."""
    before = len(c.items)
    assert sock.presence(room)

    def answer() -> Presence | None:
        for item in c.items[before:]:
            if isinstance(item, Presence) and item.room == room and "online" in item.data:
                return item
        return None

    await c.wait_for(lambda: answer() is not None, "presence answer")
    found = answer()
    assert found is not None
    return [u["id"] for u in found.data["online"]]


async def close_all(socks: list[RoomcastSocket], https: list[RoomcastHttp]) -> None:
    for sock in socks:
        await sock.close()
    for http in https:
        await http.aclose()


async def test_direct_messages_between_two_users_on_two_gateways(e2e_stack: Stack) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob, carol = (
        await login_as(url_a, "alice"),
        await login_as(url_b, "bob"),
        await login_as(url_a, "carol"),
    )
    socks: list[RoomcastSocket] = []
    try:
        dm = await alice.open_dm(uid(bob))
        assert dm["visibility"] == "direct"
        assert (await bob.open_dm(uid(alice)))["id"] == dm["id"]  # the same room, whoever asks
        room = dm["id"]
        sa, ca = await open_socket([url_a], alice)
        sb, cb = await open_socket([url_b], bob)
        sc, _ = await open_socket([url_a], carol)
        socks = [sa, sb, sc]
        await sa.subscribe(room)
        await sb.subscribe(room)
        acks = [await sa.send(room, "hi bob"), await sb.send(room, "hi alice")]
        for c in (ca, cb):
            await c.wait_for(lambda c=c: len(c.seqs(room)) == 2, "both DMs")
            assert c.seqs(room) == [a.seq for a in acks]
            texts = [m.content for m in c.messages if m.room == room]
            assert texts == ["hi bob", "hi alice"]
        # a third user cannot read, join or write
        with pytest.raises(RequestRejected) as refused:
            await sc.subscribe(room)
        assert refused.value.code == "not_found"
        with pytest.raises(RequestRejected) as refused:
            await sc.send(room, "let me in")
        assert refused.value.code == "not_found"
        async with httpx.AsyncClient() as raw:
            join = await raw.post(
                f"{url_b}/v1/rooms/{room}/join",
                json={},
                headers={"Authorization": f"Bearer {carol.access_token}"},
            )
        assert join.status_code in (403, 404, 409)
        # presence and typing work there as in any room
        assert set(await online(sa, ca, room)) == {uid(alice), uid(bob)}
        assert sb.typing(room)
        await ca.wait_for(
            lambda: any(isinstance(i, Typing) and i.room == room for i in ca.items), "typing"
        )
    finally:
        await close_all(socks, [alice, bob, carol])


async def test_private_messages_go_to_members_only(e2e_stack: Stack) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob, carol, dave = (
        await login_as(url_a, "alice"),
        await login_as(url_b, "bob"),
        await login_as(url_b, "carol"),
        await login_as(url_a, "dave"),
    )
    socks: list[RoomcastSocket] = []
    try:
        room = (await alice.create_room("whispers"))["id"]
        await bob.join_room(room)
        await carol.join_room(room)
        sa, ca = await open_socket([url_a], alice)
        sb, cb = await open_socket([url_b], bob)
        sc, cc = await open_socket([url_b], carol)
        socks = [sa, sb, sc]
        for sock in socks:
            await sock.subscribe(room)
        opening = await sa.send(room, "hello all")
        # dave is no member: refused, named by its client_id, nothing stored
        with pytest.raises(RequestRejected) as refused:
            await sa.send(room, "psst dave", to=uid(dave), client_id="to-dave-1")
        assert (refused.value.code, refused.value.ref) == ("recipient_not_member", "to-dave-1")
        secret = await sa.send(room, "psst bob", to=uid(bob))
        closing = await sb.send(room, "bye")
        for c in (ca, cb, cc):
            await c.wait_for(lambda c=c: closing.seq in c.seqs(room), "the last message")
        assert cb.seqs(room) == [opening.seq, secret.seq, closing.seq]
        assert ca.seqs(room) == [opening.seq, secret.seq, closing.seq]
        private = next(m for m in cb.messages if m.seq == secret.seq)
        assert private.content == "psst bob"
        # carol gets the chain link, never the content, and sees no gap
        assert cc.seqs(room) == [opening.seq, closing.seq]
        assert sc.stats.skips == 1
        assert sc.stats.gaps == 0
        # bob leaves: private messages to him are refused at once (event-invalidated cache)
        await bob.leave_room(room)
        await cb.wait_for(lambda: bool(ended(cb, room)), "bob's subscription ended")
        # once alice's gateway has the event (it invalidates before relaying it)
        await ca.wait_for(lambda: bool(events(ca, room, "member_left")), "member_left on A")
        with pytest.raises(RequestRejected) as refused:
            await sa.send(room, "psst bob, still there?", to=uid(bob))
        assert refused.value.code == "recipient_not_member"
    finally:
        await close_all(socks, [alice, bob, carol, dave])


async def test_membership_events_reach_every_gateway_live(e2e_stack: Stack) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob, carol = (
        await login_as(url_a, "alice"),
        await login_as(url_b, "bob"),
        await login_as(url_a, "carol"),
    )
    socks: list[RoomcastSocket] = []
    try:
        room = (await alice.create_room("lively", visibility="public"))["id"]
        await bob.join_room(room)
        sa, ca = await open_socket([url_a], alice)
        sb, cb = await open_socket([url_b], bob)
        socks = [sa, sb]
        await sa.subscribe(room)
        await sb.subscribe(room)
        watchers = [ca, cb]

        await carol.join_room(room)
        for c in watchers:
            await c.wait_for(lambda c=c: bool(events(c, room, "member_joined")), "member_joined")
            assert events(c, room, "member_joined")[0].data["user_id"] == uid(carol)
        # carol on both gateways at once
        sc_a, cc_a = await open_socket([url_a], carol)
        sc_b, cc_b = await open_socket([url_b], carol)
        socks += [sc_a, sc_b]
        await sc_a.subscribe(room)
        await sc_b.subscribe(room)
        await ca.wait_for(
            lambda: bool(presence_changes(ca, room, uid(carol), "online")), "carol online"
        )

        await alice.set_member_role(room, uid(bob), "admin")
        await alice.update_room(room, topic="now with topics")
        for c in [*watchers, cc_a, cc_b]:
            await c.wait_for(lambda c=c: bool(events(c, room, "room_updated")), "room_updated")
            changed = events(c, room, "role_changed")
            assert [(e.data["user_id"], e.data["role"]) for e in changed] == [(uid(bob), "admin")]
            assert events(c, room, "room_updated")[0].data["room_info"]["topic"] == (
                "now with topics"
            )

        # a kick ends carol's subscriptions on both gateways within a second
        await bob.remove_member(room, uid(carol))
        kicked_at = time.monotonic()
        for c in (cc_a, cc_b):
            await c.wait_for(lambda c=c: bool(ended(c, room)), "carol's subscription ended")
        assert time.monotonic() - kicked_at < REMOVAL_DEADLINE_SECONDS
        assert [u.reason for u in ended(cc_a, room)] == ["member_removed"]
        for c in watchers:
            await c.wait_for(lambda c=c: bool(events(c, room, "member_removed")), "kick event")
            await c.wait_for(
                lambda c=c: bool(presence_changes(c, room, uid(carol), "offline")), "offline"
            )
        with pytest.raises(RequestRejected):
            await sc_a.send(room, "am I still here?")

        # bob leaves
        await bob.leave_room(room)
        left_at = time.monotonic()
        await cb.wait_for(lambda: bool(ended(cb, room)), "bob's subscription ended")
        assert time.monotonic() - left_at < REMOVAL_DEADLINE_SECONDS
        assert ended(cb, room)[0].reason == "member_left"
        await ca.wait_for(lambda: bool(events(ca, room, "member_left")), "member_left")

        # the room goes: alice's subscription ends too
        await alice.delete_room(room)
        await ca.wait_for(lambda: bool(ended(ca, room)), "room_deleted")
        assert ended(ca, room)[0].reason == "room_deleted"
        assert events(ca, room, "room_deleted")
    finally:
        await close_all(socks, [alice, bob, carol])


async def _wait_closed_with(sock: RoomcastSocket, code: int) -> None:
    async with asyncio.timeout(30):
        while sock.stats.close_codes[code] == 0:  # noqa: ASYNC110 - SDK state, no event
            await asyncio.sleep(0.05)


async def test_logout_and_reused_refresh_token_close_the_sessions_sockets(
    e2e_stack: Stack,
) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice = await login_as(url_a, "alice")
    bob = await login_as(url_b, "bob")
    # bob on a second device: a session of its own
    bob_phone = RoomcastHttp(url_a)
    assert bob.user is not None
    await _retrying(lambda: bob_phone.login(str(bob.user["username"]), PASSWORD))
    socks: list[RoomcastSocket] = []
    try:
        room = (await alice.create_room("sessions"))["id"]
        await bob.join_room(room)
        sa, ca = await open_socket([url_a], alice)
        laptop = [await open_socket([url], bob) for url in (url_a, url_b)]
        phone, phone_items = await open_socket([url_b], bob_phone)
        socks = [sa, phone, *(s for s, _ in laptop)]
        for sock in socks:
            await sock.subscribe(room)

        # the phone's refresh token is used twice: its whole family is revoked
        stolen = bob_phone.refresh_token
        await bob_phone.refresh()
        async with httpx.AsyncClient() as raw:
            reuse = await raw.post(f"{url_a}/v1/auth/refresh", json={"refresh_token": stolen})
        assert reuse.status_code == 401
        await _wait_closed_with(phone, 4001)
        # the laptop's sockets, another session, stay
        ack = await laptop[1][0].send(room, "laptop still here")
        await ca.wait_for(lambda: ack.seq in ca.seqs(room), "laptop message")
        assert all(s.stats.close_codes[4001] == 0 for s, _ in laptop)
        # bob is still online through the laptop
        assert presence_changes(ca, room, uid(bob), "offline") == []

        # logout on the laptop: its sockets close on both gateways, bob goes offline
        await bob.logout()
        for sock, _ in laptop:
            await _wait_closed_with(sock, 4001)
        await ca.wait_for(
            lambda: bool(presence_changes(ca, room, uid(bob), "offline")), "bob offline"
        )
        assert phone_items is not None
    finally:
        await close_all(socks, [alice, bob, bob_phone])


async def test_killed_gateway_users_go_offline_within_the_documented_bound(
    e2e_stack: Stack,
) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob = await login_as(url_b, "alice"), await login_as(url_a, "bob")
    socks: list[RoomcastSocket] = []
    try:
        room = (await alice.create_room("ghosts"))["id"]
        await bob.join_room(room)
        sa, ca = await open_socket([url_b], alice)
        # bob's socket will not reconnect elsewhere: it must vanish, not move
        sb, _ = await open_socket([url_a], bob, reconnect=False)
        socks = [sa, sb]
        await sa.subscribe(room)
        await sb.subscribe(room)
        await ca.wait_for(lambda: bool(presence_changes(ca, room, uid(bob), "online")), "online")
        killed_at = time.monotonic()
        e2e_stack.services["gateway-a"].kill()
        await ca.wait_for(
            lambda: bool(presence_changes(ca, room, uid(bob), "offline")), "bob offline"
        )
        elapsed = time.monotonic() - killed_at
        assert elapsed <= DEAD_GATEWAY_BOUND_SECONDS + DELIVERY_SLACK_SECONDS, elapsed
        assert await online(sa, ca, room) == [uid(alice)]
    finally:
        await close_all(socks, [alice, bob])
        e2e_stack.restart("gateway-a")
