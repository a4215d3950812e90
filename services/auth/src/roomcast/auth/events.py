"""Session events on core NATS, so gateways can close a revoked session's sockets.

Subject ``chat.events.user.<user_id>``, payload
``{"type": "session_revoked", "user_id", "session_id", "reason"}``.

Publishing is best effort: the request that revoked the session succeeds whether or not
NATS is reachable (the access tokens of the session expire within their TTL anyway).
The connection is made in the background, so the service starts and serves while NATS
is down, and reconnects by itself after an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import orjson
from nats.aio.client import Client as NatsClient

from roomcast.auth import metrics
from roomcast.common.natsconn import connect_nats
from roomcast.common.subjects import SESSION_REVOKED, is_object_id, user_events_subject

log = logging.getLogger(__name__)

# How long close() waits for buffered events to reach the server at shutdown.
DRAIN_TIMEOUT_SECONDS = 2.0


class EventPublisher(Protocol):
    async def session_revoked(self, *, user_id: str, session_id: str, reason: str) -> None:
        """Announce a revoked session; never raises."""


def session_revoked_event(user_id: str, session_id: str, reason: str) -> bytes:
    return orjson.dumps(
        {"type": SESSION_REVOKED, "user_id": user_id, "session_id": session_id, "reason": reason}
    )


class NullPublisher:
    """Publishes nothing (for tools and tests that do not watch events)."""

    async def session_revoked(self, *, user_id: str, session_id: str, reason: str) -> None:
        return None


class NatsEventPublisher:
    def __init__(self, url: str, *, name: str = "roomcast-auth") -> None:
        self._url = url
        self._name = name
        self._nc: NatsClient | None = None
        self._connecting: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect(), name="nats-connect")

    async def _connect(self) -> None:
        # connect_nats retries forever (max_reconnect_attempts=-1), including the first
        # connection, so this task ends only once NATS has been reached.
        try:
            self._nc = await connect_nats(self._url, name=self._name)
        except Exception:
            log.exception("cannot connect to NATS; session events will not be published")
            return
        log.info("nats connected", extra={"nats_url": self._url})

    async def session_revoked(self, *, user_id: str, session_id: str, reason: str) -> None:
        if not is_object_id(user_id):
            log.error("refusing to publish for malformed user id")
            return
        nc = self._nc
        if nc is None or nc.is_closed:
            metrics.EVENTS_PUBLISHED.labels("not_connected").inc()
            log.warning(
                "nats not connected; session_revoked event dropped",
                extra={"session_id": session_id, "reason": reason},
            )
            return
        try:
            # While reconnecting, nats-py buffers the publish (bounded) and sends it on
            # reconnection.
            await nc.publish(
                user_events_subject(user_id), session_revoked_event(user_id, session_id, reason)
            )
            metrics.EVENTS_PUBLISHED.labels("ok").inc()
        except Exception:
            metrics.EVENTS_PUBLISHED.labels("error").inc()
            log.warning("publishing session_revoked failed", exc_info=True)

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
        nc = self._nc
        self._nc = None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.flush(), DRAIN_TIMEOUT_SECONDS)
            except Exception:
                log.warning("nats flush at shutdown failed", exc_info=True)
            with contextlib.suppress(Exception):
                await nc.close()
