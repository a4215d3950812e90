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
when the loss came from a disconnection. Sends check the cache on every message; a
member answer past its TTL is served for ``interval`` + the rooms timeout more while a
sweep refreshes it (roomcache.py), so sends are bounded like subscriptions.

When rooms cannot answer (down, slow, the socket's token just expired) the subscription
is kept and checked at the next sweep: a rooms outage must not end every conversation.
Cost: one ``FilterMembers`` per subscribed room (per 1,000 of its due users) per TTL,
asked with one of those users' tokens; each answer refreshes that user's cached
membership, so sends keep hitting the cache. An answer overtaken by an invalidation
(the ticket rule of roomcache.py, per user) is not acted on: the next sweep asks again.
rooms without ``FilterMembers`` (a rolling upgrade) is asked per pair, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Protocol

from roomcast.common.errors import RoomcastError
from roomcast.common.membership import MAX_FILTER_IDS, MembershipCache
from roomcast.common.subjects import RoomEvent
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.realtime.fanout import Fanout
from roomcast.gateway.realtime.recipients import RecipientCache
from roomcast.gateway.realtime.sockets import SocketRegistry

log = logging.getLogger(__name__)

# Rooms checked at once during a sweep (one FilterMembers each, per 1,000 users).
# After a reconnect every subscribed room is asked again; 32 in flight keeps rooms
# busy without a burst of thousands of calls (at a few ms per call, 10k rooms take
# about a second).
SWEEP_CONCURRENCY = 32
# The periodic sweep is a background chore with a whole interval to finish: few calls in
# flight spread its burst (hundreds of rooms come due together: answers cached at the
# same moment expire together) over that time instead of loading rooms, the database and
# this event loop all at once, which delayed sends' acks in the same seconds.
PERIODIC_SWEEP_CONCURRENCY = 4
# Failed asks (rooms unavailable, an asker's expired token) for one room in one sweep
# before the rest of its users wait for the next sweep: another user's token may
# work, but an unavailable rooms would only be asked again and again.
MAX_ASK_ERRORS = 3


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
                await self.sweep(concurrency=PERIODIC_SWEEP_CONCURRENCY)
            except Exception:
                log.exception("membership revalidation sweep failed")

    async def sweep(self, concurrency: int = SWEEP_CONCURRENCY) -> int:
        """Check the subscriptions whose answer is missing or too old; end those of
        users who are no longer members. Returns how many subscriptions ended."""
        membership = self.membership
        due: dict[str, dict[str, AccessClaims]] = {}
        for conn in list(self.sockets.connections):
            claims = conn.claims
            if claims is None or conn.closed:
                continue
            for room_id in conn.rooms:
                users = due.setdefault(room_id, {})
                if claims.user_id not in users and not membership.fresh(claims.user_id, room_id):
                    users[claims.user_id] = claims
        limit = asyncio.Semaphore(concurrency)

        async def check_room(room_id: str, users: dict[str, AccessClaims]) -> int:
            async with limit:
                return await self._check_room(room_id, users)

        ended = await asyncio.gather(*(check_room(r, users) for r, users in due.items() if users))
        total = sum(ended)
        if total:
            log.info("subscriptions of former members ended", extra={"subscriptions": total})
        return total

    async def _check_room(self, room_id: str, users: dict[str, AccessClaims]) -> int:
        """One room's due users, asked with one FilterMembers per MAX_FILTER_IDS of them
        using one of their own tokens. A refused asker is itself a non-member and the
        next due user asks for the rest; an error (rooms unavailable, the asker's token
        refused) keeps the asker's subscription for the next sweep, and after
        MAX_ASK_ERRORS the rest of the room waits for it too. The tokens valid longest
        ask first, so sockets holding expired tokens cannot starve the room's check."""
        pending = dict(sorted(users.items(), key=lambda item: -item[1].expires_at))
        ended = 0
        errors = 0
        while pending and errors < MAX_ASK_ERRORS:
            if not self.membership.client.filter_supported:
                return ended + await self._check_pairs(room_id, pending)
            asker_id, asker = next(iter(pending.items()))
            chunk = list(itertools.islice(pending, MAX_FILTER_IDS))
            try:
                decided = await self.membership.lookup_room(room_id, asker, chunk)
            except RoomcastError:
                errors += 1
                del pending[asker_id]
                continue
            # No await from here to the end of the loop body: an answer acted on was
            # fetched after every invalidation this gateway had seen (roomcache.py).
            for user_id, answer in decided.items():
                pending.pop(user_id, None)
                if answer is not None and not answer.member:
                    ended += self._end(room_id, user_id)
            pending.pop(asker_id, None)
        return ended

    async def _check_pairs(self, room_id: str, users: dict[str, AccessClaims]) -> int:
        """rooms without FilterMembers (an older version during a rolling upgrade):
        one CheckMembership per user, as before."""

        async def check(user_id: str, claims: AccessClaims) -> int:
            try:
                answer = await self.membership.lookup(claims, room_id, allow_stale=False)
            except RoomcastError:
                return 0  # rooms unavailable or the token refused: next sweep
            return 0 if answer.member else self._end(room_id, user_id)

        return sum(await asyncio.gather(*(check(u, c) for u, c in users.items())))

    def _end(self, room_id: str, user_id: str) -> int:
        ended = self.fanout.end_subscriptions(
            room_id, user_id=user_id, reason=RoomEvent.MEMBER_REMOVED, notice=None
        )
        if ended:
            # Counted as they end, before the sweep's other rooms are answered: the
            # counter never lags the unsubscribed frames a client has already seen.
            metrics.REVALIDATION_ENDED.inc(ended)
            self.presence.sync_room(room_id)
        return ended

    async def close(self) -> None:
        for task in list(self._sweeps):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
