"""Mentions: ``@username`` in a text send resolved to the ids of current room members.

At send time the gateway finds the ``@name`` tokens (a username's characters, not
preceded by one, so ``me@example.com`` is no mention), asks auth for each name's id
(``GET /v1/users?username=``, with the sender's token; answers cached) and keeps the ids
that are members of the room (the recipients cache, the same answer a private ``to``
uses). A name that is unknown, or not a member, stays plain text. The message carries
``mentions`` (distinct ids); history counts unread mentions per member.

Mentions are best effort: if auth cannot answer, the message is sent without them
rather than refused (the text still says ``@name``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Protocol

import httpx
import orjson
from cachetools import TTLCache

from roomcast.common.tokens import AccessClaims

log = logging.getLogger(__name__)

# Distinct names resolved per message: each costs a lookup on a cache miss; ten covers
# any real conversation ("@a @b thoughts?") while one message cannot make the gateway
# ask auth hundreds of times. Names past the bound stay plain text.
MAX_MENTIONS_PER_MESSAGE = 10
# auth answers a username lookup from one indexed query; 2 s means it is overloaded or
# gone, and the message goes out without mentions.
AUTH_TIMEOUT_SECONDS = 2.0
# username -> id changes only if a user is deleted and the name reused: five minutes
# saves auth the lookups of a busy room; an unknown name is retried after a minute so a
# user who just registered becomes mentionable quickly.
CACHE_SECONDS = 300.0
NEGATIVE_CACHE_SECONDS = 60.0
# Names kept (about 150 bytes each).
CACHE_ENTRIES = 20_000

_MENTION = re.compile(r"(?<![A-Za-z0-9_.@-])@([A-Za-z0-9_.-]{3,32})(?![A-Za-z0-9_-])")


class MemberCheck(Protocol):
    """Whether another user is a member of the room (recipients.py)."""

    async def is_member(self, claims: AccessClaims, room_id: str, user_id: str) -> bool: ...


def mentioned_names(content: str) -> list[str]:
    """The distinct ``@names`` of a text (lower-cased; usernames are case-insensitive),
    in order of appearance, at most MAX_MENTIONS_PER_MESSAGE."""
    names: list[str] = []
    for match in _MENTION.finditer(content):
        name = match.group(1).rstrip(".").lower()
        if len(name) >= 3 and name not in names:
            names.append(name)
            if len(names) == MAX_MENTIONS_PER_MESSAGE:
                break
    return names


class MentionResolver:
    def __init__(self, auth_url: str, members: MemberCheck) -> None:
        self.url = auth_url.rstrip("/")
        self.members = members
        self._http: httpx.AsyncClient | None = None
        self._known: TTLCache[str, str] = TTLCache(CACHE_ENTRIES, CACHE_SECONDS, time.monotonic)
        self._unknown: TTLCache[str, bool] = TTLCache(
            CACHE_ENTRIES, NEGATIVE_CACHE_SECONDS, time.monotonic
        )

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=AUTH_TIMEOUT_SECONDS, trust_env=False)
        return self._http

    async def resolve(self, claims: AccessClaims, room: str, content: str) -> tuple[str, ...]:
        """The ids of the room members the text mentions (the sender included if they
        mention themselves), in order of appearance."""
        names = mentioned_names(content)
        if not names:
            return ()
        ids = await asyncio.gather(*(self._user_id(claims, name) for name in names))
        wanted = list(dict.fromkeys(i for i in ids if i is not None))
        members = await asyncio.gather(*(self._member(claims, room, user_id) for user_id in wanted))
        return tuple(user_id for user_id, ok in zip(wanted, members, strict=True) if ok)

    async def _member(self, claims: AccessClaims, room: str, user_id: str) -> bool:
        if user_id == claims.user_id:
            return True
        try:
            return await self.members.is_member(claims, room, user_id)
        except Exception:  # best effort: an unanswered check leaves the name as text
            log.warning("mention membership check failed", exc_info=True)
            return False

    async def _user_id(self, claims: AccessClaims, name: str) -> str | None:
        if name == claims.username.lower():
            return claims.user_id
        known = self._known.get(name)
        if known is not None:
            return known
        if name in self._unknown:
            return None
        try:
            response = await self._client().get(
                f"{self.url}/v1/users",
                params={"username": name},
                headers={"authorization": f"Bearer {claims.raw}"},
            )
        except httpx.HTTPError:
            log.warning("mention lookup failed: auth unreachable")
            return None
        if response.status_code in (400, 404):
            self._unknown[name] = True
            return None
        if response.status_code != 200:
            log.warning("mention lookup failed: auth answered %d", response.status_code)
            return None
        user = orjson.loads(response.content).get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, str):
            return None
        self._known[name] = user_id
        return user_id

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
