"""A member who floods a room with private messages to someone else must not make the
room expensive to read for everybody else: pages and summaries cost a bounded number
of queries, whatever the room holds (store.MAX_QUERIES_PER_PAGE)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from roomcast.history.store import MAX_QUERIES_PER_PAGE, HistoryStore
from roomcast.testing.mongowire import ReadCounter

ROOM = "65f000000000000000000001"
FLOODER, ACCOMPLICE, READER = "u-flooder", "u-accomplice", "u-reader"
# The figure: 20k private messages made each page cost ~10k queries.
INVISIBLE = 20_000


def message(seq: int, sender: str, text: str, to: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": seq,
        "room_id": ROOM,
        "sender": {"id": sender, "username": sender, "display_name": sender, "avatar_url": None},
        "body": {"type": "text", "content": text},
        "sent_at": "2026-12-04T12:00:00.000Z",
        "stored_at": dt.datetime.now(dt.UTC),
    }
    if to is not None:
        doc["to"] = to
    return doc


@pytest.fixture
async def flooded(mongo_url: str) -> AsyncIterator[tuple[HistoryStore, ReadCounter]]:
    counter = ReadCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, event_listeners=[counter], tz_aware=True
    )
    store = HistoryStore(client, "paging_cost")
    await store.ensure_indexes()
    # Two public messages, then the flood of private ones the reader cannot see, then
    # one more public message on top.
    docs = [message(1, READER, "first"), message(2, FLOODER, "second")]
    docs += [message(3 + i, FLOODER, f"p{i}", to=ACCOMPLICE) for i in range(INVISIBLE)]
    docs.append(message(3 + INVISIBLE, FLOODER, "newest public"))
    for start in range(0, len(docs), 5000):
        await store.messages.insert_many(docs[start : start + 5000])
    await store.rooms.insert_one({"_id": ROOM, "first_seq": 1})
    await store.meta.insert_one({"_id": "stored", "seq": 3 + INVISIBLE})
    try:
        yield store, counter
    finally:
        await client.drop_database("paging_cost")
        await client.close()


async def test_history_pages_through_a_private_flood_in_bounded_queries(
    flooded: tuple[HistoryStore, ReadCounter],
) -> None:
    store, counter = flooded
    seen: list[int] = []
    before: int | None = None
    requests = 0
    while True:
        counter.reads = 0
        page = await store.page(ROOM, READER, before=before, limit=50)
        requests += 1
        # Bounded per request: the page's own queries plus the bounds look-ups.
        assert counter.reads <= MAX_QUERIES_PER_PAGE + 2, counter.reads
        seen += [item["seq"] for item in page.items]
        if page.next_before is None:
            break
        before = page.next_before
        assert requests < 100, "the pages never reached the beginning"
    # The reader sees exactly the public messages, newest first, none skipped.
    assert seen == [3 + INVISIBLE, 2, 1]
    # The flooder's accomplice sees every private message addressed to them.
    page = await store.page(ROOM, ACCOMPLICE, before=None, limit=50)
    assert [item["seq"] for item in page.items][:3] == [3 + INVISIBLE, 2 + INVISIBLE, 1 + INVISIBLE]


async def test_history_summary_under_a_private_flood_is_bounded(
    flooded: tuple[HistoryStore, ReadCounter],
) -> None:
    store, counter = flooded
    counter.reads = 0
    summary = await store.summary(ROOM, READER, read_seq=1)
    # last_seq, the one-item page and the unread scan: a handful of queries, not 10k.
    assert counter.reads <= MAX_QUERIES_PER_PAGE + 8, counter.reads
    assert summary["last_seq"] == 3 + INVISIBLE
    assert summary["last_message"]["seq"] == 3 + INVISIBLE
    # Unread counting reads at most store.UNREAD_SCAN_LIMIT documents: past the flood
    # it is a lower bound (documented), and one query whatever the room holds.
    assert summary["unread"] >= 1
