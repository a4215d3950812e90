"""Revoked sessions, announced to every verifier.

Two channels, written by :meth:`NatsEventPublisher.session_revoked`:

- the JetStream KV bucket ``ROOMCAST_REVOKED`` (roomcast.common.revocations): the
  session id, written and acknowledged by JetStream *before* the logout or refresh
  answer, so every service refuses the session's access tokens within milliseconds,
  including a process started later (it loads the bucket). The bucket's ``max_age`` is
  the access-token lifetime plus the verifiers' leeway: an entry lives exactly as long
  as a token of its session could.
- core NATS ``chat.events.user.<user_id>``,
  ``{"type": "session_revoked", "user_id", "session_id", "reason"}``, which gateways
  also use to close the session's sockets at once.

MongoDB (sessions.py) is the record; the bucket is its broadcast. A write NATS does not
take (down, timeout) is kept and retried every second until it is, and at every
(re)connection auth rewrites every revocation of the last token lifetime from MongoDB,
so a crash between the MongoDB write and the KV write loses nothing. The request that
revoked the session succeeds either way: the session is revoked in MongoDB, and
auth's own endpoints check MongoDB. The connection is made in the background, so the
service starts and serves while NATS is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from roomcast.auth import metrics
from roomcast.auth.sessions import Revocation
from roomcast.common.kvbucket import BucketHandle, open_or_create_bucket
from roomcast.common.natsconn import connect_nats
from roomcast.common.revocations import BUCKET, revocation_value
from roomcast.common.subjects import SESSION_REVOKED, is_object_id, user_events_subject

log = logging.getLogger(__name__)

# How long close() waits for buffered events to reach the server at shutdown.
DRAIN_TIMEOUT_SECONDS = 2.0
# How long a logout waits for JetStream to acknowledge the revocation before answering
# anyway (the write is then retried in the background): a healthy server acks in ~1 ms,
# and a logout must not hang on a NATS outage.
KV_WRITE_TIMEOUT_SECONDS = 2.0
# Between retries of revocations NATS has not taken yet: the 1 s promise starts again
# when NATS heals, so retry about that often.
KV_RETRY_SECONDS = 1.0

Backlog = Callable[[], Awaitable[list[Revocation]]]


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
    def __init__(
        self,
        url: str,
        *,
        name: str = "roomcast-auth",
        revocation_ttl_seconds: float = 930.0,
        replicas: int = 1,
    ) -> None:
        self._url = url
        self._name = name
        self._ttl = revocation_ttl_seconds
        self._replicas = replicas
        self._nc: NatsClient | None = None
        self._bucket = BucketHandle(self._open_bucket)
        self._connecting: asyncio.Task[None] | None = None
        self._retrying: asyncio.Task[None] | None = None
        self._backlog: Backlog | None = None
        # Revocations NATS has not acknowledged yet: session id -> value.
        self._pending: dict[str, bytes] = {}
        self._resync = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def pending(self) -> int:
        """Revocations not yet acknowledged by JetStream."""
        return len(self._pending)

    def start(self, backlog: Backlog | None = None) -> None:
        """Begin connecting in the background; returns at once. ``backlog`` lists the
        revocations of the last token lifetime (from MongoDB), rewritten to the bucket
        at every (re)connection."""
        self._backlog = backlog
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect(), name="nats-connect")

    async def _connect(self) -> None:
        # connect_nats retries forever (max_reconnect_attempts=-1), including the first
        # connection, so this task ends only once NATS has been reached.
        try:
            self._nc = await connect_nats(
                self._url, name=self._name, on_reconnected=self._on_reconnected
            )
        except Exception:
            log.exception("cannot connect to NATS; session events will not be published")
            return
        log.info("nats connected", extra={"nats_url": self._url})
        self._resync.set()
        self._retrying = asyncio.create_task(self._retry_loop(), name="revocations-retry")

    async def _on_reconnected(self) -> None:
        self._resync.set()

    async def _open_bucket(self) -> KeyValue:
        """The revocations bucket, created with entries living ``revocation_ttl_seconds``.
        One existing with another configuration (the token lifetime changed) is used as
        it is; an operator updates its max_age (docs/auth.md)."""
        assert self._nc is not None
        return await open_or_create_bucket(
            self._nc.jetstream(), BUCKET, replicas=self._replicas, ttl_seconds=self._ttl
        )

    async def _retry_loop(self) -> None:
        while True:
            if self._resync.is_set() and self._backlog is not None:
                try:
                    for revocation in await self._backlog():
                        self._pending.setdefault(
                            revocation.session_id,
                            revocation_value(revocation.user_id, revocation.reason),
                        )
                    self._resync.clear()
                except Exception as exc:
                    log.warning("cannot list recent revocations", extra={"error": repr(exc)})
            for session_id, value in list(self._pending.items()):
                if not await self._write(session_id, value):
                    break
            await asyncio.sleep(KV_RETRY_SECONDS)

    async def _write(self, session_id: str, value: bytes) -> bool:
        """Put one revocation into the bucket; True once JetStream acknowledged it."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return False
        try:
            kv = await self._bucket.get()
            await asyncio.wait_for(kv.put(session_id, value), KV_WRITE_TIMEOUT_SECONDS)
        except Exception as exc:
            # Bind (or create) the bucket again next time: a NATS that lost its store
            # has lost the bucket too.
            self._bucket.forget()
            metrics.REVOCATIONS_STORED.labels("error").inc()
            log.warning("revocation not stored yet", extra={"error": repr(exc)})
            return False
        self._pending.pop(session_id, None)
        metrics.REVOCATIONS_STORED.labels("ok").inc()
        return True

    async def session_revoked(self, *, user_id: str, session_id: str, reason: str) -> None:
        if not is_object_id(user_id):
            log.error("refusing to publish for malformed user id")
            return
        self._pending[session_id] = revocation_value(user_id, reason)
        await self._write(session_id, self._pending[session_id])
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
        for task in (self._connecting, self._retrying):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        nc = self._nc
        self._nc = None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.flush(), DRAIN_TIMEOUT_SECONDS)
            except Exception:
                log.warning("nats flush at shutdown failed", exc_info=True)
            with contextlib.suppress(Exception):
                await nc.close()
