"""Typing notices: ``{"type":"typing","room"}`` from a socket → every other subscriber of
the room, on every gateway, through core NATS ``ephemeral.room.<room>``. Never stored.

- The socket must be subscribed to the room (membership was checked by the subscribe,
  and membership changes end subscriptions), else ``not_subscribed``.
- At most one notice per user and room per ``typing_min_interval_seconds`` (2 s) on one
  gateway; extra ones are dropped silently: a client sends one per keystroke, a reader's
  indicator lasts a few seconds after the last notice, so one per 2 s loses nothing.
- Each gateway holding the room receives the notice once (its per-room ephemeral
  subscription, owned by presence.py) and writes one pre-built frame to its sockets of
  the room, skipping the typing user's own sockets. The sender's gateway gets its own
  publish back from NATS and delivers locally the same way.

Cost per accepted notice: 1 NATS publish, delivered to the gateways holding the room.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from typing import Any, Protocol

import orjson

from roomcast.common.errors import PreconditionFailed
from roomcast.common.ratelimit import KeyedRateLimiter
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.ephemeral.presence_view import UserInfo
from roomcast.gateway.realtime.fanout import Fanout

log = logging.getLogger(__name__)

# (user, room) keys whose last notice is remembered; beyond it the oldest are forgotten,
# which only ever lets one extra notice through.
MAX_TYPING_KEYS = 100_000


class NotSubscribed(PreconditionFailed):
    """A typing or presence command for a room this socket is not subscribed to."""

    code = "not_subscribed"


def typing_frame(room: str, user: dict[str, str]) -> bytes:
    return orjson.dumps({"type": "typing", "room": room, "user": user})


class Typist(Protocol):
    """The socket that sent a typing notice (connection.Connection)."""

    @property
    def user_id(self) -> str: ...

    @property
    def claims(self) -> AccessClaims | None: ...

    @property
    def rooms(self) -> Container[str]: ...


class TypingRelay:
    def __init__(self, fanout: Fanout, *, min_interval: float) -> None:
        self.fanout = fanout
        self.limiter = KeyedRateLimiter(
            capacity=1, per_seconds=min_interval, max_keys=MAX_TYPING_KEYS
        )

    def accept(self, conn: Typist, room: str) -> UserInfo | None:
        """The notice to publish for this command, or None when it is dropped (rate)."""
        if room not in conn.rooms or conn.claims is None:
            metrics.TYPING.labels("not_subscribed").inc()
            raise NotSubscribed("subscribe to the room first")
        if self.limiter.hit(f"{conn.user_id}:{room}") > 0:
            metrics.TYPING.labels("dropped").inc()
            return None
        metrics.TYPING.labels("published").inc()
        claims = conn.claims
        return UserInfo(claims.user_id, claims.username, claims.display_name)

    def relay(self, room: str, user: UserInfo) -> int:
        """Deliver a notice received from NATS to this gateway's other subscribers."""
        frame: bytes | None = None
        delivered = 0
        for subscriber in self.fanout.subscribers(room):
            if subscriber.user_id == user.id:
                continue
            if frame is None:
                frame = typing_frame(room, user.as_dict())
            subscriber.send_payload(frame)
            delivered += 1
        metrics.TYPING.labels("relayed").inc()
        return delivered


def typing_message(gateway: str, user: UserInfo) -> dict[str, Any]:
    return {"kind": "typing", "gateway": gateway, "user": user.as_dict()}
