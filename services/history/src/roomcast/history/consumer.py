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

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError, NotFoundError

from roomcast.common.chatstream import ensure_chat_stream
from roomcast.common.mongo import UNAVAILABLE_ERRORS
from roomcast.common.natsconn import connect_nats
from roomcast.common.subjects import ROOM_SUBJECT_PREFIX, STREAM_NAME
from roomcast.history import metrics
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

log = logging.getLogger(__name__)

# Backoff between retries of a failed step (connect, setup, batch write): doubling from
# a quick first retry (a blip) up to a ceiling that keeps a long outage cheap while the
# recovery is still noticed within seconds.
BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
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
# How long to wait for buffered acks to reach the server when stopping.
FLUSH_TIMEOUT_SECONDS = 2


class Backoff:
    def __init__(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        delay: float = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2.0**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        name=settings.consumer_name,
        durable_name=settings.consumer_name,
        description="roomcast history: stores every chat record in MongoDB",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_seconds,
        # Never give up on a record: the only reason not to ack is MongoDB being
        # unavailable, and dropping a message then would lose it from history.
        max_deliver=-1,
        max_ack_pending=settings.max_ack_pending,
        filter_subject=ROOM_SUBJECT_PREFIX + "*",
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


class HistoryConsumer:
    def __init__(self, settings: Settings, store: HistoryStore) -> None:
        self.settings = settings
        self.store = store
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        # When stopping with MongoDB down: the moment unwritten batches are handed back.
        self._give_up_at: float | None = None
        # Set when this replica acked a batch: the ack floor has probably moved.
        self._acked = asyncio.Event()
        # The highest ack floor written as the watermark by this process.
        self._watermark = 0
        # Whether the last take of records found any (see _gather_batch), and when.
        self._flowing = False
        self._last_take = 0.0

    @property
    def nats_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished first."""
        if not await self._connect(stop) or not await self._prepare_store(stop):
            return
        lag_task = asyncio.create_task(self._track_progress(stop))
        try:
            while not stop.is_set():
                sub = await self._subscribe(stop)
                if sub is None:
                    break
                try:
                    await self._consume(sub, stop)
                finally:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
        finally:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
            if self._nc is not None and self._nc.is_connected:
                with contextlib.suppress(Exception):
                    await self._nc.flush(timeout=FLUSH_TIMEOUT_SECONDS)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    # ------------------------------------------------------------------ setup

    async def _connect(self, stop: asyncio.Event) -> bool:
        backoff = Backoff()
        while not stop.is_set():
            try:
                self._nc = await connect_nats(self.settings.nats_url, name="roomcast-history")
                self._js = self._nc.jetstream()
                return True
            except Exception as exc:
                log.warning("cannot connect to NATS (%s); retrying", exc)
                await sleep_unless(stop, backoff.next_delay())
        return False

    async def _prepare_store(self, stop: asyncio.Event) -> bool:
        backoff = Backoff()
        while not stop.is_set():
            try:
                await self.store.ensure_indexes()
                return True
            except Exception as exc:
                log.warning("cannot prepare MongoDB indexes (%s); retrying", exc)
                await sleep_unless(stop, backoff.next_delay())
        return False

    async def _subscribe(self, stop: asyncio.Event) -> JetStreamContext.PullSubscription | None:
        """Ensure the stream and the durable consumer exist, and bind to it."""
        assert self._js is not None
        backoff = Backoff()
        while not stop.is_set():
            try:
                await ensure_chat_stream(self._js, self.settings, update=False)
                await self._ensure_consumer()
                return await self._js.pull_subscribe_bind(
                    durable=self.settings.consumer_name, stream=STREAM_NAME
                )
            except Exception as exc:
                log.warning("cannot set up the JetStream consumer (%s); retrying", exc)
                await sleep_unless(stop, backoff.next_delay())
        return None

    async def _ensure_consumer(self) -> None:
        assert self._js is not None
        try:
            await self._js.add_consumer(STREAM_NAME, consumer_config(self.settings))
        except BadRequestError as exc:
            # It exists with another configuration (an older deploy's settings): use
            # it as it is rather than fail; the operator updates it deliberately.
            log.warning(
                "consumer %s exists with another config: %s", self.settings.consumer_name, exc
            )
            await self._js.consumer_info(STREAM_NAME, self.settings.consumer_name)

    # -------------------------------------------------------------- consuming

    async def _consume(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        """Write batches while the next one is being fetched (the fetch's round trip
        overlaps the write). Returns on stop, after writing what was fetched, or when
        the subscription must be set up again."""
        queue: asyncio.Queue[ParsedBatch | None] = asyncio.Queue(maxsize=PREFETCH_BATCHES)
        fetcher = asyncio.create_task(self._fetch_into(sub, stop, queue))
        try:
            while (batch := await queue.get()) is not None:
                await self.write_batch(batch, stop)
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher

    async def _fetch_into(
        self,
        sub: JetStreamContext.PullSubscription,
        stop: asyncio.Event,
        queue: asyncio.Queue[ParsedBatch | None],
    ) -> None:
        """Gather and parse batches while the previous one is written: the parsing
        overlaps MongoDB's work on the previous insert instead of adding to it."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                msgs = await self._gather_batch(sub)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:
                # The consumer was deleted, the connection closed, ...: set up again.
                log.warning("fetch failed (%s); re-subscribing", exc)
                await sleep_unless(stop, backoff.next_delay())
                break
            backoff.reset()
            await queue.put(parse_batch(msgs))
        await queue.put(None)

    async def _gather_batch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
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

    async def handle_batch(self, msgs: Sequence[Msg], stop: asyncio.Event) -> None:
        """Write one fetched batch, then acknowledge all of it."""
        await self.write_batch(parse_batch(msgs), stop)

    async def write_batch(self, batch: ParsedBatch, stop: asyncio.Event) -> None:
        """Write one parsed batch (retrying until it works), then acknowledge all of it."""
        started = time.perf_counter()
        messages, changes, dead, msgs = batch.messages, batch.changes, batch.dead, batch.msgs
        last_seq = batch.last_seq
        invalid: list[str] = []
        rejected = await self._write(messages, changes, dead, msgs, stop, batch.reactions)
        if rejected is None:
            # Stopping and MongoDB is still down: hand the batch back right away
            # instead of waiting for the ack timeout.
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.nak()
            return
        for item in rejected:
            record = item.change if isinstance(item, Rejected) else item.reaction
            log.warning("ignored %s at seq %d: %s", type(record).__name__, record.seq, item.reason)
            invalid.append(item.reason)
        for reason in invalid:
            metrics.INVALID_RECORDS.labels(reason).inc()
        for doc in dead:
            metrics.DEAD_LETTERS.labels(doc["reason"]).inc()
        for msg in msgs:
            try:
                await msg.ack()
            except Exception as exc:
                # Written but not acknowledged: it comes back and is a no-op then.
                log.warning("ack failed (%s); the record will be redelivered", exc)
        self._acked.set()
        metrics.INGESTED.inc(len(msgs))
        metrics.LAST_STORED_SEQUENCE.set(last_seq)
        metrics.INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _write(
        self,
        messages: Sequence[ChatMessage],
        changes: Sequence[Change],
        dead: Sequence[dict[str, Any]],
        msgs: Sequence[Msg],
        stop: asyncio.Event,
        reactions: Sequence[ReactionRecord] = (),
    ) -> list[Rejected | RejectedReaction] | None:
        """Write until it works; None if stopping and the grace period ran out."""
        backoff = Backoff()
        while True:
            try:
                now = dt.datetime.now(dt.UTC)
                # Kept before the ack, like a message: the ack must never drop a record.
                await self.store.write_dead_letters([{**d, "at": now} for d in dead])
                inserted = await self.store.write_messages(
                    messages, now=now, load_target=self._load_target
                )
                rejected: list[Rejected | RejectedReaction] = []
                rejected += await self.store.apply_changes(
                    changes, load_target=self._load_target, now=now
                )
                rejected += await self.store.apply_reactions(
                    reactions,
                    load_target=self._load_target,
                    now=now,
                    max_emoji=self.settings.max_reaction_emoji,
                )
                metrics.STORED.inc(inserted)
                return rejected
            except Exception as exc:
                metrics.WRITE_ERRORS.inc()
                log.warning(
                    "batch write failed (attempt %d): %s",
                    backoff.attempt + 1,
                    exc,
                    # A traceback only for the unexpected; "MongoDB is down" needs none.
                    exc_info=backoff.attempt == 0 and not isinstance(exc, UNAVAILABLE_ERRORS),
                )
            if stop.is_set():
                if self._give_up_at is None:
                    self._give_up_at = time.monotonic() + self.settings.shutdown_grace_seconds
                if time.monotonic() >= self._give_up_at:
                    return None
            # Keep the batch assigned to this replica while retrying (resets ack_wait).
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.in_progress()
            await asyncio.sleep(backoff.next_delay())

    async def _load_target(self, seq: int) -> ChatMessage | None:
        """The message at stream sequence ``seq``, read from the stream, if it is one."""
        assert self._js is not None
        try:
            raw = await self._js.get_msg(STREAM_NAME, seq)
        except NotFoundError:
            return None
        try:
            record = parse_record(seq, raw.subject or "", raw.data or b"")
        except InvalidRecord:
            return None
        return record if isinstance(record, ChatMessage) else None

    async def _track_progress(self, stop: asyncio.Event) -> None:
        """Raise the watermark to the consumer's ack floor and update the lag gauge,
        after each acked batch and at least every PROGRESS_POLL_SECONDS."""
        assert self._js is not None
        while not stop.is_set():
            self._acked.clear()
            try:
                info = await self._js.consumer_info(STREAM_NAME, self.settings.consumer_name)
                metrics.CONSUMER_LAG.set((info.num_pending or 0) + (info.num_ack_pending or 0))
                floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
                if floor is not None and floor > self._watermark:
                    await self.store.raise_watermark(floor)
                    self._watermark = floor
            except Exception as exc:
                log.debug("cannot read consumer info or raise the watermark: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), PROGRESS_POLL_SECONDS)
            await sleep_unless(stop, PROGRESS_MIN_INTERVAL_SECONDS)
