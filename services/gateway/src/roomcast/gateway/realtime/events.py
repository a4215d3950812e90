"""Reactions to rooms' and auth's events (core NATS).

``chat.events.room.<room_id>`` (from rooms), JSON ``{"type", "room_id", "user_id"?,
"role"?, "actor_id"?, "at_ms"?, "room"?}``:

- every event drops the affected membership cache entries;
- ``member_left`` / ``member_removed``: the event is relayed to the room's sockets, then
  the user's subscriptions to the room end (``unsubscribed`` with the event as reason);
- ``room_deleted``: every subscription to the room ends;
- other types are relayed to the room's sockets as ``{"type":"event", ...}``.

``chat.events.user.<user_id>`` (from auth), ``{"type":"session_revoked", "user_id",
"session_id"}``: the user's sockets authenticated under that session close with 4001,
and the session's (still unexpired) tokens are refused from then on (revocations.py).

Presence and typing (ephemeral, ``ephemeral.room.<id>``) are presence.py's; subscriptions
ended here end the user's presence in the room too (``Presence.sync_room``).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson
from nats.aio.msg import Msg

from roomcast.common.revocations import RevocationWatcher
from roomcast.common.subjects import SESSION_REVOKED, RoomEvent, is_object_id
from roomcast.gateway import metrics
from roomcast.gateway.errors import CloseCode
from roomcast.gateway.realtime.fanout import Fanout
from roomcast.gateway.realtime.protocol import event_frame
from roomcast.gateway.realtime.sockets import SocketRegistry

log = logging.getLogger(__name__)

MEMBER_LEFT = RoomEvent.MEMBER_LEFT
MEMBER_REMOVED = RoomEvent.MEMBER_REMOVED
ROOM_DELETED = RoomEvent.ROOM_DELETED
ROOM_UPDATED = RoomEvent.ROOM_UPDATED
ROOM_EVENTS = frozenset(RoomEvent)
# Events are a few hundred bytes; anything much larger is not one of ours.
MAX_EVENT_BYTES = 64 * 1024


def _decode(msg: Msg) -> dict[str, Any] | None:
    if len(msg.data) > MAX_EVENT_BYTES:
        return None
    try:
        event = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("type"), str) else None


def public_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The fields of a room event clients see (``room`` → ``room_info``)."""
    fields: dict[str, Any] = {}
    for key in ("user_id", "role", "actor_id", "at_ms"):
        value = event.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            fields[key] = value
    room = event.get("room")
    if isinstance(room, dict):
        fields["room_info"] = room
    return fields


class AnswerCache(Protocol):
    """A (user, room) answer cache: membership.py's and recipients.py's."""

    def invalidate(self, user_id: str, room_id: str) -> None: ...

    def invalidate_room(self, room_id: str) -> None: ...


class PresenceRooms(Protocol):
    """Presence follows ended subscriptions (presence.py)."""

    def sync_room(self, room: str) -> None: ...


class EventRouter:
    def __init__(
        self,
        *,
        caches: tuple[AnswerCache, ...],
        fanout: Fanout,
        presence: PresenceRooms,
        sockets: SocketRegistry,
        revoked: RevocationWatcher,
    ) -> None:
        self.caches = caches
        self.fanout = fanout
        self.presence = presence
        self.sockets = sockets
        self.revoked = revoked

    async def on_room_event(self, msg: Msg) -> None:
        try:
            self.handle_room_event(msg)
        except Exception:
            log.exception("room event handling failed")

    async def on_user_event(self, msg: Msg) -> None:
        try:
            self.handle_user_event(msg)
        except Exception:
            log.exception("user event handling failed")

    def handle_room_event(self, msg: Msg) -> None:
        event = _decode(msg)
        room_id = event.get("room_id") if event is not None else None
        if event is None or not is_object_id(room_id):
            metrics.EVENTS_RECEIVED.labels("invalid").inc()
            return
        assert isinstance(room_id, str)
        kind: str = event["type"]
        metrics.EVENTS_RECEIVED.labels(kind if kind in ROOM_EVENTS else "other").inc()
        user_id = event.get("user_id")
        if user_id is not None and not is_object_id(user_id):
            return
        if user_id is not None:
            for cache in self.caches:
                cache.invalidate(user_id, room_id)
        if kind in (ROOM_DELETED, ROOM_UPDATED) or (user_id is None and kind in ROOM_EVENTS):
            for cache in self.caches:
                cache.invalidate_room(room_id)
        fanout = self.fanout
        frame = event_frame(room_id, kind, public_fields(event))
        if kind == ROOM_DELETED:
            fanout.end_subscriptions(room_id, user_id=None, reason=kind, notice=frame)
            self._sync_presence(room_id)
            return
        fanout.broadcast(room_id, frame)
        if kind in (MEMBER_LEFT, MEMBER_REMOVED) and user_id is not None:
            fanout.end_subscriptions(room_id, user_id=user_id, reason=kind, notice=None)
            self._sync_presence(room_id)

    def _sync_presence(self, room_id: str) -> None:
        """Ended subscriptions end presence too (the user goes offline in the room)."""
        self.presence.sync_room(room_id)

    def handle_user_event(self, msg: Msg) -> None:
        event = _decode(msg)
        if event is None:
            metrics.EVENTS_RECEIVED.labels("invalid").inc()
            return
        kind = event["type"]
        metrics.EVENTS_RECEIVED.labels(kind if kind == SESSION_REVOKED else "other").inc()
        if kind != SESSION_REVOKED:
            return
        user_id = event.get("user_id")
        session_id = event.get("session_id")
        if not is_object_id(user_id) or not isinstance(session_id, str) or not session_id:
            return
        assert isinstance(user_id, str)
        # Recorded in the shared revocation list (the bucket may bring it a moment
        # later), which closes the session's sockets (revocations.py); closed here too
        # in case the list already knew it from the bucket.
        self.revoked.add(session_id, user_id)
        closed = self.sockets.close_sessions(
            user_id, session_id, CloseCode.UNAUTHENTICATED, "session revoked"
        )
        if closed:
            log.info("sockets of a revoked session closed", extra={"sockets": closed})
