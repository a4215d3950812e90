"""The notifier's durable JetStream consumer: chat records in, notifications out.

Its own durable pull consumer on ``CHAT`` (``chat.room.*``), independent of history's.
One loop: fetch a batch, decide who each message notifies (rooms answers whether a room
is a DM room and who its members are), then write the batch's notifications, webhook
deliveries and dead letters, and only then acknowledge every message of the batch.

Exactly once into the inbox: every notification's ``_id`` is ``"<seq>:<user>"`` and
every webhook delivery's ``"<endpoint>:<seq>:<user>"``, so a batch written twice (a
crash between the write and the acks, a lost ack, an ack timeout) inserts nothing the
second time; a batch never written is redelivered because it was never acked. When
MongoDB, auth or rooms is unavailable the batch is retried with backoff, kept assigned
with in-progress acks, and nothing is acknowledged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, ConsumerInfo
from nats.js.errors import NotFoundError

from roomcast.common.chatrecord import Change, ChatMessage, InvalidRecord, decode_record
from roomcast.common.durableconsumer import (
    ConsumerOptions,
    DurableConsumer,
    consumer_lag,
    durable_consumer_config,
)
from roomcast.common.mongo import UNAVAILABLE_ERRORS
from roomcast.common.subjects import STREAM_NAME
from roomcast.notifier import metrics
from roomcast.notifier.directory import RoomDirectory
from roomcast.notifier.errors import RoomsUnavailable
from roomcast.notifier.records import (
    Incoming,
    change_preview,
    needs_members,
    notification_doc,
    parse,
    public_item,
    recipients,
)
from roomcast.notifier.settings import Settings
from roomcast.notifier.store import NotifierStore

log = logging.getLogger(__name__)

# The parser's detail is short; cut anyway so a dead letter stays small.
DEAD_LETTER_DETAIL_CHARS = 500
# How often the lag gauge is refreshed from the consumer's info: a gauge scraped every
# 15 s or so needs no fresher value, and each read is a JetStream API request.
LAG_POLL_SECONDS = 1.0


def consumer_config(settings: Settings) -> ConsumerConfig:
    return durable_consumer_config(
        name=settings.consumer_name,
        description="roomcast notifier: turns chat records into notifications",
        ack_wait_seconds=settings.ack_wait_seconds,
        max_ack_pending=settings.max_ack_pending,
    )


def consumer_options(settings: Settings) -> ConsumerOptions:
    return ConsumerOptions(
        nats_url=settings.nats_url,
        client_name="roomcast-notifier",
        config=consumer_config(settings),
        stream=settings,
        batch_size=settings.batch_size,
        fetch_timeout=settings.fetch_timeout,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
        progress_poll_seconds=LAG_POLL_SECONDS,
    )


def dead_letter_doc(msg: Msg, seq: int, exc: InvalidRecord, now: dt.datetime) -> dict[str, Any]:
    return {
        "_id": seq,
        "subject": msg.subject,
        "payload": bytes(msg.data),
        "reason": exc.reason,
        "detail": exc.detail[:DEAD_LETTER_DETAIL_CHARS],
        "at": now,
    }


class NotifierConsumer(DurableConsumer[Sequence[Msg]]):
    """The shared durable-consumer runner (``roomcast.common.durableconsumer``) with the
    notifier's decisions and writes; one batch at a time."""

    # MongoDB, rooms or auth down: retried without a traceback.
    expected_errors = (RoomsUnavailable, *UNAVAILABLE_ERRORS)

    def __init__(
        self,
        settings: Settings,
        store: NotifierStore,
        directory: RoomDirectory,
        *,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(consumer_options(settings))
        self.settings = settings
        self.store = store
        self.directory = directory
        # Called after each written batch (wakes the push and webhook workers).
        self._on_written = on_written

    async def prepare(self) -> None:
        await self.store.ensure_indexes()

    def parse(self, msgs: Sequence[Msg]) -> Sequence[Msg]:
        # Decided when written: who a message notifies is asked of rooms then.
        return msgs

    def write_failed(self, exc: Exception) -> None:
        metrics.WRITE_ERRORS.inc()

    async def on_progress(self, info: ConsumerInfo) -> None:
        metrics.CONSUMER_LAG.set(consumer_lag(info))

    async def handle(self, batch: Sequence[Msg], stop: asyncio.Event) -> None:
        await self.handle_batch(batch, stop)

    async def handle_batch(self, msgs: Sequence[Msg], stop: asyncio.Event) -> None:
        """Decide, write, then acknowledge one fetched batch."""
        started = time.perf_counter()
        inserted = await self.write_then_ack(msgs, lambda: self._process(msgs), stop)
        if inserted is None:
            return
        metrics.PROCESSED.inc(len(msgs))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        if inserted and self._on_written is not None:
            self._on_written()

    async def _process(self, msgs: Sequence[Msg]) -> int:
        now = dt.datetime.now(dt.UTC)
        docs: list[dict[str, Any]] = []
        changes: list[Change] = []
        dead: list[dict[str, Any]] = []
        for msg in msgs:
            md = msg.metadata
            seq = md.sequence.stream
            if md.num_delivered > 1:
                metrics.REDELIVERIES.inc()
            try:
                message = parse(seq, msg.subject, msg.data)
            except InvalidRecord as exc:
                log.error("unparsable chat record at seq %d, dead-lettered: %s", seq, exc)
                dead.append(dead_letter_doc(msg, seq, exc, now))
                continue
            if message is None:  # a reaction
                continue
            if not isinstance(message, Incoming):
                changes.append(message)
                continue
            for user, kind in (await self._recipients(message)).items():
                doc = notification_doc(message, user, kind)
                doc["created_at"] = now
                docs.append(doc)
        with_subscriptions = await self.store.users_with_subscriptions(
            sorted({d["user"] for d in docs})
        )
        for doc in docs:
            doc["push"] = "pending" if doc["user"] in with_subscriptions else "none"
        deliveries = [d for doc in docs for d in self._deliveries(doc, now)]
        inserted = await self.store.write_batch(docs, deliveries, dead)
        # After the inserts: an edit or delete in the same batch as its message applies.
        for change in changes:
            await self.store.apply_change(
                change.room_id, change.target_seq, change.sender.id, change_preview(change)
            )
        for doc in inserted:
            metrics.NOTIFICATIONS.labels(doc["kind"]).inc()
        for doc in dead:
            metrics.DEAD_LETTERS.labels(doc["reason"]).inc()
        return len(inserted)

    async def _recipients(self, message: Incoming) -> dict[str, str]:
        room = await self.directory.room(message.room_id)
        if not room.exists:
            return {}
        reply_author = None
        if not room.is_direct and message.reply_to is not None:
            reply_author = await self._author_of(message.room_id, message.reply_to)
        members = None
        if not room.is_direct and needs_members(message, reply_author):
            members = await self.directory.members(message.room_id)
        return recipients(
            message,
            direct_user_ids=room.direct_user_ids,
            reply_author=reply_author,
            members=members,
        )

    async def _author_of(self, room_id: str, seq: int) -> str | None:
        """The sender of message ``seq`` of the room, read from the stream."""
        try:
            raw = await self.js.get_msg(STREAM_NAME, seq)
        except NotFoundError:
            return None  # aged out of the stream: no reply notification
        try:
            record = decode_record(seq, raw.subject or "", raw.data or b"")
        except InvalidRecord:
            return None
        if not isinstance(record, ChatMessage) or record.room_id != room_id:
            return None
        return record.sender.id

    def _deliveries(self, doc: dict[str, Any], now: dt.datetime) -> list[dict[str, Any]]:
        event = f"notification.{doc['kind']}"
        out = []
        for endpoint in self.settings.webhooks:
            if event not in endpoint.events:
                continue
            delivery_id = f"{endpoint.name}:{doc['_id']}"
            data = {**public_item(doc, 0), "user": doc["user"]}
            data.pop("read", None)
            body = {
                "id": delivery_id,
                "type": event,
                "created_at": now.isoformat().replace("+00:00", "Z"),
                "data": data,
            }
            out.append(
                {
                    "_id": delivery_id,
                    "endpoint": endpoint.name,
                    "event": event,
                    "body": orjson.dumps(body),
                    "state": "pending",
                    "attempts": 0,
                    "next_at": now,
                    "created_at": now,
                }
            )
        return out
