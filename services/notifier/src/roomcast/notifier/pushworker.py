"""Coalesced Web Pushes for users who are not looking.

Notifications of users with push subscriptions are written ``push: "pending"``. This
worker wakes after each written batch and every ``POLL_SECONDS``, and takes the users
whose oldest pending notification is at least ``push_coalesce_seconds`` old: all their
pending notifications (50 messages of a burst) become ONE push carrying the count and
the newest. A user online in every room concerned (a socket subscribed to it on some
gateway) has seen them live: no push (``skipped``).

A user's pending notifications are claimed (``sending``, with this worker's id) before
the push and marked ``sent`` after it. A worker that dies in between leaves claims
that go back to pending after ``CLAIM_LEASE_SECONDS``: the push is then sent again
(at least once; the push service's ``Topic`` replaces an undelivered duplicate, and
the payload is idempotent: it describes the inbox, it does not add to it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from typing import Any

import httpx
import orjson

from roomcast.common.retry import Backoff, sleep_unless
from roomcast.notifier import metrics
from roomcast.notifier.presence import PresenceProbe
from roomcast.notifier.records import public_item
from roomcast.notifier.settings import Settings
from roomcast.notifier.store import NotifierStore
from roomcast.notifier.webpush import MAX_PAYLOAD_BYTES, PushSubscription, WebPushSender

log = logging.getLogger(__name__)

# How often due users are looked for without a wake-up: a fraction of the default
# coalescing window, so a push leaves at most this late after its window ends.
POLL_SECONDS = 0.25
# Users pushed per round: bounds one round's work; the next round takes the rest.
USERS_PER_ROUND = 100
# A claim older than this belongs to a worker that died mid-push: far longer than a
# push takes (push_timeout_seconds x a few subscriptions).
CLAIM_LEASE_SECONDS = 120.0
# Push services answer these when a subscription is gone for good (RFC 8030 §7.3,
# and 404 from services that never had it): the subscription is removed.
GONE_STATUSES = (404, 410)


def push_payload(claimed: list[dict[str, Any]]) -> bytes:
    """What the service worker receives: the count and the newest notification."""
    newest = public_item(claimed[0], 0)
    newest.pop("read", None)
    body = {"type": "notifications", "count": len(claimed), "latest": newest}
    data = orjson.dumps(body)
    if len(data) > MAX_PAYLOAD_BYTES:  # a long name and preview: drop the preview
        newest["preview"] = ""
        data = orjson.dumps(body)
    return data


class PushWorker:
    def __init__(
        self,
        settings: Settings,
        store: NotifierStore,
        sender: WebPushSender,
        presence: PresenceProbe,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sender = sender
        self.presence = presence
        self.owner = f"push-{secrets.token_hex(6)}"
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            self._wake.clear()
            try:
                busy = await self.round()
                backoff.reset()
            except Exception as exc:
                log.warning("push round failed: %s", exc)
                await sleep_unless(stop, backoff.next_delay())
                continue
            if not busy:
                await sleep_unless(stop, POLL_SECONDS)

    async def round(self) -> bool:
        """Push to every due user; True if there may be more due right away."""
        now = dt.datetime.now(dt.UTC)
        await self.store.release_stale_claims(now - dt.timedelta(seconds=CLAIM_LEASE_SECONDS))
        cutoff = now - dt.timedelta(seconds=self.settings.push_coalesce_seconds)
        users = await self.store.users_due_for_push(cutoff, USERS_PER_ROUND)
        for user in users:
            await self.push_user(user, now)
        return len(users) == USERS_PER_ROUND

    async def push_user(self, user: str, now: dt.datetime) -> None:
        claimed = await self.store.claim_pushes(user, self.owner, now)
        if not claimed:
            return  # another replica took them
        ids = [doc["_id"] for doc in claimed]
        rooms = {doc["room"] for doc in claimed}
        online = True
        for room in rooms:
            if user not in await self.presence.online_in(room):
                online = False
                break
        if online:
            metrics.PUSHES.labels("skipped_online").inc()
            await self.store.finish_pushes(ids, "skipped")
            return
        payload = push_payload(claimed)
        for doc in await self.store.subscriptions_of(user):
            sub = PushSubscription.from_doc(doc)
            try:
                status = await self.sender.send(sub, payload)
            except httpx.HTTPError as exc:
                log.info("push failed: %s", exc)
                metrics.PUSHES.labels("failed").inc()
                continue
            if 200 <= status < 300:
                metrics.PUSHES.labels("sent").inc()
            elif status in GONE_STATUSES:
                metrics.PUSHES.labels("gone").inc()
                metrics.PUSH_SUBSCRIPTIONS_REMOVED.inc()
                await self.store.forget_subscription(doc["_id"])
            else:
                log.info("push service answered %d", status)
                metrics.PUSHES.labels("failed").inc()
        # A failed push is not retried: the next notification pushes the whole count
        # again, and the inbox holds everything.
        await self.store.finish_pushes(ids, "sent")
