"""A short-lived cache of rooms' answers keyed by (user, room), with the rules both
membership caches need (membership.py: "am I a member?"; recipients.py: "is this
other user a member?"):

- an answer lives for ``ttl_for(answer)`` seconds (members longer than non-members);
- rooms' membership events drop the affected entries at once (events.py calls
  :meth:`invalidate` / :meth:`invalidate_room`), so the TTL only bounds staleness when
  an event is lost;
- concurrent lookups of one key share one RPC (a reconnect storm resubscribing thousands
  of sockets costs one call per distinct key);
- a lookup that overlaps an invalidation is not cached;
- at most ``max_entries`` answers, least recently stored dropped first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Answer = TypeVar("Answer")
# fetch(user_id, room_id, token of the asking user) -> answer
Fetch = Callable[[str, str, str], Awaitable[Answer]]


class RoomAnswerCache(Generic[Answer]):
    def __init__(
        self,
        fetch: Fetch[Answer],
        *,
        ttl_for: Callable[[Answer], float],
        max_entries: int,
        observe: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch_answer = fetch
        self._ttl_for = ttl_for
        self.max_entries = max_entries
        self._observe = observe
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self._by_room: dict[str, set[str]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[Answer]] = {}
        # Bumped by every invalidation; a lookup started before one is not cached.
        self._epoch = 0

    async def get(self, user_id: str, room_id: str, token: str) -> Answer:
        key = (user_id, room_id)
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                if self._observe is not None:
                    self._observe("hit")
                return entry[1]
            self._drop(key)
        if self._observe is not None:
            self._observe("miss")
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, token))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._forget(key, task))
        return await asyncio.shield(task)

    def _forget(self, key: tuple[str, str], task: asyncio.Task[Answer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: the awaiting callers got it

    async def _fetch(self, key: tuple[str, str], token: str) -> Answer:
        epoch = self._epoch
        answer = await self._fetch_answer(key[0], key[1], token)
        ttl = self._ttl_for(answer)
        if epoch == self._epoch and ttl > 0:
            self._entries[key] = (self._clock() + ttl, answer)
            self._entries.move_to_end(key)
            self._by_room.setdefault(key[1], set()).add(key[0])
            while len(self._entries) > self.max_entries:
                oldest, _ = self._entries.popitem(last=False)
                self._unindex(oldest)
        return answer

    def _drop(self, key: tuple[str, str]) -> None:
        if self._entries.pop(key, None) is not None:
            self._unindex(key)

    def _unindex(self, key: tuple[str, str]) -> None:
        users = self._by_room.get(key[1])
        if users is not None:
            users.discard(key[0])
            if not users:
                del self._by_room[key[1]]

    def invalidate(self, user_id: str, room_id: str) -> None:
        self._epoch += 1
        self._drop((user_id, room_id))
        self._inflight.pop((user_id, room_id), None)

    def invalidate_room(self, room_id: str) -> None:
        self._epoch += 1
        for user_id in list(self._by_room.get(room_id, ())):
            self._drop((user_id, room_id))
        for key in [k for k in self._inflight if k[1] == room_id]:
            del self._inflight[key]

    def __len__(self) -> int:
        return len(self._entries)
