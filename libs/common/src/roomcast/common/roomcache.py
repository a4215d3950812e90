"""A short-lived cache of rooms' answers keyed by (user, room), with the rules every
membership cache needs (membership.py: "am I a member?"; the gateway's recipients:
"is this other user a member?"):

- an answer lives for ``ttl_for(answer)`` seconds (members longer than non-members); a
  member answer's TTL is also its maximum age: revalidation.py re-asks rooms for the
  live subscriptions whose answer is older;
- rooms' membership events drop the affected entries at once (the gateway's events.py
  calls :meth:`invalidate` / :meth:`invalidate_room`); a NATS reconnect, after which
  events may have been missed, drops everything (:meth:`invalidate_all`);
- concurrent lookups of one key share one RPC (a reconnect storm resubscribing
  thousands of sockets costs one call per distinct key);
- at most ``max_entries`` answers, least recently stored dropped first (a hit does not
  keep an answer: it expires after its TTL anyway);
- optionally, an expired answer is still served for ``grace_for(answer)`` seconds
  (counted as "stale"), while :meth:`fresh` already says False: the gateway's sweep
  (revalidation.py) refreshes every live subscription's answer within one interval of
  its expiry, so a send meanwhile need not wait on rooms. Without it, every answer
  expiring before the sweep came round cost the next send a synchronous call, queued
  behind the sweep's own: the chat-mix ack tail. Invalidations drop an answer at once,
  grace or not.

Lookups racing an invalidation. rooms publishes an event after its write, so an answer
fetched before the event may predate the change (a kick). Each lookup holds a
:class:`_Ticket` registered under its room while it is outstanding; an invalidation of
that user and room (or of the room, or of everything) marks the outstanding tickets
stale. A stale fetch is not stored, and a caller whose ticket went stale while it
waited asks again instead of using the answer. The check runs when the caller resumes,
with no await between it and the caller's next step (the subscribe registers the
socket synchronously), so an answer the caller acts on was fetched after every
invalidation the gateway had seen: an event that comes later finds the socket already
registered and ends its subscription. Tickets exist only while lookups are in flight,
so this bookkeeping is bounded by concurrency, not by the number of rooms.

API::

    RoomAnswerCache(fetch, *, ttl_for, max_entries, observe=None, clock=time.monotonic,
                    overtaken=DependencyUnavailable, grace_for=None)
    await cache.get(user_id, room_id, token) -> Answer
    await cache.get_room(room_id, user_ids, fetch_room) -> {user_id: Answer | None}
    cache.peek(user_id, room_id) -> Answer | None   (a hit without an await)
    cache.fresh(user_id, room_id) -> bool
    cache.invalidate(user_id, room_id); cache.invalidate_room(room_id)
    cache.invalidate_all(); len(cache)

``fetch(user_id, room_id, token)`` asks rooms; ``observe(outcome)`` is told "hit",
"stale" (served in its grace), "miss" or "overtaken" (for a service's metric);
``overtaken(message)`` builds the error raised after ``MAX_LOOKUP_ATTEMPTS`` overtaken
lookups (the service's own "unavailable, retry" error class).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from cachetools import FIFOCache

from roomcast.common.errors import DependencyUnavailable, RoomcastError

Answer = TypeVar("Answer")
# fetch(user_id, room_id, token of the asking user) -> answer
Fetch = Callable[[str, str, str], Awaitable[Answer]]
# fetch_room(user_ids) -> {user_id: answer} for one room (one batch RPC)
FetchRoom = Callable[[list[str]], Awaitable[dict[str, Answer]]]

# Lookups of one key that may be overtaken by invalidations before one is answered
# cleanly. Events about one user in one room come at human speed (a kick, a role
# change); three overtaken RPCs in a row means rooms is slow and the membership is in
# flux: the caller gets "unavailable, retry" rather than an answer that may be stale.
MAX_LOOKUP_ATTEMPTS = 3


class _Ticket:
    """One outstanding lookup of (user, room); ``stale`` once an invalidation hit it."""

    __slots__ = ("stale", "user_id")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.stale = False


Key = tuple[str, str]  # (user id, room id)


class _Answers(FIFOCache[Key, tuple[float, Answer]]):
    """(expiry, answer) per key, least recently stored dropped first; tells the owner
    which key it dropped so the owner's index by room stays exact."""

    def __init__(self, maxsize: int, dropped: Callable[[Key], None]) -> None:
        super().__init__(maxsize)
        self._dropped = dropped

    def popitem(self) -> tuple[Key, tuple[float, Answer]]:
        key, value = super().popitem()
        self._dropped(key)
        return key, value


class RoomAnswerCache(Generic[Answer]):
    def __init__(
        self,
        fetch: Fetch[Answer],
        *,
        ttl_for: Callable[[Answer], float],
        max_entries: int,
        observe: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        overtaken: Callable[[str], RoomcastError] = DependencyUnavailable,
        grace_for: Callable[[Answer], float] | None = None,
    ) -> None:
        self._fetch_answer = fetch
        self._ttl_for = ttl_for
        self._grace_for = grace_for
        self.max_entries = max_entries
        self._observe = observe
        self._clock = clock
        self._overtaken = overtaken
        self._entries: _Answers[Answer] = _Answers(max_entries, self._unindex)
        self._by_room: dict[str, set[str]] = {}
        self._inflight: dict[Key, asyncio.Task[Answer]] = {}
        # Outstanding lookups by room (see the module docstring).
        self._tickets: dict[str, set[_Ticket]] = {}

    async def get(
        self, user_id: str, room_id: str, token: str, *, allow_stale: bool = True
    ) -> Answer:
        """The answer, cached or asked; ``allow_stale=False`` (the sweep re-asking a
        due answer) does not take an answer in its grace."""
        key = (user_id, room_id)
        entry = self._entries.get(key)
        if entry is not None:
            outcome = self._usable(entry, allow_stale=allow_stale)
            if outcome is not None:
                if self._observe is not None:
                    self._observe(outcome)
                return entry[1]
            self._drop(key)
        if self._observe is not None:
            self._observe("miss")
        for _ in range(MAX_LOOKUP_ATTEMPTS):
            ticket = self._watch(key)
            try:
                answer = await asyncio.shield(self._shared_fetch(key, token))
            finally:
                self._unwatch(room_id, ticket)
            if not ticket.stale:
                return answer
            if self._observe is not None:
                self._observe("overtaken")
        raise self._overtaken("membership changing, retry")

    async def get_room(
        self, room_id: str, user_ids: list[str], fetch: FetchRoom[Answer]
    ) -> dict[str, Answer | None]:
        """Ask once about many users of one room (revalidation.py's sweep) and store
        each answer as :meth:`get` would. The ticket rule holds per user: an answer
        whose (user, room) was invalidated while the call was in flight (or its room,
        or everything) is neither stored nor returned: it maps to None, "ask later".
        ``fetch`` may answer fewer users than asked (those are left out); the caller
        acts on the result with no await in between, as :meth:`get`'s callers do."""
        tickets = {user_id: self._watch((user_id, room_id)) for user_id in user_ids}
        try:
            answers = await fetch(user_ids)
        finally:
            for ticket in tickets.values():
                self._unwatch(room_id, ticket)
        now = self._clock()
        decided: dict[str, Answer | None] = {}
        for user_id, answer in answers.items():
            asked = tickets.get(user_id)
            if asked is None or asked.stale:
                decided[user_id] = None
                if self._observe is not None:
                    self._observe("overtaken")
                continue
            key = (user_id, room_id)
            ttl = self._ttl_for(answer)
            if ttl > 0:
                self._entries[key] = (now + ttl, answer)
                self._by_room.setdefault(room_id, set()).add(user_id)
            else:
                self._drop(key)
            decided[user_id] = answer
        return decided

    def peek(self, user_id: str, room_id: str) -> Answer | None:
        """The cached answer, without an await: what :meth:`get` returns on a hit (and
        counted as one); None when :meth:`get` would have to ask rooms."""
        entry = self._entries.get((user_id, room_id))
        outcome = None if entry is None else self._usable(entry)
        if entry is None or outcome is None:
            return None
        if self._observe is not None:
            self._observe(outcome)
        return entry[1]

    def _usable(self, entry: tuple[float, Answer], *, allow_stale: bool = True) -> str | None:
        """ "hit" for an answer within its TTL, "stale" within its grace after it,
        None when it must be asked again."""
        expiry, answer = entry
        now = self._clock()
        if expiry > now:
            return "hit"
        if allow_stale and self._grace_for is not None and expiry + self._grace_for(answer) > now:
            return "stale"
        return None

    def fresh(self, user_id: str, room_id: str) -> bool:
        """Is an answer for (user, room) cached and younger than its TTL?"""
        entry = self._entries.get((user_id, room_id))
        return entry is not None and entry[0] > self._clock()

    def _shared_fetch(self, key: Key, token: str) -> asyncio.Task[Answer]:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, token, self._watch(key)))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._forget(key, task))
        return task

    def _forget(self, key: Key, task: asyncio.Task[Answer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: the awaiting callers got it

    async def _fetch(self, key: Key, token: str, ticket: _Ticket) -> Answer:
        try:
            answer = await self._fetch_answer(key[0], key[1], token)
        finally:
            self._unwatch(key[1], ticket)
        ttl = self._ttl_for(answer)
        if not ticket.stale and ttl > 0:
            self._entries[key] = (self._clock() + ttl, answer)
            self._by_room.setdefault(key[1], set()).add(key[0])
        return answer

    def _watch(self, key: Key) -> _Ticket:
        ticket = _Ticket(key[0])
        self._tickets.setdefault(key[1], set()).add(ticket)
        return ticket

    def _unwatch(self, room_id: str, ticket: _Ticket) -> None:
        tickets = self._tickets.get(room_id)
        if tickets is not None:
            tickets.discard(ticket)
            if not tickets:
                del self._tickets[room_id]

    def _drop(self, key: Key) -> None:
        if self._entries.pop(key, None) is not None:
            self._unindex(key)

    def _unindex(self, key: Key) -> None:
        users = self._by_room.get(key[1])
        if users is not None:
            users.discard(key[0])
            if not users:
                del self._by_room[key[1]]

    def invalidate(self, user_id: str, room_id: str) -> None:
        for ticket in self._tickets.get(room_id, ()):
            if ticket.user_id == user_id:
                ticket.stale = True
        self._drop((user_id, room_id))
        self._inflight.pop((user_id, room_id), None)

    def invalidate_room(self, room_id: str) -> None:
        for ticket in self._tickets.get(room_id, ()):
            ticket.stale = True
        for user_id in list(self._by_room.get(room_id, ())):
            self._drop((user_id, room_id))
        for key in [k for k in self._inflight if k[1] == room_id]:
            del self._inflight[key]

    def invalidate_all(self) -> None:
        """Forget every answer and overtake every lookup (events may have been missed)."""
        for tickets in self._tickets.values():
            for ticket in tickets:
                ticket.stale = True
        self._entries.clear()
        self._by_room.clear()
        self._inflight.clear()

    def __len__(self) -> int:
        return len(self._entries)
