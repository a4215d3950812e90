"""Live fan-out: one NATS subscription per room with local sockets, one frame per message.

The stream republishes every stored message on ``live.room.<id>`` with its sequence and
the previous sequence of the same room. For each room with local subscribers this module
holds a :class:`RoomChannel`:

- the NATS subscription (reference counted by the sockets subscribed to the room,
  unsubscribed when the last one leaves);
- ``last``: the sequence of the last message relayed. A message whose ``prev`` is past
  ``last`` reveals a gap (a core-NATS message lost, a reconnect): live messages are held
  while the missing ones are read from the stream and relayed in order;
- ``live``: the sockets receiving the room, each with its transport's write function.
  A message is framed once (JSON and WebSocket header) and the same bytes are written to
  every socket: no per-socket encoding, allocation, await or log;
- ``catching_up``: sockets replaying ``since`` from the stream; the live messages relayed
  meanwhile are buffered per socket and flushed, without duplicates, when the replay ends.

Private messages (``to``) are written in full to the sender's and the recipient's
sockets; everyone else gets a ``skip`` frame with the same seq/prev, so every chain stays
whole without revealing the content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from roomcast.common.natsinline import subscribe_inline
from roomcast.common.subjects import live_subject
from roomcast.gateway import metrics
from roomcast.gateway.errors import Unavailable
from roomcast.gateway.realtime.protocol import (
    is_record,
    private_recipients,
    record_frame,
    skip_frame,
    subscribed_frame,
    unsubscribed_frame,
    ws_text,
)
from roomcast.gateway.realtime.stream import ChatStream, StoredMessage

log = logging.getLogger(__name__)

_perf = time.perf_counter


class Subscriber(Protocol):
    """What the fan-out needs from a socket (implemented by connection.Connection)."""

    user_id: str
    rooms: dict[str, RoomChannel]
    write: Callable[[bytes], object]

    def send_payload(self, payload: bytes) -> None: ...

    def too_slow(self) -> None: ...

    async def wait_writable(self) -> None: ...


Pending = tuple[int, int, bytes, "dict[str, str] | None", float]


class RoomChannel:
    __slots__ = (
        "catching_up",
        "closed",
        "error",
        "last",
        "live",
        "pending",
        "ready",
        "repairing",
        "room_id",
        "sub",
        "task",
    )

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.live: dict[Subscriber, Callable[[bytes], object]] = {}
        self.catching_up: dict[Subscriber, list[tuple[int, bytes]]] = {}
        self.last = 0
        # Until the room's head is read, live messages wait in ``pending`` like a repair.
        self.repairing = True
        self.pending: list[Pending] = []
        self.sub: Subscription | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: Exception | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def empty(self) -> bool:
        return not self.live and not self.catching_up


class Fanout:
    def __init__(
        self,
        nc: NatsClient,
        stream: ChatStream,
        *,
        max_replay: int,
        max_buffered: int,
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.max_replay = max_replay
        self.max_buffered = max_buffered
        self.rooms: dict[str, RoomChannel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- room lifecycle ------------------------------------------------------------

    def _acquire(self, room_id: str) -> RoomChannel:
        room = self.rooms.get(room_id)
        if room is None:
            room = RoomChannel(room_id)
            self.rooms[room_id] = room
            metrics.ROOM_SUBSCRIPTIONS.inc()
            room.task = self._spawn(self._open(room))
        return room

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _open(self, room: RoomChannel) -> None:
        try:
            # Relayed as nats-py parses each message (roomcast.common.natsinline): no
            # queue, task wake-up and coroutine per live message; _on_live never awaits.
            room.sub = await subscribe_inline(
                self.nc, live_subject(room.room_id), lambda msg: self._on_live(room, msg)
            )
            if room.closed:  # everyone left while subscribing
                self._spawn(self._unsubscribe(room.sub))
                return
            # The server must know the subscription before the head is read, so every
            # message after the head is received live.
            await self.nc.flush(timeout=max(1, int(self.stream.request_timeout)))
            head = await self.stream.last_seq(room.room_id)
        except Exception as exc:
            log.warning("room subscription failed", extra={"error": repr(exc)})
            room.error = Unavailable("live stream unavailable, retry")
            self._close_room(room)
            return
        finally:
            room.task = None
            if not room.ready.done():
                room.ready.set_result(None)
        if room.closed:
            return
        room.last = head
        self._finish_repair(room)

    def _close_room(self, room: RoomChannel) -> None:
        if room.closed:
            return
        room.closed = True
        if self.rooms.get(room.room_id) is room:
            del self.rooms[room.room_id]
            metrics.ROOM_SUBSCRIPTIONS.dec()
        # A repair is cancelled; the opening task (ready not done) finishes by itself
        # and unsubscribes what it subscribed.
        if room.task is not None and room.ready.done() and room.task is not asyncio.current_task():
            room.task.cancel()
        if not room.ready.done() and room.error is None:
            room.error = Unavailable("room closed")
        for sub in list(room.live) + list(room.catching_up):
            self._detach(sub, room)
        if room.sub is not None:
            self._spawn(self._unsubscribe(room.sub))
            room.sub = None

    async def _unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    def _detach(self, subscriber: Subscriber, room: RoomChannel) -> None:
        had = room.live.pop(subscriber, None) is not None
        had = room.catching_up.pop(subscriber, None) is not None or had
        if subscriber.rooms.get(room.room_id) is room:
            del subscriber.rooms[room.room_id]
            metrics.SUBSCRIPTIONS.dec()
        if had and room.empty and not room.closed:
            self._close_room(room)

    # --- live path -----------------------------------------------------------------

    def _on_live(self, room: RoomChannel, msg: Msg) -> None:
        received = _perf()
        headers = msg.headers
        try:
            seq = int(headers["Nats-Sequence"])  # type: ignore[index]
            prev = int(headers["Nats-Last-Sequence"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            log.warning("live message without sequence headers dropped")
            return
        last = room.last
        if room.repairing or seq <= last or prev > last:
            self._process(room, seq, prev, msg.data, headers, received)
        else:  # the next link of the chain, the common case: _process's last branch
            self._relay(room, seq, prev, msg.data, headers, received)

    def _process(
        self,
        room: RoomChannel,
        seq: int,
        prev: int,
        data: bytes,
        headers: dict[str, str] | None,
        received: float,
    ) -> None:
        if room.repairing:
            if len(room.pending) < self.max_buffered:
                room.pending.append((seq, prev, data, headers, received))
            # else dropped: it is read back from the stream by the next gap repair.
            return
        if seq <= room.last:
            return  # already relayed (a repair read it from the stream first)
        if prev > room.last:
            # Messages (last, prev] never arrived: hold this one, fetch them, go on.
            room.pending.append((seq, prev, data, headers, received))
            self._start_repair(room, prev)
            return
        self._relay(room, seq, prev, data, headers, received)

    def _relay(
        self,
        room: RoomChannel,
        seq: int,
        prev: int,
        data: bytes,
        headers: dict[str, str] | None,
        received: float,
    ) -> None:
        room.last = seq
        if not is_record(data):
            return
        private = private_recipients(data, headers)
        payload = record_frame(seq, prev, data, headers)
        failed: list[Subscriber] | None = None
        if private is None:
            frame = ws_text(payload)
            for subscriber, write in room.live.items():
                try:
                    write(frame)
                except Exception:  # the transport closed under us; dropped below
                    if failed is None:
                        failed = []
                    failed.append(subscriber)
            if room.catching_up:
                self._buffer(room, seq, payload, payload, "", "")
        else:
            sender, to = private
            skip = skip_frame(room.room_id, seq, prev)
            frame = ws_text(payload)
            skip_ws = ws_text(skip)
            for subscriber, write in room.live.items():
                user = subscriber.user_id
                try:
                    write(frame if user in (sender, to) else skip_ws)
                except Exception:
                    if failed is None:
                        failed = []
                    failed.append(subscriber)
            if room.catching_up:
                self._buffer(room, seq, payload, skip, sender, to)
        metrics.DELIVERIES.inc(len(room.live))
        metrics.FANOUT_SECONDS.observe(_perf() - received)
        if failed:
            for subscriber in failed:
                self._detach(subscriber, room)

    def _buffer(
        self, room: RoomChannel, seq: int, full: bytes, skip: bytes, sender: str, to: str
    ) -> None:
        overflow: list[Subscriber] | None = None
        for subscriber, buffered in room.catching_up.items():
            if len(buffered) >= self.max_buffered:
                if overflow is None:
                    overflow = []
                overflow.append(subscriber)
                continue
            user = subscriber.user_id
            buffered.append((seq, full if not to or user in (sender, to) else skip))
        if overflow:
            for subscriber in overflow:
                self._detach(subscriber, room)
                subscriber.too_slow()

    # --- gap repair ----------------------------------------------------------------

    def _start_repair(self, room: RoomChannel, upto: int | None) -> None:
        room.repairing = True
        room.task = self._spawn(self._repair(room, upto))

    async def _repair(self, room: RoomChannel, upto: int | None) -> None:
        try:
            target = upto if upto is not None else await self.stream.last_seq(room.room_id)
            if target > room.last:
                messages, complete = await self.stream.read(
                    room.room_id, after=room.last, upto=target, limit=self.max_replay
                )
                if room.closed:
                    return
                metrics.GAP_REPAIRS.inc()
                metrics.GAP_REPAIRED_MESSAGES.inc(len(messages))
                prev = room.last
                for m in messages:
                    self._relay(room, m.seq, prev, m.data, m.headers, _perf())
                    prev = m.seq
                if not complete:
                    # Too many to relay: jump; clients see prev != their last and
                    # recover the rest from history.
                    log.warning("gap larger than the repair limit", extra={"gap_to": target})
                    room.last = max(room.last, target)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Give up on this gap rather than retry in a loop: the messages still
            # carry their true prev, so clients detect the hole and use history.
            log.warning("gap repair failed", extra={"error": repr(exc)})
            if upto is not None:
                room.last = max(room.last, upto)
        finally:
            if not room.closed:
                room.task = None
                self._finish_repair(room)

    def _finish_repair(self, room: RoomChannel) -> None:
        room.repairing = False
        items, room.pending = room.pending, []
        for i, (seq, prev, data, headers, received) in enumerate(items):
            self._process(room, seq, prev, data, headers, received)
            if room.repairing:  # another gap: keep the rest, in order, behind it
                room.pending.extend(items[i + 1 :])
                return

    def resync_all(self) -> None:
        """After a NATS reconnect: relay whatever each room missed while disconnected."""
        for room in list(self.rooms.values()):
            if not room.repairing and not room.closed:
                self._start_repair(room, None)

    # --- subscriptions -------------------------------------------------------------

    async def subscribe(self, subscriber: Subscriber, room_id: str, since: int | None) -> None:
        """Send ``subscribed``, replay what ``since`` missed, then go live; no gap, no
        duplicate across the switch."""
        room = subscriber.rooms.get(room_id)
        if room is not None and subscriber in room.live:
            if since is None:
                subscriber.send_payload(subscribed_frame(room_id, room.last))
                return
            del room.live[subscriber]  # replay again, then back to live
        elif room is None:
            room = self._acquire(room_id)
            subscriber.rooms[room_id] = room
            metrics.SUBSCRIPTIONS.inc()
        buffered: list[tuple[int, bytes]] = []
        room.catching_up[subscriber] = buffered
        try:
            await asyncio.shield(room.ready)
            if room.error is not None:
                raise room.error
            if room.catching_up.get(subscriber) is not buffered:
                return  # unsubscribed or closed meanwhile
            head = room.last
            truncated = False
            messages: list[StoredMessage] = []
            prev = 0
            if (
                since is not None
                and 0 < since != head
                and not await self.stream.is_stored(room_id, since)
            ):
                # Purged (retention removes oldest first) or not a message of this
                # room: the client must page history; a bogus since never hides
                # newer messages.
                truncated = True
                since = min(since, head)
            last_sent = head if since is None else max(head, since)
            if since is not None and since < head:
                messages, prev, capped = await self.stream.read_tail(
                    room_id, after=since, upto=head, cap=self.max_replay
                )
                if truncated and not capped:
                    prev = 0  # the message before the first stored one is gone
                truncated = truncated or capped
            if room.catching_up.get(subscriber) is not buffered:
                return
            subscriber.send_payload(subscribed_frame(room_id, head, truncated=truncated))
            if messages:
                await self._replay(subscriber, room, messages, prev)
                last_sent = max(last_sent, messages[-1].seq)
            if since is not None:
                metrics.RESUME_MESSAGES.observe(len(messages))
            if room.catching_up.get(subscriber) is not buffered:
                return
        except BaseException:
            if room.catching_up.get(subscriber) is buffered:
                self._detach(subscriber, room)
            raise
        # From here to the end: no await, so nothing is relayed in between.
        del room.catching_up[subscriber]
        for seq, payload in buffered:
            if seq > last_sent:
                subscriber.send_payload(payload)
        room.live[subscriber] = subscriber.write

    async def _replay(
        self,
        subscriber: Subscriber,
        room: RoomChannel,
        messages: list[StoredMessage],
        prev: int,
    ) -> None:
        user = subscriber.user_id
        for m in messages:
            if not is_record(m.data):
                continue
            private = private_recipients(m.data, m.headers)
            if private is None or user in private:
                subscriber.send_payload(record_frame(m.seq, prev, m.data, m.headers))
            else:
                subscriber.send_payload(skip_frame(room.room_id, m.seq, prev))
            prev = m.seq
            # Replays are flow-controlled: wait for the socket to drain rather than
            # letting a large replay look like a slow reader.
            await subscriber.wait_writable()
        metrics.DELIVERIES.inc(len(messages))

    def unsubscribe(self, subscriber: Subscriber, room_id: str) -> bool:
        room = subscriber.rooms.get(room_id)
        if room is None:
            return False
        self._detach(subscriber, room)
        return True

    def detach_all(self, subscriber: Subscriber) -> None:
        for room in list(subscriber.rooms.values()):
            self._detach(subscriber, room)

    # --- events --------------------------------------------------------------------

    def subscribers(self, room_id: str) -> list[Subscriber]:
        room = self.rooms.get(room_id)
        if room is None:
            return []
        return [*room.live, *room.catching_up]

    def broadcast(self, room_id: str, payload: bytes) -> int:
        """Write an unsequenced frame (an event) to every socket of the room."""
        targets = self.subscribers(room_id)
        for subscriber in targets:
            subscriber.send_payload(payload)
        return len(targets)

    def end_subscriptions(
        self, room_id: str, *, user_id: str | None, reason: str, notice: bytes | None
    ) -> int:
        """End the room's subscriptions (of one user, or all): the notice, then
        ``unsubscribed`` with the reason."""
        ended = 0
        for subscriber in self.subscribers(room_id):
            if user_id is not None and subscriber.user_id != user_id:
                continue
            if notice is not None:
                subscriber.send_payload(notice)
            self.unsubscribe(subscriber, room_id)
            subscriber.send_payload(unsubscribed_frame(room_id, reason))
            ended += 1
        return ended

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            self._close_room(room)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
