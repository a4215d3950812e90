"""Revoked sessions, shared by every service through a NATS JetStream KV bucket.

Access tokens are verified locally and stay valid until their ``exp``, so a logout or a
refresh-token reuse (which revoke a session, the ``sid`` claim) must reach every
verifier. auth writes each revoked session id into the KV bucket :data:`BUCKET` (value
``{"user_id", "reason"}``) before it answers; the bucket's ``max_age`` is auth's
access-token lifetime plus the verifiers' leeway, so an entry disappears once every
token of its session has expired.

:class:`RevocationWatcher` loads the bucket's current keys at start, then watches it,
keeping a set in memory; :class:`~roomcast.common.tokens.TokenVerifier` asks it about
every token (``check``). A process started after a revocation therefore knows it from
its first verification, and a live one learns it within milliseconds of auth's write.

Failure modes (fail closed for revoked sessions, never for the whole service):

- Before the first load completes (NATS unreachable at start) the check refuses every
  token that names a session with 503 ``dependency_unavailable``, a retryable answer:
  accepting them would let a revoked session in, on exactly the process that cannot know.
- Once loaded, a NATS outage keeps the set as it was; after the reconnection the
  bucket is watched again from its current values, so what was written meanwhile
  arrives (auth retries its writes until NATS takes them).
- The bucket not existing yet (auth never started against this NATS) is an empty list;
  the watcher binds to it as soon as auth creates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from roomcast.common.errors import DependencyUnavailable, Unauthenticated
from roomcast.common.natsconn import connect_nats
from roomcast.common.retry import Backoff, retry_until_ready

log = logging.getLogger(__name__)

# The KV bucket of revoked session ids (stream KV_ROOMCAST_REVOKED).
BUCKET = "ROOMCAST_REVOKED"
# Between attempts to bind the bucket or resume a failed watch: short, because a
# revocation written meanwhile must reach this process within a second of NATS healing.
RETRY_SECONDS = 0.5
# How long one wait for an update lasts before the loop checks whether to stop.
POLL_SECONDS = 1.0
# Entries kept if the bucket reports no max_age (never in practice): the longest access
# token auth can be configured to issue (one day) plus leeway.
FALLBACK_MAX_AGE_SECONDS = 86_400.0 + 60.0

# Expired entries are swept at most this often: a sweep walks the whole set.
PRUNE_INTERVAL_SECONDS = 60.0

RevokedCallback = Callable[[str, str | None], None]


def revocation_value(user_id: str, reason: str) -> bytes:
    """The value auth writes under a revoked session id."""
    return orjson.dumps({"user_id": user_id, "reason": reason})


class RevocationWatcher:
    """The set of revoked session ids, kept current from :data:`BUCKET`.

    ``required`` (production wiring) makes :meth:`check` refuse sessions with 503 until
    the first load; ``on_revoked`` callbacks get ``(session_id, user_id)`` for each new
    revocation (the gateway closes that session's sockets).
    """

    def __init__(
        self,
        *,
        bucket: str = BUCKET,
        required: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bucket = bucket
        self.required = required
        self._clock = clock
        # session id -> epoch seconds after which every token of it has expired.
        self._until: dict[str, float] = {}
        self._max_age = FALLBACK_MAX_AGE_SECONDS
        self._loaded = asyncio.Event()
        self._callbacks: list[RevokedCallback] = []
        self._task: asyncio.Task[None] | None = None
        self._own_nc: NatsClient | None = None
        self._stopping = False
        self._pruned_at = clock()

    # --- the check -----------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    async def wait_loaded(self) -> None:
        """Return once the bucket's current keys are loaded (bound it with
        ``asyncio.timeout``)."""
        await self._loaded.wait()

    def __contains__(self, session_id: object) -> bool:
        if not isinstance(session_id, str):
            return False
        until = self._until.get(session_id)
        return until is not None and until > self._clock()

    def __len__(self) -> int:
        return len(self._until)

    def check(self, session_id: str | None) -> None:
        if session_id is None:
            return
        if session_id in self:
            raise Unauthenticated("session revoked", code="session_revoked")
        if self.required and not self.loaded:
            raise DependencyUnavailable("revoked sessions not loaded yet (NATS unreachable)")

    def on_revoked(self, callback: RevokedCallback) -> None:
        self._callbacks.append(callback)

    def add(self, session_id: str, user_id: str | None = None, *, at: float | None = None) -> None:
        """Record a revocation (from the bucket, or from auth's core-NATS event, which may
        arrive first) and tell the callbacks about a new one."""
        now = self._clock()
        until = (now if at is None else at) + self._max_age
        if until <= now:
            return  # every token of that session has expired already
        known = session_id in self
        self._until[session_id] = max(until, self._until.get(session_id, 0.0))
        if not known:
            for callback in self._callbacks:
                try:
                    callback(session_id, user_id)
                except Exception:
                    log.exception("revocation callback failed")
        self._prune()

    def _prune(self) -> None:
        """Forget expired entries, at most once per PRUNE_INTERVAL_SECONDS."""
        now = self._clock()
        if now - self._pruned_at < PRUNE_INTERVAL_SECONDS:
            return
        self._pruned_at = now
        for sid in [s for s, until in self._until.items() if until <= now]:
            del self._until[sid]

    # --- keeping it current ----------------------------------------------------------------

    def start(self, nats_url: str, *, name: str) -> None:
        """Connect to NATS (its own connection, retried forever with a warning per
        failed attempt) and watch, in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run_own(nats_url, name), name="revocations")

    def attach(self, nc: NatsClient) -> None:
        """Watch over an existing connection, in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._watch_loop(nc), name="revocations")

    async def _run_own(self, nats_url: str, name: str) -> None:
        # Retried until it connects; close() cancels this task. fail_fast: each failed
        # attempt is logged here rather than retried by nats-py out of sight.
        self._own_nc = await retry_until_ready(
            "revocations: NATS",
            lambda: connect_nats(nats_url, name=name, fail_fast=True),
            errors=(Exception,),
            backoff=Backoff.fixed(RETRY_SECONDS),
            log=log,
        )
        if self._own_nc is not None:
            await self._watch_loop(self._own_nc)

    async def _watch_loop(self, nc: NatsClient) -> None:
        while not self._stopping and not nc.is_closed:
            try:
                await self._watch_once(nc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._stopping and not nc.is_closed:
                    log.warning("revocations watch interrupted", extra={"error": repr(exc)})
            await asyncio.sleep(RETRY_SECONDS)

    async def _watch_once(self, nc: NatsClient) -> None:
        js = nc.jetstream()
        try:
            kv = await js.key_value(self.bucket)
        except BucketNotFoundError:
            # auth has never created it: nothing was ever revoked on this NATS.
            self._loaded.set()
            return
        status = await kv.status()
        max_age = status.stream_info.config.max_age
        if max_age:
            self._max_age = float(max_age)
        # The newest message at this moment: loaded only once it has been applied. (The
        # client's "initial values delivered" marker alone can come before values that
        # are already on the wire.) Expiry removes the oldest first, so while the
        # bucket holds any message, this one is among them.
        state = status.stream_info.state
        target = state.last_seq if state.messages else 0
        await self._follow(kv, nc, int(target or 0))

    async def _follow(self, kv: KeyValue, nc: NatsClient, target: int) -> None:
        """Follow the bucket until the connection was re-established: a restarted
        server has forgotten the watch's consumer, so the caller watches again (the
        bucket's current values are delivered again; only new ones are announced)."""
        reconnects = nc.stats["reconnects"]
        watcher = await kv.watchall()
        marker, seen = False, 0
        try:
            while not self._stopping and not nc.is_closed:
                if nc.stats["reconnects"] != reconnects:
                    log.info("revocations: NATS reconnected; watching again")
                    return
                try:
                    entry = await watcher.updates(timeout=POLL_SECONDS)  # type: ignore[no-untyped-call]
                except NatsTimeoutError:
                    if marker and not self.loaded:
                        return  # the target expired meanwhile: start over, new target
                    continue
                if entry is None:
                    marker = True  # the client's "initial values delivered"
                else:
                    seen = max(seen, entry.revision or 0)
                    if entry.operation is None and entry.value:  # not a delete or marker
                        self._apply(entry.key, entry.value, entry.created)
                if marker and seen >= target and not self.loaded:
                    log.info("revoked sessions loaded", extra={"sessions": len(self)})
                    self._loaded.set()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def _apply(self, session_id: str, value: bytes, created: datetime | None) -> None:
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            data = {}
        user_id = data.get("user_id") if isinstance(data, dict) else None
        at = created.timestamp() if created is not None else None
        self.add(session_id, user_id if isinstance(user_id, str) else None, at=at)

    async def close(self) -> None:
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._own_nc is not None and not self._own_nc.is_closed:
            with contextlib.suppress(Exception):
                await self._own_nc.close()
