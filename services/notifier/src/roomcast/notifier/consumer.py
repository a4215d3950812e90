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
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError, NotFoundError

from roomcast.common.chatrecord import Change, ChatMessage, InvalidRecord, decode_record
from roomcast.common.chatstream import ensure_chat_stream
from roomcast.common.mongo import UNAVAILABLE_ERRORS
from roomcast.common.natsconn import connect_nats
from roomcast.common.retry import Backoff, sleep_unless
from roomcast.common.subjects import ROOM_SUBJECT_PREFIX, STREAM_NAME
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
# How long to wait for buffered acks to reach the server when stopping.
FLUSH_TIMEOUT_SECONDS = 2
# How often the lag gauge is refreshed from the consumer's info.
LAG_POLL_SECONDS = 1.0


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        name=settings.consumer_name,
        durable_name=settings.consumer_name,
        description="roomcast notifier: turns chat records into notifications",
        # From the start of the stream on first creation: the first deploy notifies
        # what the stream still holds (a week at most) rather than silently skip it.
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_seconds,
        # Never give up on a record: the only reasons not to ack are MongoDB or rooms
        # being unavailable, and dropping a message then would lose its notifications.
        max_deliver=-1,
        max_ack_pending=settings.max_ack_pending,
        filter_subject=ROOM_SUBJECT_PREFIX + "*",
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


class NotifierConsumer:
    def __init__(
        self,
        settings: Settings,
        store: NotifierStore,
        directory: RoomDirectory,
        *,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.directory = directory
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._give_up_at: float | None = None
        # Called after each written batch (wakes the push and webhook workers).
        self._on_written = on_written

    @property
    def nats(self) -> NatsClient | None:
        return self._nc

    @property
    def nats_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self, stop: asyncio.Event) -> bool:
        backoff = Backoff()
        while not stop.is_set():
            try:
                self._nc = await connect_nats(self.settings.nats_url, name="roomcast-notifier")
                self._js = self._nc.jetstream()
                return True
            except Exception as exc:
                log.warning("cannot connect to NATS (%s); retrying", exc)
                await sleep_unless(stop, backoff.next_delay())
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set (``connect`` first); the batch in hand is
        finished first."""
        if self._js is None or not await self._prepare_store(stop):
            return
        lag_task = asyncio.create_task(self._track_lag(stop))
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
        assert self._js is not None
        backoff = Backoff()
        while not stop.is_set():
            try:
                await ensure_chat_stream(self._js, self.settings, update=False)
                try:
                    await self._js.add_consumer(STREAM_NAME, consumer_config(self.settings))
                except BadRequestError as exc:
                    # Exists with another configuration (an older deploy's): use it.
                    log.warning("consumer exists with another config: %s", exc)
                return await self._js.pull_subscribe_bind(
                    durable=self.settings.consumer_name, stream=STREAM_NAME
                )
            except Exception as exc:
                log.warning("cannot set up the JetStream consumer (%s); retrying", exc)
                await sleep_unless(stop, backoff.next_delay())
        return None

    async def _consume(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            try:
                msgs = await sub.fetch(
                    self.settings.batch_size, timeout=self.settings.fetch_timeout
                )
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:
                log.warning("fetch failed (%s); re-subscribing", exc)
                await sleep_unless(stop, backoff.next_delay())
                return
            backoff.reset()
            await self.handle_batch(msgs, stop)

    async def handle_batch(self, msgs: Sequence[Msg], stop: asyncio.Event) -> None:
        """Decide, write, then acknowledge one fetched batch."""
        started = time.perf_counter()
        backoff = Backoff()
        while True:
            try:
                inserted = await self._process(msgs)
                break
            except Exception as exc:
                metrics.WRITE_ERRORS.inc()
                expected = isinstance(exc, (RoomsUnavailable, *UNAVAILABLE_ERRORS))
                log.warning(
                    "batch failed (attempt %d): %s",
                    backoff.attempt + 1,
                    exc,
                    exc_info=backoff.attempt == 0 and not expected,
                )
            if stop.is_set():
                if self._give_up_at is None:
                    self._give_up_at = time.monotonic() + self.settings.shutdown_grace_seconds
                if time.monotonic() >= self._give_up_at:
                    for msg in msgs:  # hand the batch back now, not after ack_wait
                        with contextlib.suppress(Exception):
                            await msg.nak()
                    return
            for msg in msgs:  # keep the batch assigned to this replica while retrying
                with contextlib.suppress(Exception):
                    await msg.in_progress()
            await asyncio.sleep(backoff.next_delay())
        for msg in msgs:
            try:
                await msg.ack()
            except Exception as exc:
                # Written but not acknowledged: it comes back and is a no-op then.
                log.warning("ack failed (%s); the record will be redelivered", exc)
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
        assert self._js is not None
        try:
            raw = await self._js.get_msg(STREAM_NAME, seq)
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

    async def _track_lag(self, stop: asyncio.Event) -> None:
        assert self._js is not None
        while not stop.is_set():
            try:
                info = await self._js.consumer_info(STREAM_NAME, self.settings.consumer_name)
                metrics.CONSUMER_LAG.set((info.num_pending or 0) + (info.num_ack_pending or 0))
            except Exception as exc:
                log.debug("cannot read consumer info: %s", exc)
            await sleep_unless(stop, LAG_POLL_SECONDS)
