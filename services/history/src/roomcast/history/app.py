"""The history read API (FastAPI). The gateway's REST edge proxies the public
``GET /v1/rooms/{id}/messages`` here with the caller's bearer token."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

from roomcast.common.httpapp import ReadinessCheck, create_service_app
from roomcast.common.ratelimit import KeyedRateLimiter
from roomcast.common.subjects import is_object_id
from roomcast.common.tokens import AccessClaims, TokenVerifier
from roomcast.history.errors import (
    InvalidPageParameter,
    InvalidRoomId,
    MissingToken,
    ReadsRateLimited,
)
from roomcast.history.membership import MembershipChecker
from roomcast.history.store import HistoryStore

DEFAULT_LIMIT = 50
# A page of 100 messages is ~50 KB of JSON: enough for any screen, small enough that
# one request cannot make the server read and serialise a large part of a room.
MAX_LIMIT = 100
# Sequences are uint64 in JetStream; MongoDB stores int64: anything above is invalid.
MAX_SEQ = 2**63 - 1
# Digits accepted in a numeric query parameter (int64 has 19).
MAX_NUMBER_CHARS = 20


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def _int_param(request: Request, name: str, *, low: int, high: int) -> int | None:
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidPageParameter(f"{name}: give it once")
    raw = values[0]
    if not (0 < len(raw) <= MAX_NUMBER_CHARS and raw.isascii() and raw.isdigit()):
        raise InvalidPageParameter(f"{name}: must be an integer from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidPageParameter(f"{name}: must be an integer from {low} to {high}")
    return value


def create_app(
    *,
    store: HistoryStore,
    verifier: TokenVerifier,
    membership: MembershipChecker,
    limiter: KeyedRateLimiter,
    readiness: ReadinessCheck | None = None,
) -> FastAPI:
    app = create_service_app("history", readiness=readiness)

    async def authorize(request: Request, room_id: str) -> AccessClaims:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MissingToken("a bearer access token is required")
        claims = await verifier.verify(token.strip())
        wait = limiter.hit(claims.user_id)
        if wait > 0:
            raise ReadsRateLimited("too many history reads; slow down", retry_after=wait)
        if not is_object_id(room_id):
            raise InvalidRoomId("room id must be 24 lowercase hex characters")
        return claims

    @app.get("/v1/rooms/{room_id}/messages")
    async def list_messages(room_id: str, request: Request) -> Response:
        """Messages visible to the caller, newest first; ``before`` pages back."""
        claims = await authorize(request, room_id)
        limit = _int_param(request, "limit", low=1, high=MAX_LIMIT) or DEFAULT_LIMIT
        before = _int_param(request, "before", low=1, high=MAX_SEQ)
        await membership.require_member(claims, room_id)
        page = await store.page(room_id, claims.user_id, before=before, limit=limit)
        return _json({"items": page.items, "next_before": page.next_before})

    @app.get("/v1/rooms/{room_id}/summary")
    async def room_summary(room_id: str, request: Request) -> Response:
        """The room's newest stored sequence and the newest message the caller sees
        (for unread counts and read receipts)."""
        claims = await authorize(request, room_id)
        await membership.require_member(claims, room_id)
        last_seq = await store.last_seq(room_id)
        page = await store.page(room_id, claims.user_id, before=None, limit=1)
        return _json({"last_seq": last_seq, "last_message": page.items[0] if page.items else None})

    return app
