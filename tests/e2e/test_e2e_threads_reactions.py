"""Replies and reactions through the whole stack (two gateways, rooms, history on
SecantusDB, real NATS), with the Python SDK: a reply is live on the other gateway and in
history with the parent's reply_count and the thread page; a reaction reaches the other
gateway, a retried react counts once; a resume replays replies and reactions once; a
muted member's react, a bad emoji and a reply into another room are refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from e2e_helpers import eventually, new_user, open_socket

from roomcast.client import Message, Reaction, RequestRejected, RoomcastHttp, RoomcastSocket
from roomcast.testing.stack import Stack


def uid(http: RoomcastHttp) -> str:
    assert http.user is not None
    return str(http.user["id"])


async def test_replies_and_reactions_across_gateways(e2e_stack: Stack) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob = await new_user(url_a, "ali"), await new_user(url_b, "bob")
    socks: list[RoomcastSocket] = []
    try:
        room = (await alice.create_room("threads", visibility="public"))["id"]
        other = (await alice.create_room("elsewhere", visibility="public"))["id"]
        await bob.join_room(room)
        sa, ca = await open_socket([url_a], alice)
        sb, _ = await open_socket([url_b], bob)
        socks = [sa, sb]
        for sock in socks:
            await sock.subscribe(room)
        await sa.subscribe(other)

        parent = await sa.send(room, "lunch?")
        reply = await sb.send(room, "yes", reply_to=parent.seq)

        def live_reply() -> list[Message]:
            return [i for i in ca.items if isinstance(i, Message) and i.seq == reply.seq]

        await ca.wait_for(lambda: bool(live_reply()), "bob's reply on alice's gateway")
        assert live_reply()[0].reply_to == parent.seq

        # a reaction from the other gateway; a retry with the same client_id counts once
        first = await sb.react(room, parent.seq, "🍕", client_id="pizza-1")
        again = await sb.react(room, parent.seq, "🍕", client_id="pizza-1")
        assert again.seq == first.seq

        def reactions(items: list[Any]) -> list[Reaction]:
            return [i for i in items if isinstance(i, Reaction)]

        await ca.wait_for(lambda: bool(reactions(ca.items)), "bob's reaction")
        got = reactions(ca.items)[0]
        assert (got.target_seq, got.emoji, got.op, got.sender.id) == (
            parent.seq,
            "🍕",
            "add",
            uid(bob),
        )

        async def stored() -> bool:
            page = await alice.messages(room)
            items = {m["seq"]: m for m in page["items"]}
            top = items.get(parent.seq, {})
            # The reply itself too: a page shows messages up to history's watermark
            # (the consumer's ack floor, docs/history.md), which can follow the
            # parent's counts by a moment.
            return top.get("reply_count") == 1 and bool(top.get("reactions")) and reply.seq in items

        await eventually(stored, "history to store the reply and reaction", within=30)
        items = {m["seq"]: m for m in (await alice.messages(room))["items"]}
        assert items[parent.seq]["reactions"] == [{"emoji": "🍕", "count": 1, "me": False}]
        assert items[reply.seq]["reply_to"] == parent.seq
        thread = await bob.replies(room, parent.seq)
        assert [m["seq"] for m in thread["items"]] == [reply.seq]

        # a resume from before the reply replays the reply and the reaction exactly once
        late, cl = await open_socket([url_b], alice)
        socks.append(late)
        await late.subscribe(room, since=parent.seq)
        await cl.wait_for(lambda: bool(reactions(cl.items)), "the replayed reaction")
        assert [r.seq for r in reactions(cl.items)] == [first.seq]
        replayed = [i for i in cl.items if isinstance(i, Message)]
        assert [m.seq for m in replayed] == [reply.seq]
        assert replayed[0].reply_to == parent.seq

        # refusals: a bad emoji, a reply to another room's message, a muted member
        with pytest.raises(RequestRejected) as refused:
            await sb.react(room, parent.seq, " ")
        assert refused.value.code == "invalid_emoji"
        elsewhere = await sa.send(other, "not here")
        with pytest.raises(RequestRejected) as refused:
            await sb.send(room, "wrong thread", reply_to=elsewhere.seq)
        assert refused.value.code == "invalid_reply_to"
        until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
        await alice.mute(room, uid(bob), until)
        with pytest.raises(RequestRejected) as refused:
            await sb.react(room, parent.seq, "👍")
        assert refused.value.code == "muted"
    finally:
        for sock in socks:
            await sock.close()
        for http in (alice, bob):
            await http.aclose()


async def test_mentions_resolve_to_members_and_count_unread(e2e_stack: Stack) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob, carol = (
        await new_user(url_a, "ali"),
        await new_user(url_b, "bob"),
        await new_user(url_b, "car"),
    )
    socks: list[RoomcastSocket] = []
    try:
        room = (await alice.create_room("mentions", visibility="public"))["id"]
        await bob.join_room(room)
        sa, _ = await open_socket([url_a], alice)
        sb, cb = await open_socket([url_b], bob)
        socks = [sa, sb]
        await sb.subscribe(room)
        assert bob.user is not None
        assert carol.user is not None
        bob_name, carol_name = bob.user["username"], carol.user["username"]
        # bob is a member (mentioned in upper case: usernames are case-insensitive);
        # carol is not, and stays plain text; an e-mail address is no mention
        text = f"hi @{bob_name.upper()}, ask @{carol_name} or mail x@{bob_name}.org"
        sent = await sa.send(room, text)

        def live() -> list[Message]:
            return [i for i in cb.items if isinstance(i, Message) and i.seq == sent.seq]

        await cb.wait_for(lambda: bool(live()), "alice's message on bob's gateway")
        assert live()[0].mentions == [uid(bob)]
        assert live()[0].content == text

        async def counted() -> bool:
            joined = await bob.list_rooms(scope="joined")
            return any(r["id"] == room and r.get("mentions") == 1 for r in joined["items"])

        await eventually(counted, "bob's joined list to count the unread mention", within=30)
    finally:
        for sock in socks:
            await sock.close()
        for http in (alice, bob, carol):
            await http.aclose()
