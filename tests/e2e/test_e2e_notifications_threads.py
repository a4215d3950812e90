"""Mentions and replies into the inbox, through the whole stack (two gateways, rooms,
history, the notifier, real NATS and SecantusDB), with the Python SDK: a mention sent
on one gateway and a reply to a message sent on the other each land in the inbox once
(a reply that also mentions its parent's author is one ``reply``); a reply to a private
message reaches only its two people (not a member it mentions, who gets a ``skip``
live); a non-member's ``@name`` notifies nobody.

"Exactly once" needs a point after which nothing more can arrive: the notifier reads
the stream in order, so each inbox is read after a later notification of its owner (a
barrier) is there, and then compared as a whole."""

from __future__ import annotations

from e2e_helpers import eventually, new_user, open_socket

from roomcast.client import Message, Notification, RoomcastHttp, RoomcastSocket
from roomcast.testing.stack import Stack


def uid(http: RoomcastHttp) -> str:
    assert http.user is not None
    return str(http.user["id"])


def name(http: RoomcastHttp) -> str:
    assert http.user is not None
    return str(http.user["username"])


async def inbox(http: RoomcastHttp) -> list[Notification]:
    """The whole inbox (newest first): every page, so a duplicate cannot hide."""
    items: list[Notification] = []
    cursor: str | None = None
    while True:
        page = await http.notifications(cursor=cursor, limit=100)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def wait_inbox_has(http: RoomcastHttp, seq: int, what: str) -> None:
    async def there() -> bool:
        return any(n["seq"] == seq for n in await inbox(http))

    # Every 0.5 s: the inbox API allows a user 120 reads a minute (2 a second after the
    # burst), so faster polling would meet 429 on a slow machine before the deadline.
    await eventually(there, what, poll=0.5)


async def test_mentions_and_replies_reach_the_inbox_once(e2e_stack: Stack) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice = await new_user(url_a, "ali")
    bob, carol, dave = (
        await new_user(url_b, "bob"),
        await new_user(url_b, "car"),
        await new_user(url_b, "dav"),
    )
    socks: list[RoomcastSocket] = []
    try:
        room = (await alice.create_room("inbox", visibility="public"))["id"]
        await bob.join_room(room)
        await dave.join_room(room)
        sa, _ = await open_socket([url_a], alice)
        sb, _ = await open_socket([url_b], bob)
        sd, cd = await open_socket([url_b], dave)
        socks = [sa, sb, sd]
        for sock in socks:
            await sock.subscribe(room)

        # a mention on gateway A of bob (a member) and carol (not a member)
        mention = await sa.send(room, f"hi @{name(bob)}, and @{name(carol)}")
        # bob's message on gateway B, replied to on gateway A; the reply names bob too
        mine = await sb.send(room, "anyone for lunch?")
        reply = await sa.send(room, f"me, @{name(bob)}", reply_to=mine.seq)
        # a private message from bob to alice, and alice's reply to it naming dave: the
        # gateway addresses the reply to bob, and only bob is notified
        private = await sb.send(room, "just between us", to=uid(alice))
        hidden = await sa.send(room, f"ok, not @{name(dave)}", reply_to=private.seq)
        # the barrier: a later mention of bob and dave
        barrier = await sa.send(room, f"done @{name(bob)} @{name(dave)}")

        await wait_inbox_has(bob, barrier.seq, "the barrier in bob's inbox")
        got = {(n["seq"], n["kind"], n["private"], n["room"]) for n in await inbox(bob)}
        bob_items = await inbox(bob)
        assert sorted(n["seq"] for n in bob_items) == sorted(
            [mention.seq, reply.seq, hidden.seq, barrier.seq]
        ), "each of bob's notifications exactly once"
        assert got == {
            (mention.seq, "mention", False, room),
            (reply.seq, "reply", False, room),
            (hidden.seq, "reply", True, room),
            (barrier.seq, "mention", False, room),
        }
        by_seq = {n["seq"]: n for n in bob_items}
        assert by_seq[mention.seq]["sender"]["id"] == uid(alice)
        assert by_seq[hidden.seq]["preview"] == f"ok, not @{name(dave)}"

        # dave, mentioned in the private reply, gets only the barrier, and a skip live
        await wait_inbox_has(dave, barrier.seq, "the barrier in dave's inbox")
        assert [n["seq"] for n in await inbox(dave)] == [barrier.seq]
        await cd.wait_for(lambda: barrier.seq in cd.seqs(room), "the barrier live for dave")
        assert hidden.seq not in cd.seqs(room)
        assert not any(isinstance(i, Message) and i.seq == private.seq for i in cd.items)

        # carol's @name in a room she is not in notifies nobody: her inbox holds only a
        # later DM from alice (her barrier)
        dm = (await alice.open_dm(uid(carol)))["id"]
        await sa.subscribe(dm)
        direct = await sa.send(dm, "hello carol")
        await wait_inbox_has(carol, direct.seq, "alice's DM in carol's inbox")
        assert [(n["seq"], n["kind"]) for n in await inbox(carol)] == [(direct.seq, "dm")]
    finally:
        for sock in socks:
            await sock.close()
        for http in (alice, bob, carol, dave):
            await http.aclose()
