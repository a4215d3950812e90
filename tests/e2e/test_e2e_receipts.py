"""Edits, deletes, read receipts and unread counts through the whole stack (two gateways,
rooms, history, real NATS and SecantusDB), driven through the public contract: the SDK
for accounts, rooms, sends and reads, and a plain WebSocket for the edit/delete/read
frames the SDK does not model yet."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import orjson
from e2e_helpers import DELIVERY_DEADLINE_SECONDS, eventually, new_user, open_socket
from pymongo import AsyncMongoClient
from websockets.asyncio.client import ClientConnection, connect

from roomcast.client import Change, ReadReceipt, RoomcastHttp
from roomcast.testing.stack import Stack


class Raw:
    """A bare WebSocket that records every frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base_url: str, http: RoomcastHttp) -> Raw:
        ws = await connect(base_url.replace("http", "ws", 1) + "/v1/ws")
        raw = cls(ws)
        await raw.send({"type": "auth", "token": await http.fresh_access_token()})
        await raw.expect(lambda f: f["type"] == "ready")
        return raw

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for data in self.ws:
                self.frames.append(orjson.loads(data))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def expect(self, predicate: Any, start: int = 0) -> dict[str, Any]:
        async with asyncio.timeout(DELIVERY_DEADLINE_SECONDS):
            while True:
                for frame in self.frames[start:]:
                    if predicate(frame):
                        return frame
                # Frames arrive on the reader task; there is no event to wait on.
                await asyncio.sleep(0.02)

    async def change(
        self, kind: str, room: str, seq: int, content: str | None = None
    ) -> dict[str, Any]:
        cid = uuid.uuid4().hex
        frame: dict[str, Any] = {"type": kind, "room": room, "seq": seq, "client_id": cid}
        if content is not None:
            frame["body"] = {"type": "text", "content": content}
        start = len(self.frames)
        await self.send(frame)
        return await self.expect(
            lambda f: f["type"] in ("ack", "error") and cid in (f.get("client_id"), f.get("ref")),
            start,
        )

    async def subscribe(self, room: str) -> None:
        await self.send({"type": "subscribe", "room": room})
        await self.expect(lambda f: f["type"] == "subscribed" and f["room"] == room)

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


def uid(http: RoomcastHttp) -> str:
    assert http.user is not None
    return str(http.user["id"])


async def joined(http: RoomcastHttp, room: str) -> dict[str, Any]:
    page = await http.list_rooms(scope="joined")
    return next(r for r in page["items"] if r["id"] == room)


async def test_edits_deletes_reads_and_unread_counts(e2e_stack: Stack) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob, carol = (
        await new_user(url_a, "alice"),
        await new_user(url_b, "bob"),
        await new_user(url_a, "carol"),
    )
    assert e2e_stack.mongo is not None
    mongo_url = e2e_stack.mongo.url
    room = (await alice.create_room("receipts", visibility="public"))["id"]
    await bob.join_room(room)
    await carol.join_room(room)
    sa, _ = await open_socket([url_a], alice)
    sb, _ = await open_socket([url_b], bob)
    ra, rb, rc = (
        await Raw.open(url_a, alice),
        await Raw.open(url_b, bob),
        await Raw.open(url_a, carol),
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        for raw in (ra, rb, rc):
            await raw.subscribe(room)
        m1 = (await sa.send(room, "hello")).seq
        m2 = (await sb.send(room, "bob here")).seq
        m3 = (await sa.send(room, "third")).seq
        m4 = (await sb.send(room, "to be moderated")).seq

        # edit by the sender, live on both gateways
        edit = await ra.change("edit", room, m1, "hello, edited")
        assert edit["type"] == "ack"
        for raw in (ra, rb):
            frame = await raw.expect(lambda f: f["type"] == "edit")
            assert frame["target_seq"] == m1
            assert frame["seq"] == edit["seq"]
            assert frame["prev"] == m4
        # refused: someone else's edit, a plain member deleting another's message
        assert (await rb.change("edit", room, m1, "nope"))["code"] == "forbidden"
        assert (await rc.change("delete", room, m1))["code"] == "forbidden"
        # deletes by the sender and by the room's owner
        assert (await rb.change("delete", room, m2))["type"] == "ack"
        assert (await ra.change("delete", room, m4))["type"] == "ack"

        async def applied() -> bool:
            items = {i["seq"]: i for i in (await carol.messages(room))["items"]}
            if not {m1, m2, m4} <= items.keys():  # history stores in batches
                return False
            return (
                items[m1].get("body", {}).get("content") == "hello, edited"
                and items[m2].get("deleted") is True
                and items[m4].get("deleted") is True
            )

        await eventually(applied, "history applied the edit and the deletes")
        items = {i["seq"]: i for i in (await carol.messages(room))["items"]}
        assert items[m1]["edited_at"]
        assert "body" not in items[m2]
        # the content is gone from the document itself, not hidden
        doc = await mongo["roomcast_history"]["messages"].find_one({"_id": m2})
        assert doc is not None
        assert doc["deleted"] is True
        assert "body" not in doc
        assert "client_id" not in doc
        assert "bob here" not in str(doc)

        # read receipts: stored forward-only, announced to the room on every gateway
        assert sb.read(room, m3)
        frame = await ra.expect(lambda f: f["type"] == "read" and f["user"]["id"] == uid(bob))
        assert frame == {
            "type": "read",
            "room": room,
            "user": {"id": uid(bob), "username": bob.user["username"]},  # type: ignore[index]
            "seq": m3,
        }
        start = len(ra.frames)
        assert sb.read(room, m1)  # older: the position stays
        again = await ra.expect(lambda f: f["type"] == "read", start)
        assert again["seq"] == m3

        # unread counts: after the read position, own messages and tombstones excluded
        b = await joined(bob, room)
        assert b["unread"] == 0  # m4 is bob's own (and deleted)
        assert b["last_message"]["seq"] == m4
        assert b["last_message"]["deleted"] is True
        assert (await joined(carol, room))["unread"] == 2  # m1 and m3; never read
        assert (await joined(alice, room))["unread"] == 0  # only her own are left
        m5 = (await sa.send(room, "news")).seq

        async def bob_sees_news() -> bool:
            r = await joined(bob, room)
            return bool(r["unread"] == 1 and r["last_message"]["seq"] == m5)

        await eventually(bob_sees_news, "bob's unread count grows")

        # history down: the listing still answers, without the counts
        await asyncio.to_thread(e2e_stack.services["history"].stop)
        try:
            degraded = await joined(bob, room)
            assert degraded["unread"] is None
            assert degraded["last_message"] is None
            assert degraded["name"] == "receipts"
        finally:
            await asyncio.to_thread(e2e_stack.restart, "history")
    finally:
        for raw in (ra, rb, rc):
            await raw.close()
        for sock in (sa, sb):
            await sock.close()
        for http in (alice, bob, carol):
            await http.aclose()
        await mongo.close()


async def test_sdk_edits_deletes_and_receipts_keep_the_chain_whole(e2e_stack: Stack) -> None:
    """Through the SDK alone: edits and deletes occupy a seq in the room, so an observer
    on the other gateway sees them as Change items and counts no gap."""
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob = await new_user(url_a, "alice"), await new_user(url_b, "bob")
    room = (await alice.create_room("sdk-changes", visibility="public"))["id"]
    await bob.join_room(room)
    sa, _ = await open_socket([url_a], alice)
    sb, cb = await open_socket([url_b], bob)
    try:
        await sa.subscribe(room)
        await sb.subscribe(room)
        first = await sa.send(room, "first draft")
        await sa.send(room, "second")
        edited = await sa.edit(room, first.seq, "final draft")
        deleted = await sa.delete(room, first.seq)
        assert first.seq < edited.seq < deleted.seq
        await cb.wait_for(
            lambda: sum(isinstance(i, Change) for i in cb.items) == 2, "edit and delete live"
        )
        changes = [i for i in cb.items if isinstance(i, Change)]
        assert [(c.kind, c.target_seq) for c in changes] == [
            ("edit", first.seq),
            ("delete", first.seq),
        ]
        assert changes[0].body == {"type": "text", "content": "final draft"}
        assert changes[1].body is None
        sb.read(room, deleted.seq)
        await cb.wait_for(
            lambda: any(isinstance(i, ReadReceipt) and i.seq == deleted.seq for i in cb.items),
            "bob's own read receipt comes back",
        )
        assert sb.stats.gaps == 0
        assert sb.stats.duplicates == 0
        assert sb.last_seq(room) == deleted.seq
    finally:
        await sa.close()
        await sb.close()
        await alice.aclose()
        await bob.aclose()
