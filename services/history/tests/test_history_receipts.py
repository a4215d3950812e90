"""Read positions and room summaries of a real history process (real nats-server and
SecantusDB): PUT /v1/rooms/{id}/read only moves forward, POST /v1/summaries counts
unread messages the caller can see (own and others' private messages excluded)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.processes import ServiceProcess

if TYPE_CHECKING:
    from conftest import Kit, Publisher


@pytest.fixture
async def history(
    history_proc: Callable[..., ServiceProcess],
    nats_url: str,
    mongo_url: str,
    mongo_db_name: str,
    jwks_server: JwksServer,
    fake_rooms: FakeRooms,
) -> AsyncIterator[httpx.AsyncClient]:
    proc = history_proc(
        nats_url=nats_url,
        mongo_url=mongo_url,
        mongo_db=mongo_db_name,
        jwks_url=jwks_server.url,
        rooms_target=fake_rooms.target,
    )
    await asyncio.to_thread(proc.start)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proc.port}", timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_read_position_only_moves_forward_and_members_only(
    history: httpx.AsyncClient,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    room, alice, stranger = kit.oid(), kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    token = issue_token(user_id=alice)
    url = f"/v1/rooms/{room}/read"
    r = await history.put(url, json={"seq": 10}, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json() == {"seq": 10}
    r = await history.put(url, json={"seq": 4}, headers=bearer(token))
    assert r.json() == {"seq": 10}  # never back
    r = await history.put(url, json={"seq": 12}, headers=bearer(token))
    assert r.json() == {"seq": 12}
    # validation before any query; members only; a token is required
    for bad in ({"seq": "12"}, {"seq": True}, {"seq": -1}, {"seq": {"$gt": 1}}, {}, [1]):
        r = await history.put(url, json=bad, headers=bearer(token))
        assert r.status_code == 400, bad
    assert (await history.put(url, json={"seq": 1})).status_code == 401
    other = issue_token(user_id=stranger)
    r = await history.put(url, json={"seq": 1}, headers=bearer(other))
    assert r.status_code == 403  # a room the caller is not a member of


async def test_summaries_count_unread_visible_messages(
    history: httpx.AsyncClient,
    publisher: Publisher,
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    room, quiet, foreign = kit.oid(), kit.oid(), kit.oid()
    alice, bob, carol = kit.oid(), kit.oid(), kit.oid()
    for user in (alice, bob, carol):
        fake_rooms.add_member(room, user)
    fake_rooms.add_member(quiet, alice)
    token = issue_token(user_id=alice)
    first = await publisher.publish(room, kit.message(room, bob, "hello"))
    await publisher.publish(room, kit.message(room, alice, "mine"))  # own: not unread
    await publisher.publish(room, kit.message(room, bob, "to carol", to=carol))  # invisible
    to_me = await publisher.publish(room, kit.message(room, carol, "to alice", to=alice))
    deleted = await publisher.publish(room, kit.message(room, bob, "oops"))
    last = await publisher.publish(room, kit.message(room, bob, "latest"))
    await publisher.publish(room, kit.delete(room, bob, deleted))

    async def summaries() -> dict[str, Any]:
        r = await history.post(
            "/v1/summaries", json={"room_ids": [room, quiet, foreign]}, headers=bearer(token)
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def settled() -> bool:
        s = (await summaries()).get(room)
        return s is not None and s["last_seq"] == last and s["unread"] == 3

    # hello, to alice, latest (the deleted one is a tombstone once the delete is applied)
    # (polled gently: history allows 300 reads a minute per user)
    await kit.eventually(settled, within=30, what="all records applied", poll=0.3)
    body = await summaries()
    assert set(body) == {room, quiet}  # not a member of foreign: left out
    assert body[quiet] == {"last_seq": 0, "unread": 0, "mentions": 0, "last_message": None}
    assert body[room]["last_message"]["seq"] == last
    assert body[room]["last_message"]["body"]["content"] == "latest"

    r = await history.put(f"/v1/rooms/{room}/read", json={"seq": to_me}, headers=bearer(token))
    assert r.json() == {"seq": to_me}
    assert (await summaries())[room]["unread"] == 1  # only "latest" after the position
    r = await history.put(f"/v1/rooms/{room}/read", json={"seq": first}, headers=bearer(token))
    assert r.json() == {"seq": to_me}
    assert (await summaries())[room]["unread"] == 1

    # bounds and validation
    r = await history.post(
        "/v1/summaries", json={"room_ids": [kit.oid() for _ in range(101)]}, headers=bearer(token)
    )
    assert r.status_code == 400
    for bad in ({"room_ids": ["nope"]}, {"room_ids": room}, {"rooms": []}):
        r = await history.post("/v1/summaries", json=bad, headers=bearer(token))
        assert r.status_code == 400, bad
    assert (await history.post("/v1/summaries", json={"room_ids": []})).status_code == 401


async def test_read_positions_reuse_a_membership_answer_that_pages_do_not(
    start_history: Callable[..., Any],
    fake_rooms: FakeRooms,
    issue_token: Callable[..., str],
    kit: type[Kit],
) -> None:
    """Gateways forward every coalesced read receipt: moving one's own read position
    reuses a membership answer for read_position_membership_cache_seconds (300 s), so a
    stream of receipts costs rooms one CheckMembership; pages keep their own, shorter
    cache (0 here: every page asks), so a removed member loses page access at once while
    at most moving their own read position."""
    client = (await start_history(membership_cache_seconds="0")).client
    room, alice = kit.oid(), kit.oid()
    fake_rooms.add_member(room, alice)
    headers = bearer(issue_token(user_id=alice))
    before = fake_rooms.method_calls["CheckMembership"]
    for seq in range(1, 21):
        r = await client.put(f"/v1/rooms/{room}/read", json={"seq": seq}, headers=headers)
        assert r.json() == {"seq": seq}
    assert fake_rooms.method_calls["CheckMembership"] - before == 1
    for _ in range(3):
        page = await client.get(f"/v1/rooms/{room}/messages", headers=headers)
        assert page.status_code == 200, page.text
    assert fake_rooms.method_calls["CheckMembership"] - before == 4
    del fake_rooms.rooms[room].members[alice]
    page = await client.get(f"/v1/rooms/{room}/messages", headers=headers)
    assert page.status_code == 403
    r = await client.put(f"/v1/rooms/{room}/read", json={"seq": 21}, headers=headers)
    assert r.json() == {"seq": 21}
