"""MongoDB storage of chat history.

Collections (database ``ROOMCAST_HISTORY_MONGO_DB``):

``messages``, one document per chat message, keyed by its JetStream stream sequence::

    {_id: <seq>, room_id, sender: {id, username, display_name, avatar_url},
     body, sent_at, to?, client_id?, stored_at,
     edited_at?, edit_seq?,                      # after an edit
     deleted?: true, deleted_at?, delete_seq?,   # a tombstone: body and client_id gone
     reply_to?, mentions?,                       # a reply; the users it mentions
     reply_count?, last_reply_at?,               # a parent (threads.py)
     reactions?: [{emoji, count}]}               # reactions.py

``_id`` is the sequence, so uniqueness needs no extra index and a redelivered message
can never become a second document. Index ``room_seq`` = ``(room_id 1, _id -1)`` serves
pages; ``room_reply`` = ``(room_id 1, reply_to 1, _id -1)`` serves thread pages and
reply counts. Reactions live in their own collection (``reactions.py``).

``rooms``, one small document per room: ``{_id: room_id, first_seq}``, the room's
lowest stored sequence, so a page knows where a room's history begins (written once
per room, thanks to an in-memory cache of the rooms already recorded).

``meta``: ``{_id: "stored", seq}``, the watermark: every message at or below it is
stored. It is the durable consumer's ack floor, raised with ``$max`` by the consumer
(``raise_watermark``): every record at or below the ack floor was acknowledged, and
history acknowledges a record only after its durable write, so whichever replica
wrote it, it is stored. A replica killed with a batch in hand holds the floor (and so
the watermark) back until that batch is redelivered and written, instead of letting
newer batches of other replicas raise it past a hole. Pages only read at or below it,
so a reader never sees a message before every older one is written, and pages stay
consistent (no gaps, no duplicates) while messages arrive, with any number of
replicas. One write per floor change, not per room: a per-room ``last_seq`` would
cost one upsert per room per batch (measured: it halved ingest throughput with 200
active rooms on SecantusDB).

``dead_letters``: one document per stream record history could not parse, kept instead of
dropped (a record the gateways acknowledged but history rejects is a bug between two of
our services, to be fixed and replayed)::

    {_id: <seq>, subject, headers, payload: <raw bytes>, reason, detail, at}

Every write here is idempotent and order-independent, which is what makes redelivery
harmless: messages are insert-if-absent, edits carry their own sequence and only
replace an older edit, deletes only ever remove content.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from roomcast.common.mongo import UNAVAILABLE_ERRORS
from roomcast.history import metrics, threads
from roomcast.history.errors import StoreUnavailable
from roomcast.history.reactions import REACTIONS, Reactions, RejectedReaction
from roomcast.history.readpositions import ReadPositionBatcher
from roomcast.history.records import (
    Change,
    ChatMessage,
    DeleteRecord,
    EditRecord,
    ReactionRecord,
)

Doc = dict[str, Any]

MESSAGES = "messages"
DEAD_LETTERS = "dead_letters"
ROOMS = "rooms"
META = "meta"
READS = "read_positions"
WATERMARK_ID = "stored"
ROOM_SEQ_INDEX = "room_seq"
DUPLICATE_KEY = 11000

# Pages are read in sequence windows ``[lo, hi)`` below the watermark. The first
# window spans twice the page, so a room that holds most of the traffic is served by
# one query; each further window is 4x wider, so a quiet room (whose messages are far
# apart in the stream-wide sequence) needs only log4(distance) small range queries
# (about 10 for a room last active ten million messages ago).
# Every query is an equality on room_id plus a range on _id: the shape that both
# MongoDB and SecantusDB answer from the (room_id, _id) index.
FIRST_WINDOW_PAGES = 2
WINDOW_GROWTH = 4
# Private messages the viewer may not see are skipped in Python. So that a member who
# floods a room with private messages cannot make each page cost thousands of queries,
# a query that met invisible documents asks for WINDOW_GROWTH times more next time, up
# to SCAN_BATCH_MAX documents (bounded memory per query: bodies are at most ~64 KB, and
# most are far smaller), and a page stops after MAX_QUERIES_PER_PAGE queries. A page
# cut short returns what it found with ``next_before`` set where it stopped, so the
# reader simply asks for the next page: the cost per request is bounded, whatever the
# room holds (docs/history.md).
SCAN_BATCH_MAX = 500
MAX_QUERIES_PER_PAGE = 12

# Rooms whose first_seq this process has recorded (about 100 bytes each); a room
# falling out is recorded again, harmlessly ($min).
KNOWN_ROOMS_MAX = 100_000

# Unread counts stop here: a badge shows "999+" long before, and counting is a scan of
# the room's messages after the read position.
MAX_UNREAD = 1000
# Documents examined per room for an unread count: the caller's own messages and
# private messages of others are skipped, so a few more than MAX_UNREAD are read; past
# this the count is a lower bound (still capped at MAX_UNREAD).
UNREAD_SCAN_LIMIT = 5000
_UNREAD_FIELDS = {"sender.id": 1, "to": 1, "deleted": 1, "mentions": 1}
# Replies read per thread-page query: a page skips replies private to others, so it
# reads a few more than it returns; bounded like SCAN_BATCH_MAX.
THREAD_SCAN_MAX = 500

# Fields stored for bookkeeping that readers never see.
_HIDDEN_FIELDS = {"stored_at": 0, "client_id": 0, "edit_seq": 0, "delete_seq": 0}


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Doc]
    next_before: int | None


@dataclass(slots=True)
class _Scan:
    """Where a page's scan stopped when its query budget ran out (None: it did not)."""

    stopped_before: int | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    change: Change
    reason: str


TargetLoader = Callable[[int], Awaitable[ChatMessage | None]]


def message_doc(message: ChatMessage, stored_at: dt.datetime) -> Doc:
    doc: Doc = {
        "_id": message.seq,
        "room_id": message.room_id,
        "sender": message.sender.to_doc(),
        "body": message.body,
        "sent_at": message.sent_at,
        "stored_at": stored_at,
    }
    if message.to is not None:
        doc["to"] = message.to
    if message.client_id is not None:
        doc["client_id"] = message.client_id
    if message.reply_to is not None:
        doc["reply_to"] = message.reply_to
    if message.mentions:
        doc["mentions"] = list(message.mentions)
    return doc


def visible_to(doc: Doc, viewer_id: str) -> bool:
    """A private message (``to``) is visible to its sender and its recipient only."""
    to = doc.get("to")
    return to is None or to == viewer_id or doc["sender"]["id"] == viewer_id


def to_item(doc: Doc) -> Doc:
    """The public shape of a stored message (a tombstone has no body)."""
    seq = int(doc["_id"])
    item: Doc = {
        "id": str(seq),
        "seq": seq,
        "room": doc["room_id"],
        "sender": doc["sender"],
        "sent_at": doc["sent_at"],
    }
    if doc.get("to") is not None:
        item["to"] = doc["to"]
    if doc.get("reply_to") is not None:
        item["reply_to"] = doc["reply_to"]
    if doc.get("reply_count"):
        item["reply_count"] = doc["reply_count"]
        item["last_reply_at"] = doc.get("last_reply_at")
    if doc.get("deleted"):
        item["deleted"] = True
        item["deleted_at"] = doc.get("deleted_at")
    else:
        item["body"] = doc.get("body")
        if doc.get("edited_at") is not None:
            item["edited_at"] = doc["edited_at"]
        if doc.get("mentions"):
            item["mentions"] = doc["mentions"]
        if doc.get("reactions"):
            # Copied: ``me`` is added per reader.
            item["reactions"] = [dict(r) for r in doc["reactions"]]
    return item


class HistoryStore:
    def __init__(self, client: AsyncMongoClient[Doc], db_name: str) -> None:
        db = client[db_name]
        self.messages: AsyncCollection[Doc] = db[MESSAGES]
        self.rooms: AsyncCollection[Doc] = db[ROOMS]
        self.meta: AsyncCollection[Doc] = db[META]
        self.reads: AsyncCollection[Doc] = db[READS]
        self.dead_letters: AsyncCollection[Doc] = db[DEAD_LETTERS]
        self._reads_batcher = ReadPositionBatcher(self.reads)
        self.reactions = Reactions(db[REACTIONS], self.messages)
        # room id -> the lowest sequence already recorded as its first_seq.
        self._known_first: OrderedDict[str, int] = OrderedDict()

    async def ensure_indexes(self) -> None:
        await self.messages.create_index([("room_id", 1), ("_id", -1)], name=ROOM_SEQ_INDEX)
        await self.messages.create_index(
            [("room_id", 1), ("reply_to", 1), ("_id", -1)], name=threads.ROOM_REPLY_INDEX
        )
        await self.reactions.ensure_indexes()

    # ----------------------------------------------------------------- writes

    async def write_messages(
        self,
        messages: Sequence[ChatMessage],
        *,
        now: dt.datetime,
        load_target: TargetLoader | None = None,
    ) -> int:
        """Insert the messages that are not stored yet and record new rooms (each
        room's ``first_seq`` is written here, before the ack, so it is in place when
        the ack floor, and so the watermark, covers the message), then recount the
        threads replied to. Returns how many were new. Raises on any failure; calling
        again is safe. ``load_target`` reads a parent that is not stored yet."""
        if not messages:
            return 0
        messages, dropped = await threads.resolve_replies(self.messages, messages, load_target)
        if dropped:
            metrics.INVALID_RECORDS.labels("reply_not_allowed").inc(dropped)
        inserted = await self._insert_new(self.messages, [message_doc(m, now) for m in messages])
        await self._record_rooms(messages)
        await threads.recount(
            self.messages, ((m.room_id, m.reply_to) for m in messages if m.reply_to is not None)
        )
        return inserted

    @staticmethod
    async def _insert_new(collection: AsyncCollection[Doc], docs: Sequence[Doc]) -> int:
        """Insert the documents whose ``_id`` is not there yet; how many were new."""
        try:
            # Unordered: one duplicate (a redelivery) must not stop the others.
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            details = exc.details
            errors = details.get("writeErrors", [])
            if details.get("writeConcernErrors") or any(
                e.get("code") != DUPLICATE_KEY for e in errors
            ):
                raise
            return int(details.get("nInserted", 0))
        return len(docs)

    async def raise_watermark(self, seq: int) -> None:
        """Raise the watermark to ``seq`` (``$max``: concurrent replicas and stale
        reads never lower it). ``seq`` must be the consumer's ack floor."""
        await self.meta.update_one({"_id": WATERMARK_ID}, {"$max": {"seq": seq}}, upsert=True)

    async def write_dead_letters(self, docs: Sequence[Doc]) -> None:
        """Keep records that could not be parsed (``_id`` = stream sequence, so a
        redelivery is a duplicate-key no-op). Raises on any other failure."""
        if not docs:
            return
        await self._insert_new(self.dead_letters, docs)

    async def _record_rooms(self, messages: Iterable[ChatMessage]) -> None:
        firsts: dict[str, int] = {}
        for m in messages:
            known = self._known_first.get(m.room_id)
            if (known is None or m.seq < known) and m.seq < firsts.get(m.room_id, m.seq + 1):
                firsts[m.room_id] = m.seq
        if not firsts:
            return
        await self.rooms.bulk_write(
            [
                UpdateOne({"_id": room_id}, {"$min": {"first_seq": seq}}, upsert=True)
                for room_id, seq in sorted(firsts.items())
            ],
            ordered=False,
        )
        for room_id, seq in firsts.items():
            self._known_first[room_id] = seq
            self._known_first.move_to_end(room_id)
        while len(self._known_first) > KNOWN_ROOMS_MAX:
            self._known_first.popitem(last=False)

    async def apply_changes(
        self, changes: Sequence[Change], *, load_target: TargetLoader, now: dt.datetime
    ) -> list[Rejected]:
        """Apply edits and deletes in sequence order; return the ones ignored as invalid.

        A target that is not stored yet (another replica holds it in an unwritten
        batch) is read from the stream with ``load_target`` and stored first, so the
        outcome never depends on delivery order.
        """
        if not changes:
            return []
        targets = sorted({c.target_seq for c in changes})
        found: dict[int, Doc] = {}
        cursor = self.messages.find(
            {"_id": {"$in": targets}},
            {"room_id": 1, "sender.id": 1, "deleted": 1, "edit_seq": 1, "reply_to": 1},
        )
        async for doc in cursor:
            found[int(doc["_id"])] = doc
        for seq in targets:
            if seq not in found:
                message = await load_target(seq)
                if message is not None:
                    await self.write_messages([message], now=now, load_target=load_target)
                    found[seq] = {
                        "_id": seq,
                        "room_id": message.room_id,
                        "sender": {"id": message.sender.id},
                        "reply_to": message.reply_to,
                    }
        rejected: list[Rejected] = []
        ops: list[UpdateOne] = []
        recount: set[tuple[str, int]] = set()  # threads whose reply was deleted
        for change in sorted(changes, key=lambda c: c.seq):
            target = found.get(change.target_seq)
            if target is None:
                rejected.append(Rejected(change, "target_missing"))
                continue
            if target["room_id"] != change.room_id:
                rejected.append(Rejected(change, "target_in_other_room"))
                continue
            if isinstance(change, DeleteRecord):
                if not target.get("deleted"):
                    ops.append(_delete_op(change))
                    target["deleted"] = True
                if target.get("reply_to") is not None:
                    recount.add((change.room_id, int(target["reply_to"])))
                continue
            if target.get("deleted"):
                rejected.append(Rejected(change, "target_deleted"))
            elif target["sender"]["id"] != change.sender.id:
                rejected.append(Rejected(change, "not_the_sender"))
            elif int(target.get("edit_seq", 0)) < change.seq:
                ops.append(_edit_op(change))
                target["edit_seq"] = change.seq
            # else: this edit was already applied, or a newer one was: nothing to do.
        if ops:
            await self.messages.bulk_write(ops, ordered=True)
        await threads.recount(self.messages, recount)
        return rejected

    async def apply_reactions(
        self,
        reactions: Sequence[ReactionRecord],
        *,
        load_target: TargetLoader,
        now: dt.datetime,
        max_emoji: int,
    ) -> list[RejectedReaction]:
        """Apply the batch's reactions (``reactions.py``); return the ones refused. A
        target not stored yet is read from the stream and stored first."""
        if not reactions:
            return []
        targets = sorted({r.target_seq for r in reactions})
        fields = {"room_id": 1, "sender.id": 1, "to": 1, "deleted": 1, "reactions": 1}
        found = {
            int(d["_id"]): d async for d in self.messages.find({"_id": {"$in": targets}}, fields)
        }
        for seq in targets:
            if seq not in found:
                message = await load_target(seq)
                if message is not None:
                    await self.write_messages([message], now=now, load_target=load_target)
                    found[seq] = message_doc(message, now)
        return await self.reactions.apply(reactions, found, max_emoji=max_emoji)

    # ------------------------------------------------------------------ reads

    async def page(self, room_id: str, viewer_id: str, *, before: int | None, limit: int) -> Page:
        """Up to ``limit`` messages visible to ``viewer_id``, newest first, all with
        ``seq < before``; ``next_before`` is the oldest item's seq when more exist."""
        try:
            return await self._page(room_id, viewer_id, before=before, limit=limit)
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable("MongoDB is unavailable") from exc

    async def _page(self, room_id: str, viewer_id: str, *, before: int | None, limit: int) -> Page:
        bounds = await self._bounds(room_id, before)
        if bounds is None:
            return Page([], None)
        first, hi = bounds
        scan = _Scan()
        collected = [
            to_item(d)
            async for d in self._newest_first(room_id, first, hi, limit + 1, viewer_id, scan)
        ]
        await self._decorate(collected, viewer_id)
        if len(collected) > limit:
            items = collected[:limit]
            return Page(items, items[-1]["seq"])
        # Cut short by the query budget: go on below the last sequence examined.
        return Page(collected, scan.stopped_before)

    async def _decorate(self, items: Sequence[Doc], viewer_id: str) -> None:
        """The per-reader parts of items: ``me`` on reactions, deleted parents."""
        await self.reactions.add_me(viewer_id, items)
        await threads.parents_deleted(self.messages, items)

    async def replies(
        self, room_id: str, parent_seq: int, viewer_id: str, *, before: int | None, limit: int
    ) -> Page | None:
        """The thread page: replies to ``parent_seq`` visible to ``viewer_id``, newest
        first, below ``before``; None if the parent is not a message of the room the
        viewer may see (a deleted parent's thread still shows)."""
        try:
            parent = await self.messages.find_one(
                {"_id": parent_seq, "room_id": room_id}, {"sender.id": 1, "to": 1}
            )
            bounds = await self._bounds(room_id, before)
            if parent is None or bounds is None or not visible_to(parent, viewer_id):
                return None
            first, hi = bounds
            items: list[Doc] = []
            next_before: int | None = None
            while hi > first and len(items) <= limit:
                batch = min(THREAD_SCAN_MAX, limit + 1)
                docs = (
                    await self.messages.find(
                        {"room_id": room_id, "reply_to": parent_seq, "_id": {"$lt": hi}},
                        _HIDDEN_FIELDS,
                    )
                    .sort("_id", -1)
                    .limit(batch)
                    .to_list()
                )
                items.extend(to_item(d) for d in docs if visible_to(d, viewer_id))
                if len(docs) < batch:
                    break
                hi = int(docs[-1]["_id"])
            if len(items) > limit:
                items = items[:limit]
                next_before = items[-1]["seq"]
            await self._decorate(items, viewer_id)
            return Page(items, next_before)
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable("MongoDB is unavailable") from exc

    async def last_seq(self, room_id: str) -> int:
        """The room's newest stored sequence, visible to the caller or not (0 if none)."""
        try:
            bounds = await self._bounds(room_id, None)
            if bounds is None:
                return 0
            async with aclosing(self._newest_first(room_id, *bounds, 1, None)) as docs:
                async for doc in docs:
                    return int(doc["_id"])
            return 0
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable("MongoDB is unavailable") from exc

    async def _bounds(self, room_id: str, before: int | None) -> tuple[int, int] | None:
        """``(first, hi)``: a page reads sequences in ``[first, hi)``."""
        room = await self.rooms.find_one({"_id": room_id})
        mark = await self.meta.find_one({"_id": WATERMARK_ID})
        if room is None or mark is None:
            return None
        hi = int(mark["seq"]) + 1
        if before is not None:
            hi = min(hi, before)
        return int(room["first_seq"]), hi

    async def _newest_first(
        self,
        room_id: str,
        first: int,
        hi: int,
        wanted: int,
        viewer_id: str | None,
        scan: _Scan | None = None,
    ) -> AsyncGenerator[Doc, None]:
        """Up to ``wanted`` documents of the room in ``[first, hi)`` (visible to
        ``viewer_id`` unless None), newest first, read window by window, in at most
        MAX_QUERIES_PER_PAGE queries (``scan.stopped_before`` tells where it stopped)."""
        window = FIRST_WINDOW_PAGES * wanted
        batch = wanted
        found = 0
        queries = 0
        while hi > first and found < wanted:
            if queries == MAX_QUERIES_PER_PAGE:
                if scan is not None:
                    scan.stopped_before = hi
                return
            queries += 1
            lo = max(first, hi - window)
            docs = (
                await self.messages.find(
                    {"room_id": room_id, "_id": {"$gte": lo, "$lt": hi}}, _HIDDEN_FIELDS
                )
                .sort("_id", -1)
                .limit(batch)
                .batch_size(batch)  # one round trip (the server's first batch is 101)
                .to_list()
            )
            skipped = 0
            for doc in docs:
                if viewer_id is None or visible_to(doc, viewer_id):
                    found += 1
                    yield doc
                    if found == wanted:
                        return
                else:
                    skipped += 1
            if len(docs) == batch:
                # The window holds more: continue right below the oldest one read, in
                # bigger steps if this one was mostly invisible to the viewer.
                hi = int(docs[-1]["_id"])
                if skipped:
                    batch = min(SCAN_BATCH_MAX, max(batch, skipped) * WINDOW_GROWTH)
            else:
                hi = lo
                window *= WINDOW_GROWTH

    # ------------------------------------------------------- read positions

    async def mark_read(self, room_id: str, user_id: str, seq: int) -> int:
        """Move the user's read position in the room forward to ``seq`` (``$max``: it
        never moves back) and return the stored position. Written in batches with the
        other receipts of a short window (``readpositions``); returns once durable."""
        return await self._reads_batcher.mark(room_id, user_id, seq)

    async def read_positions(self, room_ids: Sequence[str], user_id: str) -> dict[str, int]:
        """The user's read position in each room (rooms never read are absent)."""
        try:
            cursor = self.reads.find({"_id": {"$in": [f"{r}:{user_id}" for r in room_ids]}})
            return {doc["room_id"]: int(doc["seq"]) async for doc in cursor}
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable("MongoDB is unavailable") from exc

    async def summary(self, room_id: str, viewer_id: str, read_seq: int) -> Doc:
        """``{last_seq, unread, last_message}`` of the room for ``viewer_id``: unread
        counts the messages after ``read_seq`` the viewer can see, excluding their own
        and tombstones, capped at MAX_UNREAD."""
        last_seq = await self.last_seq(room_id)
        page = await self.page(room_id, viewer_id, before=None, limit=1)
        unread = mentions = 0
        if last_seq > read_seq:
            try:
                docs = (
                    await self.messages.find(
                        {"room_id": room_id, "_id": {"$gt": read_seq, "$lte": last_seq}},
                        _UNREAD_FIELDS,
                    )
                    .limit(UNREAD_SCAN_LIMIT)
                    .to_list()
                )
            except UNAVAILABLE_ERRORS as exc:
                raise StoreUnavailable("MongoDB is unavailable") from exc
            unseen = [
                d
                for d in docs
                if d["sender"]["id"] != viewer_id
                and not d.get("deleted")
                and visible_to(d, viewer_id)
            ]
            unread = len(unseen)
            mentions = sum(1 for d in unseen if viewer_id in (d.get("mentions") or ()))
        return {
            "last_seq": last_seq,
            "unread": min(unread, MAX_UNREAD),
            "mentions": min(mentions, MAX_UNREAD),
            "last_message": page.items[0] if page.items else None,
        }


def _edit_op(change: EditRecord) -> UpdateOne:
    # The filter repeats every check, so the write stays correct even if another
    # replica changed the document since it was read: only the original sender's
    # live message, and only if no newer edit is already there.
    return UpdateOne(
        {
            "_id": change.target_seq,
            "room_id": change.room_id,
            "sender.id": change.sender.id,
            "deleted": {"$exists": False},
            "edit_seq": {"$not": {"$gte": change.seq}},
        },
        {"$set": {"body": change.body, "edited_at": change.sent_at, "edit_seq": change.seq}},
    )


def _delete_op(change: DeleteRecord) -> UpdateOne:
    # The content is removed from the document itself, not hidden behind a flag.
    return UpdateOne(
        {"_id": change.target_seq, "room_id": change.room_id},
        {
            "$set": {"deleted": True, "deleted_at": change.sent_at, "delete_seq": change.seq},
            "$unset": {"body": "", "client_id": "", "edited_at": "", "edit_seq": ""},
        },
    )
