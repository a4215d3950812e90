"""Membership and room events on core NATS, subject ``chat.events.room.<room_id>``.

Published after the change is in MongoDB. The change is the truth; an event is a
notification for caches (gateways invalidate membership and end subscriptions on
them). If NATS is unreachable the RPC still succeeds: the failure is logged and
counted, and the connection keeps reconnecting on its own. See docs/events.md.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from roomcast.common.clock import now_ms
from roomcast.common.subjects import RoomEvent, room_events_subject
from roomcast.rooms.metrics import EVENT_PUBLISH_FAILURES, EVENTS_PUBLISHED
from roomcast.rooms.policy import Role
from roomcast.rooms.records import RoomRecord

log = logging.getLogger(__name__)


EventType = RoomEvent


def build_event(
    type_: EventType,
    room_id: str,
    *,
    actor_id: str,
    user_id: str | None = None,
    role: Role | None = None,
    room: RoomRecord | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": type_.value, "room_id": room_id}
    if user_id is not None:
        event["user_id"] = user_id
    if role is not None:
        event["role"] = role.value
    event["actor_id"] = actor_id
    event["at_ms"] = now_ms()
    if room is not None:
        event["room"] = room.public_fields()
    if extra:
        event.update(extra)
    return event


class EventPublisher:
    def __init__(self, nats: NatsClient) -> None:
        self.nats = nats

    async def publish(
        self,
        type_: EventType,
        room_id: str,
        *,
        actor_id: str,
        user_id: str | None = None,
        role: Role | None = None,
        room: RoomRecord | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Publish one event; never raises. True when handed to the NATS client."""
        event = build_event(
            type_, room_id, actor_id=actor_id, user_id=user_id, role=role, room=room, extra=extra
        )
        try:
            await self.nats.publish(room_events_subject(room_id), orjson.dumps(event))
        except (NatsError, OSError) as exc:
            EVENT_PUBLISH_FAILURES.labels(type_.value).inc()
            log.warning(
                "event publish failed",
                extra={"event_type": type_.value, "room_id": room_id, "error": repr(exc)},
            )
            return False
        EVENTS_PUBLISHED.labels(type_.value).inc()
        return True
