"""Replies, threads and mentions through a real history process: counts on the parent,
the thread page newest first, deleted parents, private threads, unread mentions, and
refused inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from roomcast.testing.fakes import FakeRooms

if TYPE_CHECKING:
    from conftest import History, Kit, Publisher


def reply(kit: type[Kit], room: str, user: str, parent: int, text: str, **extra: Any) -> Any:
    record = kit.message(room, user, text, to=extra.pop("to", None))
    record["reply_to"] = parent
    record.update(extra)
    return record


async def thread(
    history: History, room: str, seq: int | str, token: str, **params: Any
) -> httpx.Response:
    return await history.client.get(
        f"/v1/rooms/{room}/messages/{seq}/replies",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_threads_count_page_and_survive_a_deleted_parent(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    room, other, alice, bob = kit.oid(), kit.oid(), kit.oid(), kit.oid()
    for user in (alice, bob):
        fake_rooms.add_member(room, user)
    parent = await publisher.publish(room, kit.message(room, alice, "topic"))
    foreign = await publisher.publish(other, kit.message(other, bob, "elsewhere"))
    replies = [
        await publisher.publish(room, reply(kit, room, bob if i % 2 else alice, parent, f"r{i}"))
        for i in range(5)
    ]
    # A reply to a message of another room is stored as a plain message.
    stray = await publisher.publish(room, reply(kit, room, bob, foreign, "stray"))
    await publisher.publish(room, kit.delete(room, alice, replies[0]))
    history = await start_history()
    a = issue_token(user_id=alice)
    await history.wait_stored(kit, room, a, stray)

    async def counted() -> bool:
        page = (await history.page(room, a, limit=20)).json()["items"]
        top = next((i for i in page if i["seq"] == parent), {})
        return top.get("reply_count") == 4

    await kit.eventually(counted, within=30, what="the deleted reply uncounted")
    items = {i["seq"]: i for i in (await history.page(room, a, limit=20)).json()["items"]}
    assert items[parent]["last_reply_at"] == items[replies[-1]]["sent_at"]
    assert items[replies[1]]["reply_to"] == parent
    assert "reply_to" not in items[stray]

    body = (await thread(history, room, parent, a, limit=2)).json()
    assert [i["seq"] for i in body["items"]] == replies[:0:-1][:2]
    assert body["next_before"] == replies[3]
    rest = (await thread(history, room, parent, a, limit=10, before=replies[3])).json()
    # The deleted reply still shows in its place, as a tombstone.
    assert [i["seq"] for i in rest["items"]] == [replies[2], replies[1], replies[0]]
    assert rest["items"][-1]["deleted"] is True
    assert rest["next_before"] is None

    # The parent deleted: its replies stay, marked so, and the thread still opens.
    await publisher.publish(room, kit.delete(room, alice, parent))

    async def marked() -> bool:
        page = (await history.page(room, a, limit=20)).json()["items"]
        return any(i.get("reply_to_deleted") for i in page)

    await kit.eventually(marked, within=30, what="replies marked with a deleted parent")
    after = (await thread(history, room, parent, a)).json()["items"]
    assert len(after) == 5
    assert all(i["reply_to_deleted"] for i in after)


async def test_a_private_thread_stays_between_its_two_people(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    room, alice, bob, carol = kit.oid(), kit.oid(), kit.oid(), kit.oid()
    for user in (alice, bob, carol):
        fake_rooms.add_member(room, user)
    secret = await publisher.publish(room, kit.message(room, alice, "psst", to=bob))
    answer = await publisher.publish(room, reply(kit, room, bob, secret, "ok", to=alice))
    # Carol cannot point at it: her message is kept, without the reply.
    nosy = await publisher.publish(room, reply(kit, room, carol, secret, "what?"))
    history = await start_history()
    a, b, c = (issue_token(user_id=u) for u in (alice, bob, carol))
    await history.wait_stored(kit, room, a, nosy)
    for token in (a, b):
        body = (await thread(history, room, secret, token)).json()
        assert [i["seq"] for i in body["items"]] == [answer]
    hidden = await thread(history, room, secret, c)
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "message_not_found"
    carol_page = {i["seq"]: i for i in (await history.page(room, c)).json()["items"]}
    assert set(carol_page) == {nosy}
    assert "reply_to" not in carol_page[nosy]


async def test_unread_mentions_and_bad_thread_requests(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    room, outside, alice, bob = kit.oid(), kit.oid(), kit.oid(), kit.oid()
    for user in (alice, bob):
        fake_rooms.add_member(room, user)
    fake_rooms.add_member(outside, alice)
    first = await publisher.publish(room, kit.message(room, alice, "hi"))
    mention = kit.message(room, alice, "@bob look")
    mention["mentions"] = [bob]
    await publisher.publish(room, mention)
    both = kit.message(room, alice, "@bob @alice")
    both["mentions"] = [bob, alice]
    last = await publisher.publish(room, both)
    history = await start_history()
    b = issue_token(user_id=bob)
    await history.wait_stored(kit, room, b, last)
    summaries = await history.client.post(
        "/v1/summaries", json={"room_ids": [room]}, headers={"Authorization": f"Bearer {b}"}
    )
    assert (summaries.json()[room]["unread"], summaries.json()[room]["mentions"]) == (3, 2)
    items = {i["seq"]: i for i in (await history.page(room, b)).json()["items"]}
    assert items[last]["mentions"] == [bob, alice]
    await history.client.put(
        f"/v1/rooms/{room}/read", json={"seq": last - 1}, headers={"Authorization": f"Bearer {b}"}
    )
    summaries = await history.client.post(
        "/v1/summaries", json={"room_ids": [room]}, headers={"Authorization": f"Bearer {b}"}
    )
    assert summaries.json()[room]["mentions"] == 1

    for seq in ("0", "abc", "-1", "9" * 25):
        assert (await thread(history, room, seq, b)).status_code == 400, seq
    assert (await thread(history, room, first, b, limit=0)).status_code == 400
    assert (await thread(history, room, 10**9, b)).status_code == 404
    # Not a member of the room: no thread, whatever the message.
    assert (await thread(history, outside, first, b)).status_code == 403
