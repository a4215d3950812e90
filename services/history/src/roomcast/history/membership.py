"""Who may read a room's history: members only, as the rooms service says.

The check is the shared membership client (``roomcast.common.membership``): rooms'
``CheckMembership`` over gRPC with the caller's own access token, behind its cache.
Positive answers are cached per (user, room) for a few seconds so that paging through
a long history costs rooms one call, not one per page; negative answers are not
cached, so a user who just joined can read at once. The price: a member removed from a
room can still read its history for up to ``ttl`` seconds (history does not follow
rooms' events). What this module adds is history's own errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from roomcast.common.errors import InvalidInput, Unauthenticated
from roomcast.common.membership import MembershipCache, RoomsClient, RoomsErrors
from roomcast.common.tokens import AccessClaims
from roomcast.history.errors import NotAMember, RoomNotFound, RoomsUnavailable

ERRORS = RoomsErrors(
    not_found=lambda _message: RoomNotFound("room not found"),
    not_member=lambda _message: NotAMember("you are not a member of this room"),
    unauthenticated=lambda message: Unauthenticated(message, code="invalid_token"),
    invalid=InvalidInput,
    unavailable=lambda _message: RoomsUnavailable("the rooms service is unavailable"),
)


class MembershipChecker:
    def __init__(
        self,
        target: str,
        *,
        ttl_seconds: float,
        read_position_ttl_seconds: float,
        timeout_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = RoomsClient(target, timeout=timeout_seconds, errors=ERRORS)
        # Negative answers are not kept (negative_ttl 0): see the module docstring.
        self._cache = MembershipCache(
            self._client, ttl=ttl_seconds, negative_ttl=0, max_entries=max_entries, clock=clock
        )
        # Moving one's own read position: a longer TTL (settings say why), its own cache
        # so that it never lengthens how long a removed member can read pages.
        self._read_position_cache = MembershipCache(
            self._client,
            ttl=read_position_ttl_seconds,
            negative_ttl=0,
            max_entries=max_entries,
            clock=clock,
        )

    async def require_member(self, claims: AccessClaims, room_id: str) -> None:
        """Return if the caller is a member of the room, else raise: RoomNotFound for an
        unknown room or a private one the caller is not in, NotAMember for a public
        room the caller has not joined, RoomsUnavailable if rooms is down."""
        await self._cache.require_member(claims, room_id)

    async def require_member_to_mark_read(self, claims: AccessClaims, room_id: str) -> None:
        """As require_member, for moving the caller's own read position."""
        await self._read_position_cache.require_member(claims, room_id)

    async def close(self) -> None:
        await self._client.close()
