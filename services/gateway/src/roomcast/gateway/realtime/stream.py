"""The CHAT stream: its configuration, publishing, and reading a room's messages back.

Publishes go through roomcast.common.jspublisher: the publishes of one event-loop turn
leave in one socket write, acks come back on one inbox, and there is no task hop, timer
or random token per message (``js.publish`` had all three: most of the send side's CPU).

Reads use two tools, both verified on nats-server 2.9.10 and 2.15:

- direct get (stream ``allow_direct``): "the next message on subject S from seq N" and
  "the last message on subject S"; one request per message, the cheapest for the few
  messages of a typical gap or reconnect;
- an ephemeral push consumer filtered on the room's subject from a start sequence (ack
  none, in memory): one request, then the server streams the range; used for larger
  ranges, and its ``num_pending`` counts a room's messages after a sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
)
from nats.js.errors import NotFoundError

from roomcast.common.errors import RoomcastError
from roomcast.common.jspublisher import Ack, JetStreamPublisher, PublishFailed
from roomcast.common.subjects import (
    STREAM_NAME,
    room_subject,
)
from roomcast.gateway.errors import Unavailable
from roomcast.gateway.settings import Settings

log = logging.getLogger(__name__)

# JetStream API error code: "stream name already in use with a different configuration".
STREAM_NAME_IN_USE = 10058
# Ranges up to this many sequence numbers are read with direct gets (one request per
# message); wider ones with a consumer (one request, streamed). A reconnect typically
# misses a handful of messages; a consumer costs ~2 requests plus server-side state.
DIRECT_GET_SPAN = 16
# A replay consumer that the gateway failed to delete is removed by the server after
# this idle time.
CONSUMER_INACTIVE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    data: bytes
    headers: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class PublishResult:
    seq: int
    duplicate: bool


def publish_error(exc: BaseException) -> RoomcastError:
    """The error a client gets for a publish that failed with ``exc``: "unavailable,
    retry" for the failures a retry with the same client_id resolves (its deduplication
    answers a stored one with its seq)."""
    if isinstance(exc, PublishFailed | NatsError | OSError | asyncio.CancelledError):
        return Unavailable("message not stored: the stream is unavailable, retry")
    return RoomcastError("internal error")


class ChatStream:
    """Publishes chat records and reads a room's stored messages."""

    def __init__(self, nc: NatsClient, settings: Settings) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=settings.stream_request_timeout_seconds)
        self.publish_timeout = settings.publish_timeout_seconds
        self.request_timeout = settings.stream_request_timeout_seconds
        self.publisher = JetStreamPublisher(nc, timeout=settings.publish_timeout_seconds)
        self._publisher_ready: asyncio.Task[None] | None = None

    def publish_started(
        self, room: str, record: bytes, headers: dict[str, str], *, key: Hashable
    ) -> asyncio.Future[Ack] | None:
        """Queue one publish without an await: the future of its ack (failures are
        :func:`publish_error`'s to map), or None when it could not be queued (the
        publisher not started yet, NATS down, too many in flight): :meth:`publish`
        then reports why. Publishes of one ``key`` resolve in call order (jspublisher)."""
        ready = self._publisher_ready
        if ready is None or not ready.done() or ready.cancelled() or ready.exception():
            return None
        try:
            return self.publisher.publish(room_subject(room), record, headers, key=key)
        except (PublishFailed, NatsError, OSError):
            return None

    async def publish(self, room: str, record: bytes, headers: dict[str, str]) -> PublishResult:
        """Store one record; publishes of different callers are in flight together."""
        try:
            if self._publisher_ready is None:
                # Subscribing the ack inbox is one round trip, made by the first publish.
                self._publisher_ready = asyncio.ensure_future(self.publisher.start())
            if not self._publisher_ready.done():
                await asyncio.shield(self._publisher_ready)
            elif self._publisher_ready.exception() is not None:
                self._publisher_ready = None
                raise Unavailable("message not stored: the stream is unavailable, retry")
            ack = await self.publisher.publish(room_subject(room), record, headers)
        except (PublishFailed, NatsError, OSError) as exc:
            raise publish_error(exc) from exc
        return PublishResult(ack.seq, ack.duplicate)

    async def close(self) -> None:
        """Fail the publishes still awaiting their acks and drop the ack inbox."""
        await self.publisher.close()

    async def last_seq(self, room: str) -> int:
        """The sequence of the room's newest stored message; 0 if it has none."""
        try:
            msg = await self.js.get_last_msg(STREAM_NAME, room_subject(room), direct=True)
        except NotFoundError:
            return 0
        except (NatsError, OSError) as exc:
            raise Unavailable("stream unavailable") from exc
        return int(msg.seq or 0)

    async def is_stored(self, room: str, seq: int) -> bool:
        """Whether message ``seq`` is still in the stream and belongs to ``room``."""
        try:
            msg = await self.js.get_msg(STREAM_NAME, seq=seq, direct=True)
        except NotFoundError:
            return False
        except (NatsError, OSError) as exc:
            raise Unavailable("stream unavailable") from exc
        return msg.subject == room_subject(room)

    async def stored_record(self, room: str, seq: int) -> bytes | None:
        """The record stored as ``seq`` if it is still in the stream and in ``room``."""
        try:
            msg = await self.js.get_msg(STREAM_NAME, seq=seq, direct=True)
        except NotFoundError:
            return None
        except (NatsError, OSError) as exc:
            raise Unavailable("stream unavailable") from exc
        if msg.subject != room_subject(room):
            return None
        return msg.data or b""

    async def pending_after(self, room: str, after: int) -> int:
        """How many of the room's messages have a sequence greater than ``after``."""
        config = ConsumerConfig(
            filter_subject=room_subject(room),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            # Pull consumers need an ack policy other than none on older servers; this
            # one only reports num_pending and is deleted at once.
            ack_policy=AckPolicy.EXPLICIT,
            mem_storage=True,
            inactive_threshold=CONSUMER_INACTIVE_SECONDS,
        )
        try:
            info = await self.js.add_consumer(STREAM_NAME, config)
        except (NatsError, OSError) as exc:
            raise Unavailable("stream unavailable") from exc
        await self._delete_consumer(info.name)
        return int(info.num_pending or 0)

    async def read(
        self, room: str, *, after: int, upto: int, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """The room's messages with ``after < seq <= upto``, oldest first, at most
        ``limit``; and whether that is all of them."""
        if upto <= after or limit <= 0:
            return [], upto <= after
        if upto - after <= DIRECT_GET_SPAN:
            return await self._read_direct(room, after=after, upto=upto, limit=limit)
        return await self._read_consumer(room, after=after, upto=upto, limit=limit)

    async def read_tail(
        self, room: str, *, after: int, upto: int, cap: int
    ) -> tuple[list[StoredMessage], int, bool]:
        """The room's messages in ``(after, upto]``, or only the newest ``cap`` of them.

        Returns ``(messages, prev, capped)``: ``prev`` is the sequence of the room's
        message before the first returned one (``after`` unless capped).
        """
        if upto - after > cap:
            count = await self.pending_after(room, after)
            if count > cap:
                newer = await self.pending_after(room, upto)  # arrived since upto was read
                target = cap + 1 + newer
                if count >= target:
                    # pending_after() falls by at most one per sequence: find the last
                    # start whose pending count is exactly target, in log2(span) probes.
                    lo, hi = after, upto
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        if await self.pending_after(room, mid) >= target:
                            lo = mid
                        else:
                            hi = mid
                    messages, _ = await self.read(room, after=lo, upto=upto, limit=cap + 1)
                    if len(messages) > cap:
                        return messages[1:], messages[0].seq, True
                    return messages, 0, True  # the message before the first is unknown
        messages, complete = await self.read(room, after=after, upto=upto, limit=cap)
        return messages, after, not complete

    async def _read_direct(
        self, room: str, *, after: int, upto: int, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        subject = room_subject(room)
        out: list[StoredMessage] = []
        seq = after
        while seq < upto:
            if len(out) >= limit:
                return out, False
            try:
                raw = await self.js.get_msg(
                    STREAM_NAME, seq=seq + 1, subject=subject, direct=True, next=True
                )
            except NotFoundError:
                break
            except (NatsError, OSError) as exc:
                raise Unavailable("stream unavailable") from exc
            seq = int(raw.seq or 0)
            if seq <= after or seq > upto:
                break
            out.append(StoredMessage(seq, raw.data or b"", raw.headers))
        return out, True

    async def _read_consumer(
        self, room: str, *, after: int, upto: int, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        out: list[StoredMessage] = []
        done = asyncio.get_running_loop().create_future()
        expected = 0  # set once the consumer reports how many messages it will deliver

        async def on_msg(msg: Msg) -> None:
            if done.done():
                return
            try:
                seq = msg.metadata.sequence.stream
            except (ValueError, IndexError, AttributeError):
                return  # not a consumer delivery (status or heartbeat)
            if seq > upto:
                done.set_result(True)
                return
            out.append(StoredMessage(seq, msg.data, msg.headers))
            if len(out) >= limit:
                done.set_result(seq >= upto or 0 < expected <= len(out))
            elif seq == upto or (expected and len(out) >= expected):
                done.set_result(True)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_msg)
        name: str | None = None
        try:
            config = ConsumerConfig(
                filter_subject=room_subject(room),
                deliver_subject=inbox,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after + 1,
                ack_policy=AckPolicy.NONE,
                mem_storage=True,
                inactive_threshold=CONSUMER_INACTIVE_SECONDS,
            )
            info = await self.js.add_consumer(STREAM_NAME, config)
            name = info.name
            expected = int(info.num_pending or 0)
            if (expected == 0 or len(out) >= expected) and not done.done():
                done.set_result(True)
            complete = await asyncio.wait_for(done, self.request_timeout)
        except (NatsError, OSError, TimeoutError) as exc:
            raise Unavailable("stream unavailable") from exc
        finally:
            with contextlib.suppress(NatsError, OSError):
                await sub.unsubscribe()
            if name is not None:
                await self._delete_consumer(name)
        return out, bool(complete)

    async def _delete_consumer(self, name: str) -> None:
        try:
            await self.js.delete_consumer(STREAM_NAME, name)
        except (NatsError, OSError) as exc:
            # inactive_threshold removes it anyway.
            log.debug("replay consumer not deleted", extra={"error": repr(exc)})
