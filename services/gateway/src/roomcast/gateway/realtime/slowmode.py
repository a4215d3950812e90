"""Slow mode across gateways: one shared pace per (room, user) in NATS key-value.

A room with ``slow_mode_seconds`` > 0 lets each member (owners and admins are exempt)
send one message per interval, whichever gateway and however many sockets the message
comes through. The pace cannot live in a gateway's memory: a user with sockets on two
gateways would get twice the rate. It lives in the JetStream key-value bucket
:data:`BUCKET`, key ``<room_id>.<user_id>``, value ``<sent_at_ms>:<client_id>`` of the
last accepted send, written with compare-and-set (the entry's revision), so of two
sends racing on two gateways exactly one wins:

1. read the key (one direct get);
2. inside the interval: refused, ``slow_mode`` with ``retry_after`` (seconds), unless
   it is the same ``client_id`` (a resend after a lost ack: let through, the stream's
   deduplication answers it with the original ``seq``);
3. otherwise write ``now`` expecting the revision read (``create`` when there is
   none); a lost race re-reads, and then normally finds the winner's fresh send.

Cost: nothing in rooms without slow mode; two JetStream round trips per send in rooms
with it. Entries expire with the bucket's ``max_age`` (the longest interval plus a
minute), so the bucket holds only the senders of the last hours.

Clocks: the interval is measured with each gateway's wall clock; gateways are expected
to be NTP-synchronised (a skew of ``s`` seconds between two gateways lets one message
through ``s`` seconds early, at most).

If the bucket cannot be reached within :data:`KV_TIMEOUT_SECONDS` the send is let
through (counted in ``roomcast_gateway_slow_mode_checks_total{outcome="unavailable"}``):
slow mode is a pace, and NATS being away fails the send's own publish anyway.
"""

from __future__ import annotations

import asyncio
import logging
import math

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from roomcast.common.clock import now_ms
from roomcast.common.kvbucket import BucketHandle, open_or_create_bucket
from roomcast.gateway import metrics
from roomcast.gateway.errors import SlowModeRefused

log = logging.getLogger(__name__)

BUCKET = "ROOMCAST_SLOW_MODE"
# rooms refuses intervals above 6 hours (roomcast.rooms.validation); an entry older
# than that cannot refuse anything, so the bucket forgets it (plus a minute of slack).
MAX_INTERVAL_SECONDS = 6 * 3600
ENTRY_MAX_AGE_SECONDS = MAX_INTERVAL_SECONDS + 60
# One bucket operation slower than this is treated as "unreachable" (the send goes on):
# a healthy get or write answers in about a millisecond.
KV_TIMEOUT_SECONDS = 1.0
# Compare-and-set rounds before giving up: a lost race re-reads and normally finds the
# winner's send (refused); three rounds lost in a row means a burst of the same user's
# sends, which is refused too.
MAX_ATTEMPTS = 3


def _encode(sent_ms: int, client_id: str) -> bytes:
    return f"{sent_ms}:{client_id}".encode()


def _decode(value: bytes | None) -> tuple[int, str]:
    if not value:
        return 0, ""
    sent, _, client_id = value.decode("utf-8", "replace").partition(":")
    return (int(sent) if sent.isdigit() else 0), client_id


class SlowMode:
    def __init__(self, nats: NatsClient, *, replicas: int = 1) -> None:
        self.nats = nats
        self.replicas = replicas
        self._bucket = BucketHandle(
            lambda: open_or_create_bucket(
                self.nats.jetstream(),
                BUCKET,
                replicas=self.replicas,
                ttl_seconds=ENTRY_MAX_AGE_SECONDS,
            )
        )

    async def admit(self, room_id: str, user_id: str, client_id: str, interval: int) -> None:
        """Let the send through or raise :class:`SlowModeRefused`."""
        try:
            await asyncio.wait_for(
                self._admit(room_id, user_id, client_id, interval), KV_TIMEOUT_SECONDS * 3
            )
        except (NatsError, OSError, TimeoutError) as exc:
            self._bucket.forget()
            metrics.SLOW_MODE_CHECKS.labels("unavailable").inc()
            log.warning("slow mode bucket unreachable; send let through: %r", exc)

    async def _admit(self, room_id: str, user_id: str, client_id: str, interval: int) -> None:
        kv = await self._bucket.get()
        key = f"{room_id}.{user_id}"
        interval_ms = interval * 1000
        for _ in range(MAX_ATTEMPTS):
            now = now_ms()
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:  # also a deleted or expired key
                entry = None
            if entry is not None:
                sent_ms, last_client = _decode(entry.value)
                if last_client == client_id:
                    metrics.SLOW_MODE_CHECKS.labels("resend").inc()
                    return
                wait_ms = sent_ms + interval_ms - now
                if wait_ms > 0:
                    metrics.SLOW_MODE_CHECKS.labels("refused").inc()
                    raise SlowModeRefused(
                        f"slow mode: one message per {interval} s in this room",
                        retry_after=math.ceil(wait_ms / 100) / 10,
                    )
            try:
                if entry is None:
                    await kv.create(key, _encode(now, client_id))
                else:
                    await kv.update(key, _encode(now, client_id), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # another send won the race: read what it wrote
            metrics.SLOW_MODE_CHECKS.labels("allowed").inc()
            return
        metrics.SLOW_MODE_CHECKS.labels("refused").inc()
        raise SlowModeRefused(
            f"slow mode: one message per {interval} s in this room", retry_after=float(interval)
        )
