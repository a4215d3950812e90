"""Live subscriptions re-checked against rooms, so a missed event cannot keep a removed
member reading a room.

Membership events (``member_removed``, ``room_deleted``...) travel on core NATS: a
gateway that is disconnected when one is published never gets it, and a subscription
checked once at subscribe time would then live on. Two re-checks bound that:

- after every NATS reconnect, both membership caches are emptied and every live
  subscription is checked again at once (:meth:`MembershipRevalidator.on_reconnected`);
- every ``interval`` seconds, the subscriptions whose cached answer has outlived its
  maximum age (the membership TTL) are checked again (:meth:`run`).

A subscription whose user rooms no longer counts as a member ends like a kick does:
``unsubscribed`` with reason ``member_removed``, and the user's presence in the room
ends. So a kick whose event was lost ends access within ``membership_cache_ttl_seconds
+ membership_revalidate_interval_seconds`` (plus one RPC), and at the first reconnect
when the loss came from a disconnection. Sends check the cache on every message and
are bounded by the TTL alone.

When rooms cannot answer (down, slow, the socket's token just expired) the subscription
is kept and checked at the next sweep: a rooms outage must not end every conversation.
Cost: one ``CheckMembership`` per distinct subscribed (user, room) pair per TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from roomcast.common.errors import RoomcastError
from roomcast.common.membership import MembershipCache
from roomcast.common.subjects import RoomEvent
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.realtime.fanout import Fanout
from roomcast.gateway.realtime.recipients import RecipientCache
from roomcast.gateway.realtime.sockets import SocketRegistry

log = logging.getLogger(__name__)

# RPCs to rooms in flight at once during a sweep. After a reconnect every subscribed
# pair is asked again; 32 in flight keeps rooms busy without a burst of thousands of
# calls (at ~1 ms per call, 10k pairs take well under a second).
SWEEP_CONCURRENCY = 32


class PresenceRooms(Protocol):
    """Presence follows ended subscriptions (presence.py)."""

    def sync_room(self, room: str) -> None: ...


class MembershipRevalidator:
    def __init__(
        self,
        *,
        membership: MembershipCache,
        recipients: RecipientCache,
        sockets: SocketRegistry,
        fanout: Fanout,
        presence: PresenceRooms,
        interval: float,
    ) -> None:
        self.membership = membership
        self.recipients = recipients
        self.sockets = sockets
        self.fanout = fanout
        self.presence = presence
        self.interval = interval
        self._sweeps: set[asyncio.Task[int]] = set()

    def on_reconnected(self) -> None:
        """NATS came back: events may have been missed. Forget every cached answer and
        check every live subscription again."""
        self.membership.invalidate_all()
        self.recipients.invalidate_all()
        task = asyncio.ensure_future(self.sweep())
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)

    async def run(self) -> None:
        """Sweep every ``interval`` seconds, for ever (cancelled at shutdown)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("membership revalidation sweep failed")

    async def sweep(self) -> int:
        """Check the subscriptions whose answer is missing or too old; end those of
        users who are no longer members. Returns how many subscriptions ended."""
        membership = self.membership
        due: dict[tuple[str, str], AccessClaims] = {}
        for conn in list(self.sockets.connections):
            claims = conn.claims
            if claims is None or conn.closed:
                continue
            for room_id in conn.rooms:
                key = (claims.user_id, room_id)
                if key not in due and not membership.fresh(*key):
                    due[key] = claims
        if not due:
            return 0
        limit = asyncio.Semaphore(SWEEP_CONCURRENCY)

        async def check(user_id: str, room_id: str, claims: AccessClaims) -> int:
            async with limit:
                try:
                    answer = await membership.lookup(claims, room_id)
                except RoomcastError:
                    return 0  # rooms unavailable or the token refused: next sweep
            if answer.member:
                return 0
            return self._end(room_id, user_id)

        ended = await asyncio.gather(*(check(u, r, c) for (u, r), c in due.items()))
        total = sum(ended)
        if total:
            metrics.REVALIDATION_ENDED.inc(total)
            log.info("subscriptions of former members ended", extra={"subscriptions": total})
        return total

    def _end(self, room_id: str, user_id: str) -> int:
        ended = self.fanout.end_subscriptions(
            room_id, user_id=user_id, reason=RoomEvent.MEMBER_REMOVED, notice=None
        )
        if ended:
            self.presence.sync_room(room_id)
        return ended

    async def close(self) -> None:
        for task in list(self._sweeps):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
