"""Finding users: by exact username, and many ids at once.

A person addresses others by name (``/to bob``), so clients need a name → id lookup; a
members listing is a page of user ids, so the gateway names a whole page in one call
instead of one request per member. Both answer public profiles only (never an email),
and only to a signed-in caller. Username lookups are rate limited per caller: a lookup
is how someone would probe which names exist, so it costs a token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, Field

from roomcast.auth import metrics
from roomcast.auth.errors import TooManyAttempts, UserNotFound
from roomcast.auth.models import PublicUser, StrictInput
from roomcast.auth.users import UserRecord, UserRepository
from roomcast.common.ratelimit import KeyedRateLimiter
from roomcast.common.tokens import AccessClaims

# Username lookups per caller: 60 a minute (one a second sustained, bursts of 60) is far
# more than a person typing names and far too few to walk a dictionary of names.
LOOKUP_RATE_LIMIT = 60
LOOKUP_RATE_WINDOW_SECONDS = 60.0
# Callers remembered by the lookup limiter; beyond this the least recently seen are
# forgotten (which only forgives). 100k buckets are a few tens of MB at most.
MAX_TRACKED_CALLERS = 100_000
# Ids per batch lookup: a members page holds at most 100 members.
MAX_BATCH_IDS = 100

ObjectIdText = Annotated[str, Field(pattern=r"^[0-9a-f]{24}$", min_length=24, max_length=24)]


class UserBatchRequest(StrictInput):
    """``POST /v1/users/lookup``: the ids to name (unknown ids are left out)."""

    ids: Annotated[list[ObjectIdText], Field(max_length=MAX_BATCH_IDS)]


class PublicUserEnvelope(BaseModel):
    user: PublicUser


class PublicUserList(BaseModel):
    items: list[PublicUser]


class UserDirectory:
    """Public-profile lookups for signed-in callers."""

    def __init__(self, users: UserRepository, *, clock: Callable[[], float] = time.monotonic):
        self._users = users
        self._limiter = KeyedRateLimiter(
            capacity=LOOKUP_RATE_LIMIT,
            per_seconds=LOOKUP_RATE_WINDOW_SECONDS,
            max_keys=MAX_TRACKED_CALLERS,
            clock=clock,
        )

    async def by_username(self, caller: AccessClaims, username: str) -> UserRecord:
        """The user named exactly ``username`` (case-insensitive: names are unique that
        way), or :class:`UserNotFound`. ``username`` is already validated by the route."""
        wait = self._limiter.hit(caller.user_id)
        if wait > 0:
            metrics.RATE_LIMITED.labels("user_lookup", "user").inc()
            raise TooManyAttempts(
                f"too many user lookups; retry in {int(wait) + 1} s", retry_after=wait
            )
        user = await self._users.find_by_username(username)
        if user is None:
            raise UserNotFound()
        return user

    async def by_ids(self, ids: list[str]) -> list[UserRecord]:
        """The users of ``ids`` that exist, in no particular order."""
        return await self._users.get_many(ids)
