"""Outgoing webhooks: signed, retried with backoff, dead-lettered after a limit.

Deliveries are written to ``webhook_deliveries`` by the consumer together with the
notifications (exactly once per endpoint and notification), with their JSON body fixed
then. This worker leases due deliveries and POSTs them:

- ``Roomcast-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
  (Stripe's scheme: the timestamp is signed with the body, so a receiver refuses
  replays older than its tolerance; compare with a constant-time comparison);
- ``Roomcast-Delivery: <id>`` (the same on every retry: receivers deduplicate on it)
  and ``Roomcast-Event: notification.<kind>``.

A 2xx answer delivers. Anything else (another status, a timeout, a refused
connection) schedules attempt n+1 after ``first * 2^(n-1)`` seconds (capped); after
``webhook_max_attempts`` the delivery is ``dead``: kept, counted, alerted on.
A worker that dies mid-attempt lets the lease run out and another attempt follows:
receivers see at least once, never a lost event.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from typing import Any

import httpx

from roomcast.common.retry import Backoff, sleep_unless
from roomcast.notifier import metrics
from roomcast.notifier.settings import Settings, WebhookEndpoint
from roomcast.notifier.store import NotifierStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Roomcast-Signature"
DELIVERY_HEADER = "Roomcast-Delivery"
EVENT_HEADER = "Roomcast-Event"
# How often due deliveries are looked for when idle: retries are seconds apart, so a
# quarter second adds nothing noticeable.
POLL_SECONDS = 0.25
# An attempt leases its delivery this long beyond the request timeout: if the worker
# dies, another attempt starts after it.
LEASE_MARGIN_SECONDS = 5.0
# Characters of an error kept on the delivery for the operator.
MAX_ERROR_CHARS = 200
# How often the pending gauge is recounted.
GAUGE_SECONDS = 5.0


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Roomcast-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def backoff_seconds(attempts: int, settings: Settings) -> float:
    """The wait after failed attempt number ``attempts`` (1-based)."""
    delay: float = settings.webhook_backoff_first_seconds * 2.0 ** (attempts - 1)
    return min(settings.webhook_backoff_max_seconds, delay)


class WebhookWorker:
    def __init__(self, settings: Settings, store: NotifierStore, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.store = store
        self.http = http
        self.endpoints: dict[str, WebhookEndpoint] = {e.name: e for e in settings.webhooks}
        self.owner = f"webhooks-{secrets.token_hex(6)}"
        self._wake = asyncio.Event()
        metrics.register_endpoints(list(self.endpoints))

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        if not self.endpoints:
            return
        tasks: set[asyncio.Task[None]] = set()
        backoff = Backoff()
        next_gauge = 0.0
        lease = dt.timedelta(seconds=self.settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
        try:
            while not stop.is_set():
                self._wake.clear()
                # Claim only what can start now: a claimed delivery waits for no one.
                free = self.settings.webhook_concurrency - len(tasks)
                try:
                    if time.monotonic() >= next_gauge:
                        metrics.WEBHOOK_PENDING.set(await self.store.pending_deliveries())
                        next_gauge = time.monotonic() + GAUGE_SECONDS
                    now = dt.datetime.now(dt.UTC)
                    claimed = (
                        await self.store.claim_deliveries(now, now + lease, self.owner, free)
                        if free > 0
                        else []
                    )
                except Exception as exc:
                    log.warning("cannot read the webhook outbox: %s", exc)
                    await sleep_unless(stop, backoff.next_delay())
                    continue
                backoff.reset()
                for delivery in claimed:
                    task = asyncio.create_task(self._attempt(delivery))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if not claimed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
        finally:
            # Attempts in flight finish (each is bounded by the request timeout).
            if tasks:
                await asyncio.wait(tasks, timeout=self.settings.webhook_timeout_seconds)

    async def _attempt(self, delivery: dict[str, Any]) -> None:
        try:
            await self.attempt(delivery)
        except Exception as exc:
            # The outbox could not be updated: the lease runs out and it is tried again.
            log.warning("webhook attempt bookkeeping failed: %s", exc)
        finally:
            self._wake.set()  # a slot is free

    async def attempt(self, delivery: dict[str, Any]) -> None:
        name = delivery["endpoint"]
        endpoint = self.endpoints.get(name)
        attempts = int(delivery.get("attempts", 0)) + 1
        if endpoint is None:
            # Removed from the configuration: nowhere to deliver; keep it as dead.
            await self.store.delivery_failed(
                delivery["_id"], attempts=attempts, next_at=None, error="endpoint not configured"
            )
            return
        body = bytes(delivery["body"])
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(
                endpoint.secret.get_secret_value().encode(), int(time.time()), body
            ),
            DELIVERY_HEADER: delivery["_id"],
            EVENT_HEADER: delivery["event"],
        }
        started = time.perf_counter()
        error = ""
        try:
            response = await self.http.post(
                endpoint.url,
                content=body,
                headers=headers,
                timeout=self.settings.webhook_timeout_seconds,
            )
            if 200 <= response.status_code < 300:
                metrics.WEBHOOK_ATTEMPTS.labels(name, "delivered").inc()
                await self.store.delivery_done(delivery["_id"], dt.datetime.now(dt.UTC), attempts)
                return
            error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        finally:
            metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - started)
        metrics.WEBHOOK_ATTEMPTS.labels(name, "failed").inc()
        next_at = None
        if attempts < self.settings.webhook_max_attempts:
            next_at = dt.datetime.now(dt.UTC) + dt.timedelta(
                seconds=backoff_seconds(attempts, self.settings)
            )
        else:
            metrics.WEBHOOK_DEAD_LETTERS.labels(name).inc()
            log.warning("webhook delivery %s dead after %d attempts", delivery["_id"], attempts)
        await self.store.delivery_failed(
            delivery["_id"], attempts=attempts, next_at=next_at, error=error
        )
