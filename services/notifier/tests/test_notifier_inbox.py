"""The notifier on real auth, rooms, NATS and MongoDB: a DM lands in the other member's
inbox only, replies and mentions respect membership and private messages, and the inbox
pages newest first with a read position and an unread count."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from notifier_testkit import StartNotifier, World, inbox

from roomcast.testing.polling import eventually


async def test_a_dm_reaches_only_the_other_member_newest_first_with_read_state(
    world: World, notifier_env: Callable[..., dict[str, str]], start_notifier: StartNotifier
) -> None:
    _, base = await start_notifier(notifier_env())
    alice, bob = await world.user("alice"), await world.user("bob")
    dm = await world.dm(alice, bob)
    seqs = await world.publish(dm, *(world.record(dm, alice, f"hello {i}") for i in range(3)))

    async def bob_has_three() -> bool:
        return len((await inbox(base, bob))["items"]) == 3

    await eventually(bob_has_three, "bob's three DM notifications")
    page = await inbox(base, bob)
    assert [n["seq"] for n in page["items"]] == sorted(seqs, reverse=True)
    assert {n["kind"] for n in page["items"]} == {"dm"}
    assert page["items"][0]["preview"] == "hello 2"
    assert page["items"][0]["sender"]["id"] == alice.id
    assert page["items"][0]["room"] == dm
    assert page["unread"] == 3
    assert (await inbox(base, alice))["items"] == []  # never the author

    first = await inbox(base, bob, limit=2)
    assert len(first["items"]) == 2
    rest = await inbox(base, bob, limit=2, cursor=first["next_cursor"])
    assert [n["seq"] for n in rest["items"]] == [min(seqs)]
    assert rest["next_cursor"] is None

    async with httpx.AsyncClient(base_url=base, headers=bob.headers) as http:
        r = await http.post("/v1/notifications/read", json={"up_to": seqs[1]})
        assert r.json() == {"read_up_to": seqs[1], "unread": 1}
        r = await http.post("/v1/notifications/read", json={"up_to": 1})  # never back
        assert r.json() == {"read_up_to": seqs[1], "unread": 1}
        bad = await http.post("/v1/notifications/read", json={"up_to": {"$gt": 0}})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_request"
        assert (await http.get("/v1/notifications", params={"limit": "x"})).status_code == 400
    async with httpx.AsyncClient(base_url=base) as anonymous:
        assert (await anonymous.get("/v1/notifications")).status_code == 401
    page = await inbox(base, bob)
    assert [n["read"] for n in page["items"]] == [False, True, True]

    # The author edits the first message and takes back the last: the inbox follows.
    # Bob's own edit of alice's message is not alice's word and changes nothing.
    await world.publish(
        dm,
        world.change(dm, alice, seqs[0], "hello 0, edited"),
        world.change(dm, alice, seqs[2], None),
        world.change(dm, bob, seqs[1], "not bob's to change"),
    )
    (ping,) = await world.publish(dm, world.record(dm, alice, "still there?"))

    async def bob_got_the_ping() -> bool:
        return (await inbox(base, bob))["items"][0]["seq"] == ping

    await eventually(bob_got_the_ping, "the message after the changes")
    page = await inbox(base, bob)
    assert [(n["seq"], n["preview"]) for n in page["items"]] == [
        (ping, "still there?"),
        (seqs[1], "hello 1"),
        (seqs[0], "hello 0, edited"),
    ]


async def test_replies_and_mentions_respect_membership_and_private_messages(
    world: World, notifier_env: Callable[..., dict[str, str]], start_notifier: StartNotifier
) -> None:
    _, base = await start_notifier(notifier_env())
    alice, bob, carol, dave = [await world.user(n) for n in ("alice", "bob", "carol", "dave")]
    room = await world.room(alice, bob, carol)
    everyone = [u.id for u in (alice, bob, carol, dave)]
    (target,) = await world.publish(room, world.record(room, bob, "a question"))
    reply, private, _, last = await world.publish(
        room,
        # Records as a gateway publishes them once threads and mentions exist.
        world.record(room, alice, "an answer", reply_to=target, mentions=everyone),
        world.record(room, alice, "psst", to=carol.id, mentions=everyone),
        world.record(room, alice, "nobody is named"),
        world.record(room, alice, "last", mentions=[bob.id]),
    )

    async def bob_saw_the_last() -> bool:
        return any(n["seq"] == last for n in (await inbox(base, bob))["items"])

    await eventually(bob_saw_the_last, "the last mention of bob")
    got = {
        u.id: [(n["seq"], n["kind"]) for n in (await inbox(base, u))["items"]]
        for u in (alice, bob, carol, dave)
    }
    assert got[bob.id] == [(last, "mention"), (reply, "reply")]
    assert got[carol.id] == [(private, "mention"), (reply, "mention")]
    assert got[dave.id] == []  # mentioned, but not a member
    assert got[alice.id] == []  # the author
    carol_private = (await inbox(base, carol))["items"][0]
    assert carol_private["private"] is True
    assert carol_private["preview"] == "psst"
