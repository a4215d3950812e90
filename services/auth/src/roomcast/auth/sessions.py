"""Sessions (refresh-token families) and their rotating refresh tokens.

- ``sessions``: one document per login: ``{_id: session id, user_id, created_at,
  expires_at, revoked_at, revoked_reason, revoked_by_token}``. The session id is the
  ``sid`` claim of every access token issued under it. A session is revoked by logout
  or by reuse detection; revocation is final.
- ``refresh_tokens``: one document per refresh token ever issued, keyed by the SHA-256
  of the token (the token itself is never stored): ``{_id, session_id, user_id,
  created_at, expires_at, used_at}``.

Rotation marks the presented token used with one atomic ``find_one_and_update`` on
``{_id, used_at: null}``: of two concurrent uses exactly one gets the document. A token
found already used is a replay (or a race with a stolen copy): the whole session is
revoked, which also kills the newest token of that session.

The revocation records the digest of the replayed token (``revoked_by_token``). The one
call that spent that token may find the session revoked when it checks it, if a replay
overtook it; a replay of its own token can only come after its spend, so that call still
succeeds (its new pair belongs to the revoked family and dies with it). Any other
revocation seen at that check (logout, a replay of another token) refuses the token.
Concurrent uses of one token therefore always give one success and refusals for the rest,
whatever the interleaving.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from roomcast.auth.errors import InvalidRefreshToken, RefreshTokenExpired

Document = dict[str, Any]
WallClock = Callable[[], datetime]
# 32 random bytes: 256 bits, beyond any guessing; 43 URL-safe characters.
REFRESH_TOKEN_BYTES = 32
# Used and expired token documents are kept this long past their expiry, then MongoDB's
# TTL monitor removes them; within it a replayed old token still revokes its session.
RETENTION_AFTER_EXPIRY = timedelta(days=7)


def utc_now() -> datetime:
    return datetime.now(UTC)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedRefresh:
    token: str
    session_id: str
    user_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Revocation:
    """A session that this call revoked (None is returned when it already was)."""

    session_id: str
    user_id: str
    reason: str


class SessionStore:
    def __init__(
        self, db: AsyncDatabase[Document], *, ttl_seconds: int, clock: WallClock = utc_now
    ) -> None:
        self._sessions: AsyncCollection[Document] = db["sessions"]
        self._tokens: AsyncCollection[Document] = db["refresh_tokens"]
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    async def ensure_indexes(self) -> None:
        await self._tokens.create_index([("session_id", ASCENDING)], name="session_id")
        await self._sessions.create_index([("user_id", ASCENDING)], name="user_id")
        # The recent revocations auth rewrites to the NATS bucket at each connection.
        await self._sessions.create_index([("revoked_at", ASCENDING)], name="revoked_at")
        retention = int(RETENTION_AFTER_EXPIRY.total_seconds())
        for collection in (self._tokens, self._sessions):
            await collection.create_index(
                [("expires_at", ASCENDING)], name="expires_at_ttl", expireAfterSeconds=retention
            )

    async def start(self, user_id: str) -> IssuedRefresh:
        """Open a new session for ``user_id`` with its first refresh token."""
        now = self.now()
        session_id = uuid.uuid4().hex
        expires_at = now + self._ttl
        await self._sessions.insert_one(
            {
                "_id": session_id,
                "user_id": user_id,
                "created_at": now,
                "last_used_at": now,
                "expires_at": expires_at,
                "revoked_at": None,
                "revoked_reason": None,
                "revoked_by_token": None,
            }
        )
        return await self._issue(session_id, user_id, now)

    async def _issue(self, session_id: str, user_id: str, now: datetime) -> IssuedRefresh:
        token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        expires_at = now + self._ttl
        await self._tokens.insert_one(
            {
                "_id": token_digest(token),
                "session_id": session_id,
                "user_id": user_id,
                "created_at": now,
                "expires_at": expires_at,
                "used_at": None,
            }
        )
        return IssuedRefresh(token, session_id, user_id, expires_at)

    async def rotate(self, token: str) -> tuple[IssuedRefresh | None, Revocation | None]:
        """Spend ``token`` and issue its successor.

        Returns ``(new_token, None)`` on success. On reuse returns ``(None, revocation)``
        (revocation is None if the session was already revoked) so the caller can
        announce it before refusing the token. Raises
        :class:`InvalidRefreshToken` or :class:`RefreshTokenExpired` otherwise.
        """
        digest = token_digest(token)
        now = self.now()
        spent = await self._tokens.find_one_and_update(
            {"_id": digest, "used_at": None},
            {"$set": {"used_at": now}},
            return_document=ReturnDocument.BEFORE,
        )
        if spent is None:
            known = await self._tokens.find_one({"_id": digest})
            if known is None:
                raise InvalidRefreshToken()
            return None, await self.revoke(
                known["session_id"], reason="refresh_reuse", by_token=digest
            )
        if _aware(spent["expires_at"]) <= now:
            raise RefreshTokenExpired()
        session = await self._sessions.find_one({"_id": spent["session_id"]})
        if session is None or _revoked_before_spend(session, digest):
            raise InvalidRefreshToken()
        issued = await self._issue(spent["session_id"], spent["user_id"], now)
        await self._sessions.update_one(
            {"_id": spent["session_id"]},
            {"$set": {"last_used_at": now, "expires_at": issued.expires_at}},
        )
        return issued, None

    async def revoke_by_token(self, token: str, *, reason: str) -> Revocation | None:
        """Revoke the session ``token`` belongs to (used or not); None if unknown or
        already revoked."""
        known = await self._tokens.find_one({"_id": token_digest(token)}, {"session_id": 1})
        if known is None:
            return None
        return await self.revoke(known["session_id"], reason=reason)

    async def revoke(
        self, session_id: str, *, reason: str, by_token: str | None = None
    ) -> Revocation | None:
        """Revoke a session once; return what was revoked, or None if it already was.

        ``by_token`` is the digest of the replayed token when reuse is the reason."""
        before = await self._sessions.find_one_and_update(
            {"_id": session_id, "revoked_at": None},
            {
                "$set": {
                    "revoked_at": self.now(),
                    "revoked_reason": reason,
                    "revoked_by_token": by_token,
                }
            },
            projection={"user_id": 1},
            return_document=ReturnDocument.BEFORE,
        )
        if before is None:
            return None
        return Revocation(session_id, str(before["user_id"]), reason)

    async def revoked_since(self, since: datetime, *, limit: int) -> list[Revocation]:
        """Sessions revoked at or after ``since`` (at most ``limit``, newest first)."""
        cursor = (
            self._sessions.find(
                {"revoked_at": {"$gte": since}},
                {"user_id": 1, "revoked_reason": 1},
            )
            .sort("revoked_at", -1)
            .limit(limit)
        )
        return [
            Revocation(str(doc["_id"]), str(doc["user_id"]), str(doc.get("revoked_reason")))
            async for doc in cursor
        ]

    async def is_active(self, session_id: str) -> bool:
        session = await self._sessions.find_one({"_id": session_id}, {"revoked_at": 1})
        return session is not None and session.get("revoked_at") is None


def _revoked_before_spend(session: Document, spent_digest: str) -> bool:
    """Whether the session was revoked by anything but a replay of the token this call
    just spent (which necessarily came after the spend)."""
    if session.get("revoked_at") is None:
        return False
    return bool(session.get("revoked_by_token") != spent_digest)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
