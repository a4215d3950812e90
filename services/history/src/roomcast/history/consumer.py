"""The durable JetStream consumer that stores every chat record in MongoDB.

One loop: fetch a batch from the durable pull consumer, parse it, write it with one
bulk insert (plus the batch's edits and deletes), and only then acknowledge every
message of the batch. Every write is idempotent (see ``store``), so any crash,
lost ack or ack timeout merely delivers a record again and changes nothing:

- crash before the write: nothing written, nothing acked → redelivered → written once;
- crash between the write and the acks: written, not acked → redelivered → the insert
  hits the existing ``_id`` (a duplicate-key no-op), the edit is already there;
- MongoDB down: the write fails, nothing is acked; the batch is retried with backoff
  while in-progress acks keep it assigned to this replica;
- NATS down: the client reconnects forever; fetches time out until it is back, and
  acks sent while it was away are at worst lost (→ redelivery, harmless).

The read watermark is the consumer's ack floor (see ``store``), polled from the server
by every replica, so any number of replicas may share the durable consumer: a batch
held by a replica that died holds the watermark back until it is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo, StreamInfo
from nats.js.errors import NotFoundError

from roomcast.common.durableconsumer import (
    ConsumerOptions,
    DurableConsumer,
    consumer_lag,
    durable_consumer_config,
)
from roomcast.common.mongo import UNAVAILABLE_ERRORS
from roomcast.common.subjects import STREAM_NAME
from roomcast.history import metrics
from roomcast.history.errors import StreamMismatch
from roomcast.history.reactions import RejectedReaction
from roomcast.history.records import (
    Change,
    ChatMessage,
    DeleteRecord,
    EditRecord,
    InvalidRecord,
    ReactionRecord,
    parse_record,
)
from roomcast.history.settings import Settings
from roomcast.history.store import HistoryStore, Rejected
from roomcast.history.streamidentity import check_identity

log = logging.getLogger(__name__)

# How often the consumer's info (ack floor and pending counts) is read from the server
# when this replica acks nothing: the watermark follows the acks of the other replicas
# within this time, which is how long a message stored by another replica may stay
# out of pages. One cheap JetStream API request; 5/s per replica is negligible.
PROGRESS_POLL_SECONDS = 0.2
# After this replica acks a batch the info is read at once (the new messages show up
# in pages without waiting for the poll), but at most this often: each read is a
# JetStream request and each raise a durable MongoDB write, so under load the
# watermark costs at most 5 of each a second, however many batches are written.
PROGRESS_MIN_INTERVAL_SECONDS = 0.2
# Batches fetched ahead of the one being written: one hides the fetch round trip;
# more would only hold more unacknowledged messages in memory.
PREFETCH_BATCHES = 1
# The parser's detail is short (a field name and a rule); cut anyway so a document stays
# small whatever the message says.
DEAD_LETTER_DETAIL_CHARS = 500
# How long the pull request that takes a batch's gathered records may wait. They are
# already on the server and normally arrive within a millisecond, but with the machine
# loaded (load average 10+ on two cores) 10 ms was seen to run out, and a take that
# times out costs a round (its records arrive late and wait for the next fetch). With
# nothing pending the request lingers for the first new record, so this also bounds
# how long the take delays a quiet stream's next batch.
DRAIN_FETCH_SECONDS = 0.25


def consumer_config(settings: Settings) -> ConsumerConfig:
    return durable_consumer_config(
        name=settings.consumer_name,
        description="roomcast history: stores every chat record in MongoDB",
        ack_wait_seconds=settings.ack_wait_seconds,
        max_ack_pending=settings.max_ack_pending,
    )


def consumer_options(settings: Settings) -> ConsumerOptions:
    return ConsumerOptions(
        nats_url=settings.nats_url,
        client_name="roomcast-history",
        config=consumer_config(settings),
        stream=settings,
        batch_size=settings.batch_size,
        fetch_timeout=settings.fetch_timeout,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        prefetch_batches=PREFETCH_BATCHES,
        progress_poll_seconds=PROGRESS_POLL_SECONDS,
        progress_after_ack_seconds=PROGRESS_MIN_INTERVAL_SECONDS,
    )


def dead_letter_doc(msg: Msg, seq: int, exc: InvalidRecord) -> dict[str, Any]:
    """The ``dead_letters`` document of a record that could not be parsed: everything
    needed to replay it once the bug is fixed (``at`` is added when written)."""
    return {
        "_id": seq,
        "subject": msg.subject,
        "headers": dict(msg.headers or {}),
        "payload": bytes(msg.data),
        # A bounded label of chatrecord's; the detail says which field.
        "reason": exc.reason,
        "detail": exc.detail[:DEAD_LETTER_DETAIL_CHARS],
    }


@dataclass(slots=True)
class ParsedBatch:
    """A fetched batch, parsed: what to insert, the changes to apply in sequence order,
    the records to dead-letter, and every message to acknowledge once written."""

    msgs: Sequence[Msg]
    messages: list[ChatMessage] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    # Aggregated per target message when written (reactions.py).
    reactions: list[ReactionRecord] = field(default_factory=list)
    last_seq: int = 0


def parse_batch(msgs: Sequence[Msg]) -> ParsedBatch:
    """Parse every record; one that cannot be parsed is set aside for dead_letters
    (only that one: the rest of the batch is stored as usual)."""
    batch = ParsedBatch(msgs)
    for msg in msgs:
        md = msg.metadata
        seq = md.sequence.stream
        batch.last_seq = max(batch.last_seq, seq)
        if md.num_delivered > 1:
            metrics.REDELIVERIES.inc()
        try:
            record = parse_record(seq, msg.subject, msg.data)
        except InvalidRecord as exc:
            log.error("unparsable chat record at seq %d, dead-lettered: %s", seq, exc)
            batch.dead.append(dead_letter_doc(msg, seq, exc))
            continue
        if isinstance(record, ChatMessage):
            batch.messages.append(record)
        elif isinstance(record, EditRecord | DeleteRecord):
            batch.changes.append(record)
        elif isinstance(record, ReactionRecord):
            batch.reactions.append(record)
    return batch


class HistoryConsumer(DurableConsumer[ParsedBatch]):
    """The shared durable-consumer runner (``roomcast.common.durableconsumer``) with
    history's batching, parsing, idempotent writes and watermark."""

    expected_errors = UNAVAILABLE_ERRORS

    def __init__(self, settings: Settings, store: HistoryStore) -> None:
        super().__init__(consumer_options(settings))
        self.settings = settings
        self.store = store
        # The highest ack floor written as the watermark by this process.
        self._watermark = 0
        # Whether the last take of records found any (see fetch), and when.
        self._flowing = False
        self._last_take = 0.0
        # CHAT is not the stream history recorded: nothing is consumed (readiness fails).
        self.stream_mismatch = False

    async def prepare(self) -> None:
        await self.store.ensure_indexes()

    async def check_stream(self, info: StreamInfo) -> None:
        """Refuse a ``CHAT`` other than the one recorded (streamidentity.py): raising
        keeps the runner from binding, retrying with backoff until the operator
        recovers."""
        try:
            recorded_now = await check_identity(self.store.meta, info)
        except StreamMismatch as exc:
            if not self.stream_mismatch:
                log.error(
                    "refusing to consume: %s (deleted and re-created?). Restore that "
                    "stream, or move the old history aside with `python -m "
                    "roomcast.history.streamidentity reset` (docs/operations.md)",
                    exc,
                )
            self.stream_mismatch = True
            metrics.STREAM_MISMATCH.set(1)
            raise
        if recorded_now:
            # After a reset the collections are new: give them their indexes.
            await self.store.ensure_indexes()
        self.stream_mismatch = False
        metrics.STREAM_MISMATCH.set(0)

    def parse(self, msgs: Sequence[Msg]) -> ParsedBatch:
        """Parsed by the fetcher: the parsing overlaps MongoDB's work on the previous
        insert instead of adding to it."""
        return parse_batch(msgs)

    async def handle(self, batch: ParsedBatch, stop: asyncio.Event) -> None:
        await self.write_batch(batch, stop)

    def write_failed(self, exc: Exception) -> None:
        metrics.WRITE_ERRORS.inc()

    async def fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """One batch of up to ``batch_size`` records, gathered on the server for
        ``batch_window_seconds`` and taken in one pull request.

        A fetch returns what is pending, which at a steady few hundred messages a second
        is one record or a few: without the window each message would pay for its own
        pull request, insert and round of acks (each a socket write that costs more CPU
        than a record does). So while records flow, a batch is taken one window after
        the previous one (at once while a full batch is pending: a backlog drains at
        full speed); when a take finds nothing, the stream is idle and the next batch
        starts with a fetch that waits (up to ``fetch_timeout``) for one record."""
        size = self.settings.batch_size
        window = self.settings.batch_window_seconds
        msgs: list[Msg] = []
        if self._flowing:
            await asyncio.sleep(max(0.0, self._last_take + window - time.monotonic()))
        else:
            # batch=1 returns on the first record instead of holding it for the whole
            # fetch_timeout while waiting for a full batch.
            msgs = list(await sub.fetch(1, timeout=self.settings.fetch_timeout))
            # The server says how many more are waiting for this consumer.
            if (msgs[-1].metadata.num_pending or 0) < size - 1:
                await asyncio.sleep(window)
        with contextlib.suppress(TimeoutError, NatsTimeoutError):
            # What is pending now, in one request.
            msgs.extend(await sub.fetch(size - len(msgs), timeout=DRAIN_FETCH_SECONDS))
        self._last_take = time.monotonic()
        # A full batch: more may be pending, take it at once (no window).
        if len(msgs) == size:
            self._last_take -= window
        self._flowing = bool(msgs)
        if not msgs:
            raise NatsTimeoutError
        metrics.INGEST_BATCH_RECORDS.observe(len(msgs))
        return msgs

    async def write_batch(self, batch: ParsedBatch, stop: asyncio.Event) -> None:
        """Write one parsed batch (retrying until it works), then acknowledge all of it;
        stopping with MongoDB still down, the batch is handed back unacknowledged."""
        started = time.perf_counter()
        rejected = await self.write_then_ack(batch.msgs, lambda: self._write(batch), stop)
        if rejected is None:
            return
        for item in rejected:
            record = item.change if isinstance(item, Rejected) else item.reaction
            log.warning("ignored %s at seq %d: %s", type(record).__name__, record.seq, item.reason)
            metrics.INVALID_RECORDS.labels(item.reason).inc()
        for doc in batch.dead:
            metrics.DEAD_LETTERS.labels(doc["reason"]).inc()
        metrics.INGESTED.inc(len(batch.msgs))
        metrics.LAST_STORED_SEQUENCE.set(batch.last_seq)
        metrics.INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _write(self, batch: ParsedBatch) -> list[Rejected | RejectedReaction]:
        """One attempt at writing the batch; every write is idempotent."""
        now = dt.datetime.now(dt.UTC)
        # Kept before the ack, like a message: the ack must never drop a record.
        await self.store.write_dead_letters([{**d, "at": now} for d in batch.dead])
        inserted = await self.store.write_messages(
            batch.messages, now=now, load_target=self._load_target
        )
        rejected: list[Rejected | RejectedReaction] = []
        rejected += await self.store.apply_changes(
            batch.changes, load_target=self._load_target, now=now
        )
        rejected += await self.store.apply_reactions(
            batch.reactions,
            load_target=self._load_target,
            now=now,
            max_emoji=self.settings.max_reaction_emoji,
        )
        metrics.STORED.inc(inserted)
        return rejected

    async def _load_target(self, seq: int) -> ChatMessage | None:
        """The message at stream sequence ``seq``, read from the stream, if it is one."""
        try:
            raw = await self.js.get_msg(STREAM_NAME, seq)
        except NotFoundError:
            return None
        try:
            record = parse_record(seq, raw.subject or "", raw.data or b"")
        except InvalidRecord:
            return None
        return record if isinstance(record, ChatMessage) else None

    async def on_progress(self, info: ConsumerInfo) -> None:
        """Raise the watermark to the consumer's ack floor and update the lag gauge
        (after each acked batch and at least every PROGRESS_POLL_SECONDS)."""
        metrics.CONSUMER_LAG.set(consumer_lag(info))
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        if floor is not None and floor > self._watermark:
            await self.store.raise_watermark(floor)
            self._watermark = floor
