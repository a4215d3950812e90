"""Private-message recipients: "is user X a member of this room?", asked by a member.

A send with ``to`` is stored only if the recipient is a member of the room. rooms'
``CheckMembership`` with ``user_id`` answers it for members (with the sender's own
token, so rooms applies its own authorization). Answers are cached per (recipient,
room) like the caller's own membership (membership.py): "member" for the membership
TTL, "not a member" for the short negative TTL, concurrent identical lookups share one
RPC, rooms' events drop entries at once (events.py calls :meth:`invalidate`), a NATS
reconnect drops them all, and a lookup overtaken by an invalidation is asked again. It
is a separate cache on purpose: an answer about X given to a member must never answer
X's own subscribe (a private room's existence would leak to a non-member).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from roomcast.common.errors import NotFound
from roomcast.common.membership import RoomsClient
from roomcast.common.roomcache import RoomAnswerCache
from roomcast.common.tokens import AccessClaims


class RecipientNotMember(NotFound):
    """A private message's recipient is not a member of the room."""

    code = "recipient_not_member"


class RecipientCache:
    """Whether other users are members of a room, asked by members (see roomcache.py)."""

    def __init__(
        self,
        client: RoomsClient,
        *,
        ttl: float,
        negative_ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache: RoomAnswerCache[bool] = RoomAnswerCache(
            lambda user_id, room_id, token: client.check_other(token, room_id, user_id),
            ttl_for=lambda member: ttl if member else negative_ttl,
            max_entries=max_entries,
            clock=clock,
            overtaken=client.errors.unavailable,
        )

    async def require_member(self, claims: AccessClaims, room_id: str, user_id: str) -> None:
        """Raise unless ``user_id`` is a member of the room (the sender ``claims`` is)."""
        if user_id == claims.user_id:
            return
        if not await self.is_member(claims, room_id, user_id):
            raise RecipientNotMember("the recipient is not a member of this room")

    async def is_member(self, claims: AccessClaims, room_id: str, user_id: str) -> bool:
        return await self._cache.get(user_id, room_id, claims.raw)

    def invalidate(self, user_id: str, room_id: str) -> None:
        self._cache.invalidate(user_id, room_id)

    def invalidate_room(self, room_id: str) -> None:
        self._cache.invalidate_room(room_id)

    def invalidate_all(self) -> None:
        self._cache.invalidate_all()

    def __len__(self) -> int:
        return len(self._cache)
