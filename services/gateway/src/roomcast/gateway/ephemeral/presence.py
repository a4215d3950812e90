"""Presence across gateways: who is online in a room, with live online/offline events.

A user is online in a room while at least one of their sockets, on any gateway, is
subscribed to it. Each gateway keeps, for every room that has local subscribers, a
:class:`~roomcast.gateway.ephemeral.presence_view.RoomView` (user → the gateways reporting them)
fed by three things, all on core NATS:

1. **Deltas** on ``ephemeral.room.<room>``: ``{"kind":"presence","gateway","seq","user",
   "online"}``, published when a user's local socket count for the room goes 0→1 or 1→0
   (one publish, delivered to the gateways holding the room: they subscribe to that
   subject while they have local subscribers). Typing notices share the subject.
2. **A snapshot** when a room gets its first local subscriber: a request on
   ``presence.query.<room>`` (every gateway answers on its ``presence.query.*``
   subscription with its local users of the room, possibly none), replies merged as
   they come. Queries wait until every known live peer answered or
   ``presence_snapshot_timeout_seconds`` passed; later replies still merge (as events).
   What the first snapshot finds is state, not news: no events for it (a socket learns
   it from its query); deltas are always relayed as events.
3. **Heartbeats** on ``presence.heartbeat`` every ``presence_heartbeat_seconds`` (with
   up to 10 % jitter). A peer silent for ``presence_missed_heartbeats`` intervals is
   declared dead: its users are removed (offline events for those no other gateway
   reports). With the defaults (2 s x 3, checked every 0.5 s) a SIGKILLed gateway's
   users go offline on the others within 6.5 s (4.5-6.5 s: its last heartbeat was
   0-2 s before it died). A draining gateway says goodbye
   (``"leaving": true``) after closing its sockets: its users go offline at once.

Every report carries the reporter's sequence number; views apply last-writer-wins per
(gateway, user), so snapshot replies and deltas may arrive in any order. After a NATS
reconnect a gateway publishes its full local state of each room
(``"kind":"presence_state"``) and asks for fresh snapshots, repairing deltas lost in
either direction; a peer declared dead that heartbeats again triggers fresh snapshots.

Costs: a join/leave that changes a user's local count 0↔1 is one NATS publish; a
second socket of the same user in the same room on the same gateway costs
nothing. A presence query is a local lookup (zero NATS messages), encoded once per
change. Opening a room on a gateway costs one request and one reply per live peer.
Heartbeats cost G publishes per interval, each delivered to the G gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from cachetools import LRUCache
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from roomcast.common.presencewire import HEARTBEAT_SUBJECT, decode, gateway_of, int_of
from roomcast.common.subjects import (
    PRESENCE_QUERY_PREFIX,
    ephemeral_subject,
    is_object_id,
    presence_query_subject,
    room_id_from_subject,
)
from roomcast.gateway import metrics
from roomcast.gateway.ephemeral.presence_view import Change, RoomView, UserInfo
from roomcast.gateway.ephemeral.presence_wire import presence_event, snapshot_parts, user_of
from roomcast.gateway.ephemeral.receipts import ReadReceipts
from roomcast.gateway.ephemeral.typing_relay import (
    NotSubscribed,
    TypingRelay,
    Typist,
    typing_message,
)
from roomcast.gateway.errors import Unavailable
from roomcast.gateway.realtime.fanout import Fanout
from roomcast.gateway.settings import Settings

log = logging.getLogger(__name__)

# Replies to a snapshot request are accepted this long after it; older ones are stale.
LATE_REPLY_SECONDS = 10.0
# "Offline" entries kept to reject stale reports (replies in flight): longer than a reply
# is accepted, then swept.
TOMBSTONE_SECONDS = 2 * LATE_REPLY_SECONDS
# Dead gateway ids remembered, to ignore their late messages and notice a comeback.
MAX_DEAD_REMEMBERED = 1024
# Dead-peer checks per heartbeat interval: detection lags a peer's deadline by at most
# interval / 4 (0.5 s by default) for four dictionary scans per interval.
CHECKS_PER_HEARTBEAT = 4
# Bounds on the silence a peer may declare fatal for itself (its heartbeat settings):
# outside them the receiver's own setting applies.
MIN_DECLARED_GRACE = 0.1
MAX_DECLARED_GRACE = 1200.0
# Pending-message limits of a room's ephemeral subscription: a burst of presence and
# typing to one room beyond this means the gateway cannot keep up; drops are repaired
# by the next snapshot (reconnect) at worst.
EPHEMERAL_PENDING_MSGS = 65_536
EPHEMERAL_PENDING_BYTES = 64 * 1024 * 1024

_now = time.monotonic


class Member(Typist, Protocol):
    """A local socket as presence sees it (connection.Connection)."""

    @property
    def closed(self) -> bool: ...

    def send_payload(self, payload: bytes) -> None: ...


@dataclass(slots=True)
class LocalUser:
    info: UserInfo
    conns: set[Member]


class RoomState:
    """A room with local subscribers: its view, ephemeral subscription and snapshot."""

    __slots__ = (
        "closed",
        "nonce",
        "parts",
        "ready",
        "requested_at",
        "room_id",
        "sub",
        "timer",
        "view",
        "waiting",
    )

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.view = RoomView(room_id)
        self.sub: Subscription | None = None
        self.ready = asyncio.Event()  # the first snapshot is in (or timed out)
        self.waiting: set[str] = set()  # peers whose reply is expected
        self.nonce = 0
        self.requested_at = 0.0
        # gateway → (seq, part numbers received, users so far) of a multi-part snapshot
        self.parts: dict[str, tuple[int, set[int], list[UserInfo]]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False


class Presence:
    def __init__(
        self,
        nc: NatsClient,
        settings: Settings,
        *,
        gateway_id: str,
        fanout: Fanout,
        receipts: ReadReceipts,
    ) -> None:
        self.nc = nc
        self.id = gateway_id
        self.fanout = fanout
        self.receipts = receipts
        self.interval = settings.presence_heartbeat_seconds
        self.dead_after = settings.presence_heartbeat_seconds * settings.presence_missed_heartbeats
        self.snapshot_timeout = settings.presence_snapshot_timeout_seconds
        self.typing_relay = TypingRelay(fanout, min_interval=settings.typing_min_interval_seconds)
        self.seq = 0
        self._nonce = 0
        self.local: dict[str, dict[str, LocalUser]] = {}  # room → user → their sockets
        self.conn_rooms: dict[Member, set[str]] = {}
        self.rooms: dict[str, RoomState] = {}
        self.peers: dict[str, float] = {}  # live peer → when it counts as dead (monotonic)
        self.grace: dict[str, float] = {}  # peer → the silence it declared fatal for itself
        # Most recently declared dead last; the oldest forgotten past the bound.
        self.dead: LRUCache[str, None] = LRUCache(MAX_DEAD_REMEMBERED)
        self.gateway_rooms: dict[str, set[str]] = {}  # peer → rooms where it reported
        self.inbox = nc.new_inbox()
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        nc = self.nc
        self._subs = [
            await nc.subscribe(HEARTBEAT_SUBJECT, cb=self._on_heartbeat),
            await nc.subscribe(PRESENCE_QUERY_PREFIX + "*", cb=self._on_query),
            await nc.subscribe(self.inbox + ".>", cb=self._on_inbox),
        ]
        await nc.flush()
        # Discovery: every live peer answers this first heartbeat at once, so the first
        # snapshots know whom to wait for. Their number is unknown: collect for the
        # snapshot timeout (once, at start).
        await nc.publish(HEARTBEAT_SUBJECT, self._beat(), reply=self.inbox + ".hello")
        await asyncio.sleep(self.snapshot_timeout)
        self._ticker = asyncio.ensure_future(self._tick())

    async def close(self, within: float) -> None:
        """Send what is pending (offline deltas of closed sockets), say goodbye (peers
        drop this gateway's users at once) and stop."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(BaseException):
                await self._ticker
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)
        if self.nc.is_connected:
            with contextlib.suppress(Exception):
                await self.nc.publish(
                    HEARTBEAT_SUBJECT, orjson.dumps({"gateway": self.id, "leaving": True})
                )
        for task in list(self._tasks):
            task.cancel()
        metrics.PRESENCE_GATEWAYS.set(0)

    def on_reconnected(self) -> None:
        """After a NATS reconnect: deltas may have been lost both ways. Publish the full
        local state of every room and ask for fresh snapshots; peers get a fresh window
        (they could not be heard while we were away)."""
        now = _now()
        for peer in self.peers:
            self.peers[peer] = now + self.grace.get(peer, self.dead_after)
        for state in list(self.rooms.values()):
            self._publish_state(state.room_id)
            self._spawn(self._request_snapshot(state))

    # --- local sockets ---------------------------------------------------------------

    def sync(self, conn: Member, room: str) -> None:
        """Bring presence in line with whether ``conn`` is subscribed to ``room`` now."""
        want = not conn.closed and room in conn.rooms and conn.claims is not None
        rooms = self.conn_rooms.get(conn)
        have = rooms is not None and room in rooms
        if want and not have:
            self._join(conn, room)
        elif have and not want:
            assert rooms is not None
            rooms.discard(room)
            if not rooms:
                del self.conn_rooms[conn]
            self._leave(conn, room)

    def sync_room(self, room: str) -> None:
        """After the gateway ended subscriptions to ``room`` (kick, leave, deletion):
        O(local subscribers of the room)."""
        users = self.local.get(room)
        if not users:
            return
        for conn in [c for local in users.values() for c in local.conns]:
            self.sync(conn, room)

    def forget(self, conn: Member) -> None:
        """A socket closed: it leaves every room it was present in."""
        rooms = self.conn_rooms.pop(conn, None)
        for room in rooms or ():
            self._leave(conn, room)

    def _join(self, conn: Member, room: str) -> None:
        claims = conn.claims
        assert claims is not None
        self.conn_rooms.setdefault(conn, set()).add(room)
        state = self.rooms.get(room)
        if state is None:
            state = self._open(room)
        users = self.local.setdefault(room, {})
        local = users.get(conn.user_id)
        if local is not None:
            local.conns.add(conn)
            return
        info = UserInfo(claims.user_id, claims.username, claims.display_name)
        users[conn.user_id] = LocalUser(info, {conn})
        self._local_change(state, info, True)

    def _leave(self, conn: Member, room: str) -> None:
        users = self.local.get(room)
        local = users.get(conn.user_id) if users is not None else None
        if users is None or local is None:
            return
        local.conns.discard(conn)
        if local.conns:
            return
        del users[conn.user_id]
        state = self.rooms.get(room)
        if state is not None:
            self._local_change(state, local.info, False)
        else:
            self._publish_delta(room, local.info, False)
        if not users:
            del self.local[room]
            self._close_room(room)

    def _local_change(self, state: RoomState, info: UserInfo, online: bool) -> None:
        change = state.view.set(self.id, info, online, self.seq + 1, _now())
        self._emit(state, [change] if change is not None else [])
        self._publish_delta(state.room_id, info, online)

    def _publish_delta(self, room: str, info: UserInfo, online: bool) -> None:
        self.seq += 1
        message = {
            "kind": "presence",
            "gateway": self.id,
            "seq": self.seq,
            "user": info.as_dict(),
            "online": online,
        }
        self._publish(ephemeral_subject(room), message)

    # --- commands ----------------------------------------------------------------------

    async def query(self, conn: Member, room: str) -> None:
        """Answer ``{"type":"presence","room"}``: a local lookup, no NATS message."""
        if room not in conn.rooms:
            raise NotSubscribed("subscribe to the room first")
        self.sync(conn, room)
        state = self.rooms.get(room)
        if state is None:
            raise Unavailable("presence unavailable, retry")
        if not state.ready.is_set():
            # The room's first snapshot is being collected (bounded by its timeout).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.ready.wait(), self.snapshot_timeout + 1.0)
        if not conn.closed and not state.closed:
            conn.send_payload(state.view.answer())

    def typing(self, conn: Member, room: str) -> None:
        """``{"type":"typing","room"}``: one publish, unless rate limited (typing_relay)."""
        user = self.typing_relay.accept(conn, room)
        if user is not None:
            self._publish(ephemeral_subject(room), typing_message(self.id, user))

    # --- rooms -------------------------------------------------------------------------

    def _open(self, room: str) -> RoomState:
        state = RoomState(room)
        self.rooms[room] = state
        self._spawn(self._start_room(state))
        return state

    async def _start_room(self, state: RoomState) -> None:
        async def on_message(msg: Msg) -> None:
            try:
                self._on_ephemeral(state, msg)
            except Exception:
                log.exception("ephemeral message handling failed")

        try:
            sub = await self.nc.subscribe(
                ephemeral_subject(state.room_id),
                cb=on_message,
                pending_msgs_limit=EPHEMERAL_PENDING_MSGS,
                pending_bytes_limit=EPHEMERAL_PENDING_BYTES,
            )
            if state.closed:
                await sub.unsubscribe()
                return
            state.sub = sub
            # Subscribed before asking: every change after the snapshot arrives as a delta.
            await self.nc.flush(timeout=max(1, int(self.snapshot_timeout * 4)))
        except Exception as exc:
            log.warning("presence subscription failed", extra={"error": repr(exc)})
            state.ready.set()  # local users only; repaired by the next reconnect resync
            return
        if not state.closed:
            await self._request_snapshot(state)

    def _close_room(self, room: str) -> None:
        state = self.rooms.pop(room, None)
        if state is None:
            return
        state.closed = True
        state.ready.set()
        if state.timer is not None:
            state.timer.cancel()
        for gateway in state.view.gateways():
            rooms = self.gateway_rooms.get(gateway)
            if rooms is not None:
                rooms.discard(room)
                if not rooms:
                    del self.gateway_rooms[gateway]
        if state.sub is not None:
            self._spawn(self._unsubscribe(state.sub))
            state.sub = None

    async def _unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _request_snapshot(self, state: RoomState) -> None:
        self._nonce += 1
        state.nonce = self._nonce
        state.requested_at = _now()
        state.parts.clear()
        state.waiting = set(self.peers)
        reply = f"{self.inbox}.{state.room_id}.{state.nonce}"
        try:
            await self.nc.publish(
                presence_query_subject(state.room_id),
                orjson.dumps({"gateway": self.id}),
                reply=reply,
            )
        except Exception as exc:
            log.warning("presence query failed", extra={"error": repr(exc)})
            state.waiting.clear()
        if state.ready.is_set():
            return
        if not state.waiting:
            state.ready.set()
        elif state.timer is None:
            state.timer = asyncio.get_running_loop().call_later(
                self.snapshot_timeout, state.ready.set
            )

    def _emit(self, state: RoomState, changes: list[Change], *, snapshot: bool = False) -> None:
        if not changes:
            return
        for change in changes:
            metrics.PRESENCE_EVENTS.labels("online" if change.online else "offline").inc()
        if state.closed:
            return
        if snapshot and not state.ready.is_set():
            # Users found by the room's first snapshot were online before anyone here
            # subscribed: that is what a query answers, not news. Deltas are news.
            return
        for change in changes:
            self.fanout.broadcast(
                state.room_id, presence_event(state.room_id, change.user, change.online)
            )

    def _index(self, gateway: str, room: str) -> None:
        self.gateway_rooms.setdefault(gateway, set()).add(room)

    # --- NATS handlers ---------------------------------------------------------------

    def _on_ephemeral(self, state: RoomState, msg: Msg) -> None:
        if state.closed:
            return
        obj = decode(msg.data)
        gateway = gateway_of(obj) if obj is not None else None
        if obj is None or gateway is None:
            return
        kind = obj.get("kind")
        if kind == "typing":
            user = user_of(obj.get("user"))
            if user is not None:
                self.typing_relay.relay(state.room_id, user)
            return
        if kind == "read":  # read receipts (receipts.py)
            self.receipts.relay(state.room_id, obj)
            return
        if gateway == self.id or not self._heard(gateway, heartbeat=False):
            return
        if kind == "presence":
            user, seq, online = user_of(obj.get("user")), int_of(obj.get("seq")), obj.get("online")
            if user is None or seq is None or not isinstance(online, bool):
                return
            self._index(gateway, state.room_id)
            change = state.view.set(gateway, user, online, seq, _now())
            self._emit(state, [change] if change is not None else [])
        elif kind == "presence_state":
            self._snapshot_part(state, gateway, obj)

    def _snapshot_part(self, state: RoomState, gateway: str, obj: dict[str, Any]) -> bool:
        """Merge one part of a gateway's full list; True once the list is complete."""
        seq, part, parts, raw = (
            int_of(obj.get("seq")),
            int_of(obj.get("part")),
            int_of(obj.get("parts")),
            obj.get("users"),
        )
        if seq is None or part is None or parts is None or not isinstance(raw, list):
            return False
        if not 0 <= part < parts:
            return False
        users = [u for u in map(user_of, raw) if u is not None]
        if parts > 1:
            held = state.parts.get(gateway)
            if held is None or held[0] != seq:
                held = (seq, set(), [])
            if part in held[1]:
                return False  # the same part again (a reply and a state message)
            held[1].add(part)
            held[2].extend(users)
            if len(held[1]) < parts:
                state.parts[gateway] = held
                return False
            state.parts.pop(gateway, None)
            users = held[2]
        self._index(gateway, state.room_id)
        self._emit(state, state.view.snapshot(gateway, seq, users, _now()), snapshot=True)
        return True

    async def _on_query(self, msg: Msg) -> None:
        try:
            room = room_id_from_subject(msg.subject)
            obj = decode(msg.data)
            gateway = gateway_of(obj) if obj is not None else None
            if not msg.reply or gateway is None or gateway == self.id or not is_object_id(room):
                return
            self._heard(gateway, heartbeat=False)
            for part in self._state_parts(room, kind=None):
                await self.nc.publish(msg.reply, part)
        except Exception:
            log.exception("presence query handling failed")

    def _state_parts(self, room: str, *, kind: str | None) -> list[bytes]:
        users = [local.info for local in self.local.get(room, {}).values()]
        return snapshot_parts(self.id, self.seq, users, kind=kind)

    def _publish_state(self, room: str) -> None:
        for part in self._state_parts(room, kind="presence_state"):
            self._spawn(self._publish_raw(ephemeral_subject(room), part))

    async def _on_inbox(self, msg: Msg) -> None:
        try:
            self._handle_inbox(msg)
        except Exception:
            log.exception("presence reply handling failed")

    def _handle_inbox(self, msg: Msg) -> None:
        suffix = msg.subject[len(self.inbox) + 1 :]
        obj = decode(msg.data)
        gateway = gateway_of(obj) if obj is not None else None
        if obj is None or gateway is None or gateway == self.id:
            return
        if suffix == "hello":
            self._heard(gateway, heartbeat=True, declared=obj.get("dead_after"))
            return
        room, _, nonce = suffix.partition(".")
        state = self.rooms.get(room)
        if state is None or nonce != str(state.nonce):
            return
        if _now() - state.requested_at > LATE_REPLY_SECONDS:
            return
        if not self._heard(gateway, heartbeat=False):
            return
        if self._snapshot_part(state, gateway, obj):
            state.waiting.discard(gateway)
            self._maybe_ready(state)

    def _maybe_ready(self, state: RoomState) -> None:
        if not state.waiting and not state.ready.is_set():
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None
            state.ready.set()

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            obj = decode(msg.data)
            gateway = gateway_of(obj) if obj is not None else None
            if obj is None or gateway is None or gateway == self.id:
                return
            if obj.get("leaving") is True:
                self._declare_dead(gateway)
                return
            self._heard(gateway, heartbeat=True, declared=obj.get("dead_after"))
            if msg.reply and not self._closing:
                await self.nc.publish(msg.reply, self._beat())
        except Exception:
            log.exception("presence heartbeat handling failed")

    # --- peers -------------------------------------------------------------------------

    def _beat(self) -> bytes:
        # Each gateway declares after how much silence it counts as dead, so replicas
        # with different heartbeat settings (a rolling change) judge each other right.
        return orjson.dumps({"gateway": self.id, "dead_after": self.dead_after})

    def _heard(self, gateway: str, *, heartbeat: bool, declared: object = None) -> bool:
        """Note that ``gateway`` is alive; False for a dead one's late messages (only
        its heartbeat brings it back, which triggers fresh snapshots)."""
        comeback = False
        if gateway in self.dead:
            if not heartbeat:
                return False
            del self.dead[gateway]
            comeback = True
        if (
            heartbeat
            and isinstance(declared, int | float)
            and not isinstance(declared, bool)
            and MIN_DECLARED_GRACE <= declared <= MAX_DECLARED_GRACE
        ):
            self.grace[gateway] = float(declared)
        deadline = _now() + self.grace.get(gateway, self.dead_after)
        if gateway not in self.peers:
            self.peers[gateway] = deadline
            metrics.PRESENCE_GATEWAYS.set(len(self.peers))
        else:
            self.peers[gateway] = max(self.peers[gateway], deadline) if not heartbeat else deadline
        if comeback:
            log.info("presence peer is back", extra={"gateway": gateway})
            for state in list(self.rooms.values()):
                self._spawn(self._request_snapshot(state))
        return True

    def _declare_dead(self, gateway: str) -> None:
        self.peers.pop(gateway, None)
        self.grace.pop(gateway, None)
        metrics.PRESENCE_GATEWAYS.set(len(self.peers))
        self.dead[gateway] = None
        for room in self.gateway_rooms.pop(gateway, ()):
            state = self.rooms.get(room)
            if state is not None:
                self._emit(state, state.view.remove_gateway(gateway))
        for state in self.rooms.values():
            if gateway in state.waiting:
                state.waiting.discard(gateway)
                self._maybe_ready(state)

    async def _tick(self) -> None:
        """Heartbeats out, dead peers and old tombstones swept."""
        next_beat = 0.0
        next_check = 0.0
        next_sweep = _now() + TOMBSTONE_SECONDS
        beat = self._beat()
        check_every = self.interval / CHECKS_PER_HEARTBEAT
        while True:
            now = _now()
            if now >= next_beat:
                with contextlib.suppress(Exception):
                    await self.nc.publish(HEARTBEAT_SUBJECT, beat)
                # Jitter spreads the gateways' heartbeats; never longer than the interval.
                next_beat = now + self.interval * random.uniform(0.9, 1.0)
            if now >= next_check:
                next_check = now + check_every
                # While disconnected nobody can be heard: judge no one (reconnect resets).
                if self.nc.is_connected:
                    for gateway, deadline in list(self.peers.items()):
                        if now > deadline:
                            log.info("presence peer declared dead", extra={"gateway": gateway})
                            self._declare_dead(gateway)
            if now >= next_sweep:
                next_sweep = now + TOMBSTONE_SECONDS
                for state in self.rooms.values():
                    state.view.sweep(now - TOMBSTONE_SECONDS)
            await asyncio.sleep(max(0.0, min(next_beat, next_check) - _now()))

    # --- publishing --------------------------------------------------------------------

    def _publish(self, subject: str, message: dict[str, Any]) -> None:
        self._spawn(self._publish_raw(subject, orjson.dumps(message)))

    async def _publish_raw(self, subject: str, payload: bytes) -> None:
        try:
            await self.nc.publish(subject, payload)
        except Exception as exc:
            # Lost: peers repair on our reconnect (full state) or when we are declared
            # dead and come back.
            log.warning("presence publish failed", extra={"error": repr(exc)})

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
