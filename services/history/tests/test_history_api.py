"""The read API of a real history process: pagination, authorization, private
messages, input validation, dependency failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from roomcast.rpc.rooms.v1 import rooms_pb2
from roomcast.testing.fakes import FakeRoom, FakeRooms
from roomcast.testing.processes import MongoServer

if TYPE_CHECKING:
    from conftest import Kit, Publisher


async def test_history_pages_newest_first_with_before_and_limit(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    room, noise_room, alice = kit.oid(), kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    seqs = []
    for i in range(25):
        seqs.append(await publisher.publish(room, kit.message(room, alice, f"m{i}")))
        await publisher.publish(noise_room, kit.message(noise_room, alice, f"noise {i}"))
    await publisher.publish(room, kit.edit(room, alice, seqs[3], "m3 edited"))
    last = await publisher.publish(room, kit.delete(room, alice, seqs[4]))
    history = await start_history()
    token = issue_token(user_id=alice)
    await history.wait_stored(kit, room, token, seqs[-1])
    # The edit and delete are the last records; wait until they are applied.

    async def applied() -> bool:
        body = (await history.page(room, token, limit=100)).json()
        return any(item.get("deleted") for item in body["items"])

    await kit.eventually(applied, within=30, what=f"records up to {last} applied")

    response = await history.page(room, token)
    assert response.status_code == 200
    body = response.json()
    assert [item["seq"] for item in body["items"]] == seqs[::-1]
    assert body["next_before"] is None
    newest = body["items"][0]
    assert newest == {
        "id": str(seqs[-1]),
        "seq": seqs[-1],
        "room": room,
        "sender": kit.sender(alice),
        "body": {"type": "text", "content": "m24"},
        "sent_at": newest["sent_at"],
    }
    by_seq = {item["seq"]: item for item in body["items"]}
    assert by_seq[seqs[3]]["body"]["content"] == "m3 edited"
    assert by_seq[seqs[3]]["edited_at"]
    deleted = by_seq[seqs[4]]
    assert deleted["deleted"] is True
    assert "body" not in deleted
    assert deleted["sender"]["id"] == alice

    page = (await history.page(room, token, limit=10)).json()
    assert [i["seq"] for i in page["items"]] == seqs[::-1][:10]
    assert page["next_before"] == seqs[15]
    page = (await history.page(room, token, limit=10, before=seqs[15])).json()
    assert [i["seq"] for i in page["items"]] == seqs[::-1][10:20]
    page = (await history.page(room, token, limit=10, before=seqs[5])).json()
    assert [i["seq"] for i in page["items"]] == seqs[::-1][20:]
    assert page["next_before"] is None
    # Exactly one page's worth left: no empty extra page.
    page = (await history.page(room, token, limit=5, before=seqs[5])).json()
    assert page["next_before"] is None
    # "before" between two of the room's sequences.
    page = (await history.page(room, token, limit=2, before=seqs[10] + 1)).json()
    assert [i["seq"] for i in page["items"]] == [seqs[10], seqs[9]]
    items = await history.all_pages(room, token, limit=4)
    assert [i["seq"] for i in items] == seqs[::-1]

    summary = await history.client.get(
        f"/v1/rooms/{room}/summary", headers={"Authorization": f"Bearer {token}"}
    )
    assert summary.json() == {"last_seq": seqs[-1], "last_message": newest}

    # An empty room the caller belongs to.
    empty = kit.oid()
    fake_rooms.add_member(empty, alice)
    assert (await history.page(empty, token)).json() == {"items": [], "next_before": None}


async def test_history_pages_stay_consistent_while_messages_arrive(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    room, other_room, alice = kit.oid(), kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    for i in range(60):
        await publisher.publish(room, kit.message(room, alice, f"old {i}"))
    history = await start_history()
    token = issue_token(user_id=alice)
    await history.wait_stored(kit, room, token, publisher.acked[-1])
    published: list[int] = list(publisher.acked)
    stop = asyncio.Event()

    async def keep_publishing() -> None:
        i = 0
        while not stop.is_set():
            target = room if i % 2 == 0 else other_room
            seq = await publisher.publish(target, kit.message(target, alice, f"new {i}"))
            if target == room:
                published.append(seq)
            i += 1

    writer = asyncio.create_task(keep_publishing())
    try:
        for _ in range(3):
            items = await history.all_pages(room, token, limit=7)
            seqs = [item["seq"] for item in items]
            assert seqs == sorted(seqs, reverse=True)
            assert len(seqs) == len(set(seqs))
            # Exactly the room's messages up to the newest one the first page showed.
            assert seqs == sorted((s for s in published if s <= seqs[0]), reverse=True)
    finally:
        stop.set()
        await writer
    assert len(published) > 60


async def test_history_private_messages_only_for_sender_and_recipient(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    room, alice, bob, carol = kit.oid(), kit.oid(), kit.oid(), kit.oid()
    for user in (alice, bob, carol):
        fake_rooms.add_member(room, user)
    public, private = [], []
    for i in range(30):
        if i % 3 == 0:
            public.append(await publisher.publish(room, kit.message(room, carol, f"pub {i}")))
        else:
            record = kit.message(room, alice, f"psst {i}", to=bob)
            private.append(await publisher.publish(room, record))
    history = await start_history()
    tokens = {user: issue_token(user_id=user) for user in (alice, bob, carol)}
    await history.wait_stored(kit, room, tokens[carol], max(public + private))
    for user, expected in ((alice, public + private), (bob, public + private), (carol, public)):
        for limit in (1, 3, 50):
            items = await history.all_pages(room, tokens[user], limit=limit)
            assert [i["seq"] for i in items] == sorted(expected, reverse=True), (user, limit)
    items = await history.all_pages(room, tokens[bob], limit=50)
    assert all(i["to"] == bob for i in items if i["seq"] in private)
    # The newest message carol may see is the last public one.
    summary = await history.client.get(
        f"/v1/rooms/{room}/summary", headers={"Authorization": f"Bearer {tokens[carol]}"}
    )
    assert summary.json()["last_message"]["seq"] == max(public)


async def test_history_requires_a_member_token(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    public_room, private_room, alice, mallory = kit.oid(), kit.oid(), kit.oid(), kit.oid()
    fake_rooms.add_member(public_room, alice)
    fake_rooms.rooms[private_room] = FakeRoom(visibility=rooms_pb2.VISIBILITY_PRIVATE)
    fake_rooms.add_member(private_room, alice)
    seq = await publisher.publish(private_room, kit.message(private_room, alice, "hush"))
    history = await start_history()
    member, outsider = issue_token(user_id=alice), issue_token(user_id=mallory)
    await history.wait_stored(kit, private_room, member, seq)

    no_token = await history.page(public_room, None)
    assert no_token.status_code == 401
    assert no_token.json()["error"]["code"] == "unauthenticated"
    bad = await history.page(public_room, "not-a-jwt")
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_token"
    expired = await history.page(public_room, issue_token(user_id=alice, ttl_seconds=-120))
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "token_expired"
    basic = await history.client.get(
        f"/v1/rooms/{public_room}/messages", headers={"Authorization": "Basic YTpi"}
    )
    assert basic.status_code == 401

    forbidden = await history.page(public_room, outsider)
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "not_a_member"
    hidden = await history.page(private_room, outsider)
    assert hidden.status_code == 404
    unknown = await history.page(kit.oid(), member)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "room_not_found"
    summary = await history.client.get(
        f"/v1/rooms/{private_room}/summary", headers={"Authorization": f"Bearer {outsider}"}
    )
    assert summary.status_code == 404

    ok = await history.page(private_room, member)
    assert ok.status_code == 200
    assert [i["seq"] for i in ok.json()["items"]] == [seq]
    # The membership answer is cached: paging costs rooms one call.
    calls = fake_rooms.calls
    for _ in range(3):
        assert (await history.page(private_room, member)).status_code == 200
    assert fake_rooms.calls == calls

    # A user who just joined can read at once (refusals are not cached).
    fake_rooms.add_member(public_room, mallory)
    assert (await history.page(public_room, outsider)).status_code == 200

    # rooms unreachable: 503, not a 500 or a hang.
    await fake_rooms.stop()
    down = await history.page(public_room, issue_token(user_id=kit.oid()))
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "dependency_unavailable"


BAD_PARAMS: list[dict[str, Any]] = [
    {"limit": "0"},
    {"limit": "101"},
    {"limit": "abc"},
    {"limit": "-1"},
    {"limit": "1.5"},
    {"limit": ""},
    {"limit": ["1", "2"]},
    {"before": "-1"},
    {"before": "0"},
    {"before": "abc"},
    {"before": "9" * 25},
    {"before": "\u0661\u0662"},
    {"before": "1e3"},
]
BAD_ROOMS = ["not-a-room", "A" * 24, "a" * 25, "a" * 23]


async def test_history_rejects_bad_page_parameters(
    start_history: Callable[..., Any],
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    history = await start_history(read_rate_capacity="40")
    room, alice = kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    token = issue_token(user_id=alice)
    assert (await history.page(room, token, limit="100", before="1")).status_code == 200
    for params in BAD_PARAMS:
        response = await history.page(room, token, **params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    for bad_room in BAD_ROOMS:
        response = await history.page(bad_room, token)
        assert response.status_code == 400, (bad_room, response.text)
        assert response.json()["error"]["code"] == "invalid_room_id"
    calls = fake_rooms.calls
    assert calls <= 1  # invalid requests never reach rooms

    # Reads are rate limited per user (the process allows 40 per minute here).
    flooder = issue_token(user_id=kit.oid())
    statuses = [(await history.page(room, flooder)).status_code for _ in range(40)]
    assert statuses == [403] * 40
    limited = await history.page(room, flooder)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    # Others are not affected.
    assert (await history.page(room, token)).status_code == 200


async def test_history_dependencies_down_answer_503(
    restartable_mongo: MongoServer,
    start_history: Callable[..., Any],
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    room, alice = kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    # The membership answer stays cached through the test, so rooms can be stopped
    # before SecantusDB is restarted: forking a server while a gRPC server runs in
    # this process is what the harness avoids (gRPC's fork handlers can abort it).
    history = await start_history(mongo_url=restartable_mongo.url, membership_cache_seconds="300")
    token = issue_token(user_id=alice)
    assert (await history.page(room, token)).status_code == 200
    await fake_rooms.stop()
    await asyncio.to_thread(restartable_mongo.stop)
    response = await history.page(room, token)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "dependency_unavailable"
    ready = await history.client.get("/readyz")
    assert ready.status_code == 503
    await asyncio.to_thread(restartable_mongo.start)

    async def recovered() -> bool:
        return (await history.page(room, token)).status_code == 200

    await kit.eventually(recovered, within=30, what="reads after MongoDB returned")
    assert (await history.client.get("/readyz")).status_code == 200


async def test_history_two_replicas_one_killed_pages_never_have_a_hole(
    start_history: Callable[..., Any],
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    """Two history processes share the durable consumer under a steady load; one is
    killed with kill -9 while it holds a batch. At every sample, each room's pages hold
    every message older than the newest one shown (a batch the dead replica held is
    not skipped), and at the end every message is there once."""
    rooms, alice = [kit.oid() for _ in range(3)], kit.oid()
    for room in rooms:
        fake_rooms.add_member(room, alice)
    token = issue_token(user_id=alice)
    # A 3 s ack timeout brings the killed replica's batch back within the test; small
    # batches keep both replicas busy with several batches in flight. The sampling
    # reads pages as fast as it can: no read rate limit.
    replica = {"ack_wait_seconds": "3", "batch_size": "20", "read_rate_capacity": "1000000"}
    doomed = await start_history(**replica)
    survivor = await start_history(**replica)
    published: dict[str, list[int]] = {room: [] for room in rooms}
    stop = asyncio.Event()

    async def keep_publishing() -> None:
        i = 0
        while not stop.is_set():
            room = rooms[i % len(rooms)]
            published[room].append(await publisher.publish(room, kit.message(room, alice, f"{i}")))
            i += 1
            # A steady load of at most ~200 messages/s, which two replicas sharing the
            # test machine's cores keep up with (the backlog must drain in the end).
            await asyncio.sleep(0.005)

    async def check_pages(room: str) -> None:
        items = await survivor.all_pages(room, token, limit=50)
        seqs = [item["seq"] for item in items]
        assert seqs == sorted(set(seqs), reverse=True)
        if seqs:
            # No hole: every message of the room older than the newest one shown.
            expected = [s for s in published[room] if s <= seqs[0]]
            missing = sorted(set(expected) - set(seqs))
            assert not missing, f"a page skipped {missing[:10]} (newest shown {seqs[0]})"

    writer = asyncio.create_task(keep_publishing())
    try:

        async def under_load() -> bool:
            return len(publisher.acked) >= 300

        await kit.eventually(under_load, within=30, what="300 messages published")
        await asyncio.to_thread(doomed.proc.kill)
        killed_at = time.monotonic()
        # Sample while the killed replica's batch waits for its ack timeout and after.
        samples = 0
        while time.monotonic() - killed_at < 8:
            for room in rooms:
                await check_pages(room)
            samples += 1
        assert samples >= 3
    finally:
        stop.set()
        await writer
    for room in rooms:
        await survivor.wait_stored(kit, room, token, published[room][-1])
        items = await survivor.all_pages(room, token, limit=50)
        assert [item["seq"] for item in items] == sorted(published[room], reverse=True)
