"""Finding users: by exact username, and many ids at once.

A person addresses others by name (``/to bob``), so clients need a name → id lookup; a
members listing is a page of user ids, so the gateway names a whole page in one call
instead of one request per member. Both answer public profiles only (never an email),
and only to a signed-in caller. Both are rate limited per caller, each with its own
bucket: a username lookup is how someone would probe which names exist, and a batch of
up to 100 ids is a query's worth of work that any signed-in user could otherwise repeat
without end (the gateway calls it with the caller's token, so the caller is the person).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, Field

from roomcast.auth import metrics
from roomcast.auth.errors import TooManyAttempts, UserNotFound
from roomcast.auth.users import UserRecord, UserRepository
from roomcast.common.accounts import PublicUser, StrictInput
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
# Batch lookups per caller: 60 a minute. The gateway asks once per members page whose
# names it has not cached (30 s, rest_users.py), so a person paging through member lists
# stays far below it; a script is held to 6000 ids a minute.
BATCH_LOOKUP_RATE_LIMIT = 60
BATCH_LOOKUP_RATE_WINDOW_SECONDS = 60.0

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
        self._batch_limiter = KeyedRateLimiter(
            capacity=BATCH_LOOKUP_RATE_LIMIT,
            per_seconds=BATCH_LOOKUP_RATE_WINDOW_SECONDS,
            max_keys=MAX_TRACKED_CALLERS,
            clock=clock,
        )

    async def by_username(self, caller: AccessClaims, username: str) -> UserRecord:
        """The user named exactly ``username`` (case-insensitive: names are unique that
        way), or :class:`UserNotFound`. ``username`` is already validated by the route."""
        _spend(self._limiter, caller, "user_lookup")
        user = await self._users.find_by_username(username)
        if user is None:
            raise UserNotFound()
        return user

    async def by_ids(self, caller: AccessClaims, ids: list[str]) -> list[UserRecord]:
        """The users of ``ids`` that exist, in no particular order."""
        _spend(self._batch_limiter, caller, "user_batch_lookup")
        return await self._users.get_many(ids)


def _spend(limiter: KeyedRateLimiter, caller: AccessClaims, endpoint: str) -> None:
    """One lookup from ``caller``, or :class:`TooManyAttempts` (429) with the wait."""
    wait = limiter.hit(caller.user_id)
    if wait > 0:
        metrics.RATE_LIMITED.labels(endpoint, "user").inc()
        raise TooManyAttempts(
            f"too many user lookups; retry in {int(wait) + 1} s", retry_after=wait
        )
