"""Per-session state and the frame router: seq chains, gap/duplicate detection, acks,
the item buffer behind ``async for``. Runs synchronously inside picows' frame callback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import ClientError, RequestRejected, SendUnconfirmed
from .models import (
    Ack,
    Change,
    ErrorFrame,
    Event,
    Gap,
    Item,
    Message,
    Presence,
    Reaction,
    ReadReceipt,
    Sender,
    SocketStats,
    Subscribed,
    Typing,
    Unsubscribed,
)
from .wire import Wire

log = logging.getLogger("roomcast.client")


class RoomState:
    """What the session knows about one subscribed room."""

    __slots__ = (
        "confirmed",
        "held",
        "held_truncated",
        "in_flight",
        "last_seq",
        "replay_until",
        "retries",
        "room",
        "sent_since",
        "unchecked",
        "waiters",
    )

    def __init__(self, room: str, last_seq: int | None) -> None:
        self.room = room
        #: The seq of the last message/skip seen; None until subscribed.
        self.last_seq = last_seq
        #: ``since`` of the last subscribe frame sent.
        self.sent_since: int | None = None
        #: Messages up to this seq are replays (the head when a ``since`` subscribe began).
        self.replay_until = 0
        #: The next frame's ``prev`` is not checked (after a truncated replay).
        self.unchecked = False
        #: Subscribed at least once (later subscribes are resumes).
        self.confirmed = False
        #: A subscribe frame is out and not answered yet.
        self.in_flight = False
        #: Consecutive transient failures of a resume (for its retry backoff).
        self.retries = 0
        #: Sends of this room held until its resume tells whether they were stored.
        self.held = 0
        #: The resume that releases them was truncated (they cannot be checked).
        self.held_truncated = False
        self.waiters: list[asyncio.Future[Subscribed]] = []


class PendingSend:
    """A send, edit, delete, react or unreact frame waiting for its ack (re-sent verbatim after
    reconnects while the server can still deduplicate it, see connector.py)."""

    __slots__ = (
        "client_id",
        "first_sent",
        "frame",
        "future",
        "held",
        "kind",
        "retries",
        "room",
        "stored",
        "transmitted",
    )

    def __init__(
        self,
        client_id: str,
        frame: bytes,
        future: asyncio.Future[Ack],
        *,
        room: str = "",
        kind: str = "send",
    ) -> None:
        self.client_id = client_id
        self.frame = frame
        self.future = future
        self.room = room
        self.kind = kind
        self.transmitted = False
        self.retries = 0
        #: When it was first transmitted (monotonic): the earliest moment it can have
        #: been stored, so the start of the server's deduplication window for it.
        self.first_sent: float | None = None
        #: Not re-sent: waiting for its room's resume to tell whether it was stored.
        self.held = False
        #: ``(id, seq)`` of this very message, seen in its room before any ack.
        self.stored: tuple[str, int] | None = None

    def mark_sent(self) -> None:
        self.transmitted = True
        if self.first_sent is None:
            self.first_sent = time.monotonic()


# Error codes that say "not now" rather than "no": a send failing with one of these stays
# pending and is re-sent after the reconnect the gateway is about to force (1012).
RESEND_CODES = frozenset({"gateway_restarting"})
# A send refused with one of these is re-sent on the same connection after a backoff,
# with the same client_id (so it is still stored at most once).
RETRY_SEND_CODES = frozenset({"rate_limited"})
# A resume (automatic re-subscribe) refused with one of these is retried later on the
# same connection instead of dropping the room.
RETRY_SUBSCRIBE_CODES = frozenset({"unavailable", "rate_limited", "dependency_unavailable"})
# Commands whose stored record names our client_id in the room's chain (a message, a
# reaction): seen there, they are known stored without their ack; past the resend window
# they wait for the room's resume instead of going out again (connector.py).
CHAINED_KINDS = frozenset({"send", "react", "unreact"})
# The command behind a reaction record, by its ``op``.
REACTION_COMMANDS = {"add": "react", "remove": "unreact"}
# Errors with a room ref that never answer a subscribe (typing/read/presence refusals).
NOT_SUBSCRIBE_CODES = frozenset({"unsupported", "not_subscribed"})


class FrameRouter:
    """Handles decoded frames of the current wire and buffers items for the reader."""

    def __init__(
        self,
        stats: SocketStats,
        on_item: Callable[[Item], None] | None,
        on_gap: Callable[[Gap], None] | None,
        max_buffered_items: int,
    ) -> None:
        self.stats = stats
        self._on_item = on_item
        self._on_gap = on_gap
        self._high_water = max(1, max_buffered_items)
        self._low_water = self._high_water // 4
        self._wire: Wire | None = None
        self._rooms: dict[str, RoomState] = {}
        self._pending: dict[str, PendingSend] = {}
        self._pings: deque[tuple[float, asyncio.Future[float]]] = deque()
        self._unsub_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._items: deque[Item] = deque()
        self._reader: asyncio.Future[None] | None = None
        self._closed = False
        self._error: ClientError | None = None
        #: The ``user`` object of the last ``ready`` frame.
        self.user: dict[str, Any] | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "message": self._on_message,
            "skip": self._on_skip,
            "edit": self._on_change,
            "delete": self._on_change,
            "reaction": self._on_reaction,
            "read": self._on_read,
            "ack": self._on_ack,
            "subscribed": self._on_subscribed,
            "unsubscribed": self._on_unsubscribed,
            "event": self._on_event,
            "typing": self._on_typing,
            "presence": self._on_presence,
            "error": self._on_error,
            "pong": self._on_pong,
            "ready": self._on_reauthenticated,
        }

    # Implemented by the session (they need its connection machinery).
    def _on_ready(self, wire: Wire, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def _on_reauthenticated(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def _retry_subscribe_later(self, state: RoomState) -> None:
        raise NotImplementedError

    def _retry_send_later(self, pending: PendingSend) -> None:
        raise NotImplementedError

    def _release_held(self, state: RoomState) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ dispatch

    def _on_frame(self, wire: Wire, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if wire is not self._wire:
            # Not ready yet (or a stale connection): only the handshake matters.
            if kind == "ready":
                self._on_ready(wire, data)
            elif kind == "error":
                wire.auth_error = (str(data.get("code")), str(data.get("message")))
            return
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            log.debug("ignored a frame of unknown type %r", kind)
            return
        try:
            handler(data)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("dropped a malformed %s frame: %r", kind, exc)

    def _advance(self, state: RoomState, seq: int, prev: int) -> bool:
        """Move the room's chain to ``seq``; False for a duplicate (drop it)."""
        last = state.last_seq
        if last is not None:
            if seq <= last:
                self.stats.duplicates += 1
                return False
            if prev != last and not state.unchecked:
                self.stats.gaps += 1
                gap = Gap(state.room, last, prev, seq)
                log.warning("gap in %s: expected prev %d, got %d", state.room, last, prev)
                if self._on_gap is not None:
                    try:
                        self._on_gap(gap)
                    except Exception:
                        log.exception("on_gap callback failed")
        state.unchecked = False
        state.last_seq = seq
        if state.held and seq >= state.replay_until:
            self._release_held(state)
        return True

    def _on_message(self, data: dict[str, Any]) -> None:
        room = data["room"]
        seq = int(data["seq"])
        prev = int(data.get("prev") or 0)
        replayed = False
        if self._pending:
            # Before _advance: the end of a resume releases the sends it did not contain.
            client_id = data.get("client_id")
            if client_id is not None:
                self._saw_stored(room, client_id, seq, data)
        state = self._rooms.get(room)
        if state is not None:
            if not self._advance(state, seq, prev):
                return
            if seq <= state.replay_until:
                replayed = True
                self.stats.resumed_messages += 1
        self.stats.messages += 1
        get = data.get
        self._deliver(
            Message(  # positional: measurably cheaper on this per-frame path
                room,
                str(get("id", "")),
                seq,
                prev,
                Sender.from_wire(get("sender")),
                get("body") or {},
                get("sent_at"),
                get("to"),
                replayed,
                get("reply_to"),
                get("mentions") or [],
            )
        )

    def _saw_stored(
        self, room: str, client_id: object, seq: int, data: dict[str, Any], kind: str = "send"
    ) -> None:
        """A record of ours carrying a pending command's client_id: a message for a
        ``send``, a reaction (op ``add``/``remove``) for a ``react``/``unreact``. Proof
        it is stored (its ack may still come, or be lost with the connection)."""
        pending = self._pending.get(client_id) if isinstance(client_id, str) else None
        if pending is None or pending.kind != kind or pending.room != room:
            return
        sender = data.get("sender")
        own_id = self.user.get("id") if self.user is not None else None
        if not isinstance(sender, dict) or own_id is None or sender.get("id") != own_id:
            return  # another user's record with the same client_id
        # A reaction has no id of its own: its ack names it by its seq, as here.
        pending.stored = (str(data.get("id", seq)), seq)
        if pending.held:
            self._confirm_stored(pending)

    def _confirm_stored(self, pending: PendingSend) -> None:
        """Resolve a send known to be stored, as the duplicate ack a resend would get."""
        assert pending.stored is not None
        self._drop_pending(pending)
        self.stats.acks += 1
        self.stats.duplicate_acks += 1
        self.stats.confirmed_by_resume += 1
        if not pending.future.done():
            message_id, seq = pending.stored
            pending.future.set_result(Ack(pending.client_id, message_id, seq, True))

    def _unconfirmed(self, pending: PendingSend) -> None:
        self._drop_pending(pending)
        self.stats.unconfirmed_sends += 1
        if not pending.future.done():
            pending.future.set_exception(
                SendUnconfirmed(
                    "unconfirmed",
                    "no ack, and too old to re-send safely; it may or may not be stored",
                    pending.client_id,
                )
            )

    def _drop_pending(self, pending: PendingSend) -> None:
        if self._pending.get(pending.client_id) is pending:
            del self._pending[pending.client_id]
        if pending.held:
            pending.held = False
            state = self._rooms.get(pending.room)
            if state is not None and state.held > 0:
                state.held -= 1

    def _fail_held(self, room: str) -> None:
        """The room is gone from the session: its held sends cannot be checked."""
        for pending in [p for p in self._pending.values() if p.held and p.room == room]:
            self._unconfirmed(pending)

    def _chained(self, data: dict[str, Any]) -> tuple[str, int, int, bool] | None:
        """A stored record's (room, seq, prev, replayed) with the room's chain moved to
        it; None for a duplicate (drop it)."""
        room = data["room"]
        seq = int(data["seq"])
        prev = int(data.get("prev") or 0)
        replayed = False
        state = self._rooms.get(room)
        if state is not None:
            if not self._advance(state, seq, prev):
                return None
            replayed = seq <= state.replay_until
        return room, seq, prev, replayed

    def _on_change(self, data: dict[str, Any]) -> None:
        chained = self._chained(data)
        if chained is None:
            return
        room, seq, prev, replayed = chained
        kind = str(data["type"])
        self._deliver(
            Change(
                kind,
                room,
                seq,
                prev,
                int(data["target_seq"]),
                Sender.from_wire(data.get("sender")),
                data.get("body") if kind == "edit" else None,
                data.get("edited_at") or data.get("deleted_at"),
                replayed,
            )
        )

    def _on_reaction(self, data: dict[str, Any]) -> None:
        if self._pending:
            # Before _chained: the end of a resume releases the reacts it did not contain.
            client_id = data.get("client_id")
            if client_id is not None:
                op = data.get("op")
                kind = REACTION_COMMANDS.get(op) if isinstance(op, str) else None
                if kind is not None:
                    self._saw_stored(str(data["room"]), client_id, int(data["seq"]), data, kind)
        chained = self._chained(data)
        if chained is None:
            return
        room, seq, prev, replayed = chained
        self._deliver(
            Reaction(
                room,
                seq,
                prev,
                int(data["target_seq"]),
                Sender.from_wire(data.get("sender")),
                str(data.get("emoji", "")),
                str(data.get("op", "")),
                data.get("sent_at"),
                replayed,
            )
        )

    def _on_read(self, data: dict[str, Any]) -> None:
        user = data.get("user")
        self._deliver(
            ReadReceipt(str(data["room"]), user if isinstance(user, dict) else {}, int(data["seq"]))
        )

    def _on_skip(self, data: dict[str, Any]) -> None:
        self.stats.skips += 1
        state = self._rooms.get(data["room"])
        if state is not None:
            self._advance(state, int(data["seq"]), int(data.get("prev") or 0))

    def _on_ack(self, data: dict[str, Any]) -> None:
        pending = self._pending.get(str(data["client_id"]))
        if pending is None:
            return
        self._drop_pending(pending)
        if pending.future.done():
            return
        duplicate = bool(data.get("duplicate"))
        self.stats.acks += 1
        self.stats.duplicate_acks += duplicate
        pending.future.set_result(
            Ack(pending.client_id, str(data.get("id", "")), int(data["seq"]), duplicate)
        )

    def _on_subscribed(self, data: dict[str, Any]) -> None:
        state = self._rooms.get(data["room"])
        if state is None:
            return
        seq = int(data.get("seq") or 0)
        truncated = bool(data.get("truncated"))
        since = state.sent_since
        state.in_flight = False
        state.retries = 0
        if state.last_seq is None:
            state.last_seq = seq
        if since is not None:
            state.replay_until = seq
        if truncated:
            state.unchecked = True
            self.stats.truncated_resumes += 1
        if state.held:
            state.held_truncated = truncated
            if state.last_seq is not None and state.last_seq >= seq:
                self._release_held(state)  # nothing to replay
        item = Subscribed(state.room, seq, since, truncated, resumed=state.confirmed)
        state.confirmed = True
        waiters, state.waiters = state.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(item)
        if not waiters and item.resumed:
            self._deliver(item)

    def _on_unsubscribed(self, data: dict[str, Any]) -> None:
        room = data["room"]
        waiters = self._unsub_waiters.pop(room, None)
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return
        reason = data.get("reason")
        self._fail_held(room)
        state = self._rooms.pop(room, None)
        if state is not None:
            for sub_waiter in state.waiters:
                if not sub_waiter.done():
                    sub_waiter.set_exception(
                        RequestRejected(str(reason or "unsubscribed"), "unsubscribed", room)
                    )
        self._deliver(Unsubscribed(room, reason if isinstance(reason, str) else None))

    def _on_event(self, data: dict[str, Any]) -> None:
        self._deliver(Event(str(data.get("room", "")), str(data.get("event", "")), data))

    def _on_typing(self, data: dict[str, Any]) -> None:
        self._deliver(Typing(str(data.get("room", "")), data))

    def _on_presence(self, data: dict[str, Any]) -> None:
        room = data.get("room")
        self._deliver(Presence(room if isinstance(room, str) else None, data))

    def _on_error(self, data: dict[str, Any]) -> None:
        code = str(data.get("code", "error"))
        message = str(data.get("message", ""))
        ref = data.get("ref")
        ref = str(ref) if ref is not None else None
        self.stats.rejected += 1
        if ref is not None:
            pending = self._pending.get(ref)
            if pending is not None:
                if code in RETRY_SEND_CODES:
                    self._retry_send_later(pending)
                elif code not in RESEND_CODES:
                    del self._pending[ref]
                    if not pending.future.done():
                        retry = data.get("retry_after")
                        wait = float(retry) if isinstance(retry, int | float) else None
                        pending.future.set_exception(
                            RequestRejected(code, message, ref, retry_after=wait)
                        )
                return
            state = self._rooms.get(ref)
            if state is not None and state.in_flight and code not in NOT_SUBSCRIBE_CODES:
                self._subscribe_refused(state, code, message)
                return
        self._deliver(ErrorFrame(code, message, ref))

    def _subscribe_refused(self, state: RoomState, code: str, message: str) -> None:
        state.in_flight = False
        if code in RESEND_CODES:
            return  # the gateway is going away; the resume happens on the next one
        if state.waiters:
            # An explicit subscribe() was refused: forget the room, tell the caller.
            self._fail_held(state.room)
            del self._rooms[state.room]
            waiters, state.waiters = state.waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(RequestRejected(code, message, state.room))
        elif code in RETRY_SUBSCRIBE_CODES:
            self._retry_subscribe_later(state)
        else:
            # A resume refused for good (kicked or room deleted while away).
            self._fail_held(state.room)
            del self._rooms[state.room]
            self._deliver(Unsubscribed(state.room, code))

    def _on_pong(self, _data: dict[str, Any]) -> None:
        if self._pings:
            started, waiter = self._pings.popleft()
            if not waiter.done():
                waiter.set_result(time.perf_counter() - started)

    # ------------------------------------------------------- item delivery

    def _deliver(self, item: Item) -> None:
        if self._on_item is not None:
            try:
                self._on_item(item)
            except Exception:
                log.exception("on_item callback failed")
            return
        self._items.append(item)
        wire = self._wire
        if len(self._items) >= self._high_water and wire is not None and not wire.paused:
            self.stats.read_pauses += 1
            wire.set_reading(False)
        self._wake_reader()

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def __aiter__(self) -> FrameRouter:
        return self

    async def __anext__(self) -> Item:
        while not self._items:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        item = self._items.popleft()
        wire = self._wire
        if wire is not None and wire.paused and len(self._items) <= self._low_water:
            wire.set_reading(True)
        return item
