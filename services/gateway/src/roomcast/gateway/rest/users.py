"""Names for members listings: rooms knows user ids, auth knows who they are.

``GET /v1/rooms/{id}/members`` answers each member with ``username`` and
``display_name``. The gateway asks auth for the whole page at once (``POST
/v1/users/lookup``, at most a page of ids: never one request per member) and keeps the
answers briefly, so paging through a room or reopening a member list costs auth little.
If auth cannot answer, the listing still answers with ``null`` names (a list of ids is
more useful than a 503).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from cachetools import TTLCache
from pydantic import BaseModel, Field

from roomcast.common.errors import RoomcastError
from roomcast.common.logging import request_id_var
from roomcast.gateway.rest.deps import RestDeps
from roomcast.gateway.rest.models import Member
from roomcast.gateway.rest.upstream import send

log = logging.getLogger(__name__)

# How long a looked-up profile is reused: a renamed display name shows in listings
# within 30 s, and a busy room's member list costs auth one call per page per 30 s.
PROFILE_TTL_SECONDS = 30.0
# Profiles kept per gateway (~200 bytes each: 10k is ~2 MB), least recently stored
# dropped first.
MAX_CACHED_PROFILES = 10_000
# A members page waits this long for names, then answers without them: auth answers a
# batch lookup (one indexed query) in milliseconds.
NAMES_TIMEOUT_SECONDS = 2.0


class ListedMember(Member):
    username: str | None = Field(description="null when auth could not be asked")
    display_name: str | None = Field(description="null when auth could not be asked")


class ListedMemberPage(BaseModel):
    items: list[ListedMember]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")


class MemberNames:
    """A short-lived cache of public profiles filled by batch lookups at auth."""

    def __init__(self, deps: RestDeps) -> None:
        self._deps = deps
        self._profiles: TTLCache[str, tuple[str, str]] = TTLCache(
            maxsize=MAX_CACHED_PROFILES, ttl=PROFILE_TTL_SECONDS
        )

    async def name(self, members: list[Member], token: str) -> list[ListedMember]:
        missing = [m.user_id for m in members if m.user_id not in self._profiles]
        if missing:
            await self._fetch(list(dict.fromkeys(missing)), token)
        listed = []
        for member in members:
            username, display_name = self._profiles.get(member.user_id, (None, None))
            listed.append(
                ListedMember(**member.model_dump(), username=username, display_name=display_name)
            )
        return listed

    async def _fetch(self, user_ids: list[str], token: str) -> None:
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        request_id = request_id_var.get()
        if request_id:
            headers["x-request-id"] = request_id
        try:
            status, body, _ = await send(
                self._deps.http,
                "auth",
                "POST",
                f"{self._deps.auth_url}/v1/users/lookup",
                headers=headers,
                content=orjson.dumps({"ids": user_ids}),
                time_limit=min(self._deps.auth_timeout, NAMES_TIMEOUT_SECONDS),
            )
            found: Any = orjson.loads(body) if status == 200 else None
        except (RoomcastError, orjson.JSONDecodeError) as exc:
            log.warning("member names unavailable: %r", exc)
            return
        if not isinstance(found, dict) or not isinstance(found.get("items"), list):
            log.warning("member names unavailable: auth answered %d", status)
            return
        for user in found["items"]:
            if isinstance(user, dict) and isinstance(user.get("id"), str):
                username, display_name = user.get("username"), user.get("display_name")
                if isinstance(username, str) and isinstance(display_name, str):
                    self._profiles[user["id"]] = (username, display_name)
