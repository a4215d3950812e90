"""Moderation on the whole stack, two gateways, through the public contract only (REST +
the SDK): a ban removes the member from both gateways within a second and keeps them
out; a muted member is refused on every gateway but still reads; slow mode holds one
pace for a user whose sockets are on two gateways; the audit log tells who did it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from e2e_helpers import Collector, new_user, open_socket

from roomcast.client import (
    ApiError,
    ErrorFrame,
    RequestRejected,
    RoomcastHttp,
    RoomcastSocket,
    Unsubscribed,
)
from roomcast.testing.stack import Stack

# The contract: a banned member's subscriptions end within one second on every gateway.
REMOVAL_DEADLINE_SECONDS = 1.0


def uid(http: RoomcastHttp) -> str:
    assert http.user is not None
    return str(http.user["id"])


def ended(c: Collector, room: str) -> list[Unsubscribed]:
    return [i for i in c.items if isinstance(i, Unsubscribed) and i.room == room]


def refusals(c: Collector, code: str) -> list[ErrorFrame]:
    return [i for i in c.items if isinstance(i, ErrorFrame) and i.code == code]


async def close_all(socks: list[RoomcastSocket], https: list[RoomcastHttp]) -> None:
    for sock in socks:
        await sock.close()
    for http in https:
        await http.aclose()


async def test_a_ban_removes_the_member_from_both_gateways_and_keeps_them_out(
    e2e_stack: Stack,
) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    owner, bob = await new_user(url_a, "own"), await new_user(url_b, "bob")
    socks: list[RoomcastSocket] = []
    try:
        room = await owner.create_room("moderated", visibility="private")
        await bob.join_room(room["id"], invite_code=room["invite_code"])
        sa, ca = await open_socket([url_a], bob)
        sb, cb = await open_socket([url_b], bob)
        socks = [sa, sb]
        await sa.subscribe(room["id"])
        await sb.subscribe(room["id"])

        ban = await owner.ban(room["id"], uid(bob))
        banned_at = time.monotonic()
        assert (ban["user_id"], ban["actor_id"]) == (uid(bob), uid(owner))
        for c in (ca, cb):
            await c.wait_for(lambda c=c: bool(ended(c, room["id"])), "subscription ended")
        assert time.monotonic() - banned_at < REMOVAL_DEADLINE_SECONDS
        assert [u.reason for u in ended(ca, room["id"]) + ended(cb, room["id"])] == [
            "member_removed",
            "member_removed",
        ]
        with pytest.raises(RequestRejected):
            await sb.send(room["id"], "still here?")

        # Not with the code bob knew, nor with the new one, nor by subscribing.
        fresh = await owner.get_room(room["id"])
        assert fresh["invite_code"] != room["invite_code"]
        for code in (room["invite_code"], fresh["invite_code"]):
            with pytest.raises(ApiError) as refused:
                await bob.join_room(room["id"], invite_code=code)
            assert (refused.value.status, refused.value.code) == (403, "banned")

        audit = await owner.audit(room["id"])
        assert [(e["action"], e["target_user_id"]) for e in audit["items"]][:1] == [
            ("ban", uid(bob))
        ]

        await owner.unban(room["id"], uid(bob))
        await bob.join_room(room["id"], invite_code=fresh["invite_code"])
        await sa.subscribe(room["id"])
    finally:
        await close_all(socks, [owner, bob])


async def test_a_muted_member_is_refused_on_every_gateway_but_still_reads(
    e2e_stack: Stack,
) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    owner, carol = await new_user(url_a, "own"), await new_user(url_b, "car")
    socks: list[RoomcastSocket] = []
    try:
        room = (await owner.create_room("quiet", visibility="public"))["id"]
        await carol.join_room(room)
        so, _ = await open_socket([url_a], owner)
        sa, ca = await open_socket([url_a], carol)
        sb, cb = await open_socket([url_b], carol)
        socks = [so, sa, sb]
        for sock in socks:
            await sock.subscribe(room)
        before = await sa.send(room, "said before the mute")

        until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
        mute = await owner.mute(room, uid(carol), until)
        assert mute["user_id"] == uid(carol)
        for sock in (sa, sb):
            with pytest.raises(RequestRejected) as refused:
                await sock.send(room, "can you hear me?")
            assert refused.value.code == "muted"
        with pytest.raises(RequestRejected) as refused:
            await sb.edit(room, before.seq, "edited while muted")
        assert refused.value.code == "muted"
        assert sb.typing(room)
        await cb.wait_for(lambda: bool(refusals(cb, "muted")), "typing refused")

        # Reading still works.
        said = await so.send(room, "the owner speaks")
        for c in (ca, cb):
            await c.wait_for(lambda c=c: said.seq in c.seqs(room), "the owner's message")

        await owner.unmute(room, uid(carol))
        await sb.send(room, "back")
    finally:
        await close_all(socks, [owner, carol])


async def test_slow_mode_holds_one_pace_across_two_gateways(e2e_stack: Stack) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    owner, dave = await new_user(url_a, "own"), await new_user(url_b, "dav")
    socks: list[RoomcastSocket] = []
    try:
        room = (await owner.create_room("slow", visibility="public"))["id"]
        await dave.join_room(room)
        updated = await owner.update_room(room, slow_mode_seconds=3)
        assert updated["slow_mode_seconds"] == 3
        so, _ = await open_socket([url_b], owner)
        sa, _ = await open_socket([url_a], dave)
        sb, _ = await open_socket([url_b], dave)
        socks = [so, sa, sb]

        await sa.send(room, "one")
        # The same user on the other gateway, at once: the pace is shared.
        with pytest.raises(RequestRejected) as refused:
            await sb.send(room, "two")
        assert refused.value.code == "slow_mode"
        assert refused.value.retry_after is not None
        assert 0 < refused.value.retry_after <= 3
        with pytest.raises(RequestRejected):
            await sa.send(room, "three")
        # The owner is exempt.
        await so.send(room, "owner one")
        await so.send(room, "owner two")
        # After the advised wait, the next message goes through.
        await asyncio.sleep(refused.value.retry_after + 0.1)  # the server said when
        await sb.send(room, "four")
    finally:
        await close_all(socks, [owner, dave])
