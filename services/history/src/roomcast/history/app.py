"""The history read API (FastAPI). The gateway's REST edge proxies the public
``GET /v1/rooms/{id}/messages`` here with the caller's bearer token."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request, Response

from roomcast.common.errors import Forbidden, NotFound
from roomcast.common.httpapp import ReadinessCheck, create_service_app
from roomcast.common.httpinputs import (
    MAX_NUMBER_CHARS,
    bearer_token,
    int_query_param,
    json_object_body,
    json_response,
)
from roomcast.common.ratelimit import KeyedRateLimiter
from roomcast.common.subjects import is_object_id
from roomcast.common.tokens import AccessClaims, TokenVerifier
from roomcast.history.errors import (
    InvalidBody,
    InvalidPageParameter,
    InvalidRoomId,
    MessageNotFound,
    MissingToken,
    ReadsRateLimited,
)
from roomcast.history.files import BlobStore, FileCatalog
from roomcast.history.filesapi import add_file_routes, is_upload_path
from roomcast.history.membership import MembershipChecker
from roomcast.history.store import HistoryStore

DEFAULT_LIMIT = 50
# A page of 100 messages is ~50 KB of JSON: enough for any screen, small enough that
# one request cannot make the server read and serialise a large part of a room.
MAX_LIMIT = 100
# Sequences are uint64 in JetStream; MongoDB stores int64: anything above is invalid.
MAX_SEQ = 2**63 - 1
# Rooms per summaries request: one page of the joined-rooms listing (its limit is 100).
MAX_SUMMARY_ROOMS = 100


def _read_seq(body: dict[str, Any]) -> int:
    seq = body.get("seq")
    if set(body) != {"seq"} or type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise InvalidBody('the body must be {"seq": <integer from 0 to 2^63-1>}')
    return seq


def _room_ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("room_ids")
    if set(body) != {"room_ids"} or not isinstance(ids, list):
        raise InvalidBody('the body must be {"room_ids": [<room id>, ...]}')
    if len(ids) > MAX_SUMMARY_ROOMS:
        raise InvalidBody(f"at most {MAX_SUMMARY_ROOMS} room ids")
    if not all(is_object_id(r) for r in ids):
        raise InvalidBody("room ids must be 24 lowercase hex characters")
    return list(dict.fromkeys(ids))


def create_app(
    *,
    store: HistoryStore,
    verifier: TokenVerifier,
    membership: MembershipChecker,
    limiter: KeyedRateLimiter,
    readiness: ReadinessCheck | None = None,
    files: tuple[FileCatalog, BlobStore, int] | None = None,
) -> FastAPI:
    app = create_service_app(
        "history", readiness=readiness, own_body_limit=is_upload_path if files else None
    )

    async def authorize(request: Request, room_id: str | None = None) -> AccessClaims:
        """The caller's verified claims, charged one read; the room id checked if given."""
        token = bearer_token(request)
        if token is None:
            raise MissingToken("a bearer access token is required")
        claims = await verifier.verify(token)
        wait = limiter.hit(claims.user_id)
        if wait > 0:
            raise ReadsRateLimited("too many history reads; slow down", retry_after=wait)
        if room_id is not None and not is_object_id(room_id):
            raise InvalidRoomId("room id must be 24 lowercase hex characters")
        return claims

    @app.get("/v1/rooms/{room_id}/messages")
    async def list_messages(room_id: str, request: Request) -> Response:
        """Messages visible to the caller, newest first; ``before`` pages back."""
        claims = await authorize(request, room_id)
        limit = (
            int_query_param(request, "limit", low=1, high=MAX_LIMIT, error=InvalidPageParameter)
            or DEFAULT_LIMIT
        )
        before = int_query_param(request, "before", low=1, high=MAX_SEQ, error=InvalidPageParameter)
        await membership.require_member(claims, room_id)
        page = await store.page(room_id, claims.user_id, before=before, limit=limit)
        return json_response({"items": page.items, "next_before": page.next_before})

    @app.get("/v1/rooms/{room_id}/messages/{seq}/replies")
    async def list_replies(room_id: str, seq: str, request: Request) -> Response:
        """The thread of message ``seq``: its replies the caller sees, newest first."""
        claims = await authorize(request, room_id)
        if not (0 < len(seq) <= MAX_NUMBER_CHARS and seq.isascii() and seq.isdigit()):
            raise InvalidPageParameter(f"seq: must be an integer from 1 to {MAX_SEQ}")
        parent = int(seq)
        if not 1 <= parent <= MAX_SEQ:
            raise InvalidPageParameter(f"seq: must be an integer from 1 to {MAX_SEQ}")
        limit = (
            int_query_param(request, "limit", low=1, high=MAX_LIMIT, error=InvalidPageParameter)
            or DEFAULT_LIMIT
        )
        before = int_query_param(request, "before", low=1, high=MAX_SEQ, error=InvalidPageParameter)
        await membership.require_member(claims, room_id)
        page = await store.replies(room_id, parent, claims.user_id, before=before, limit=limit)
        if page is None:
            raise MessageNotFound("no such message in this room")
        return json_response({"items": page.items, "next_before": page.next_before})

    @app.get("/v1/rooms/{room_id}/summary")
    async def room_summary(room_id: str, request: Request) -> Response:
        """The room's newest stored sequence and the newest message the caller sees
        (for unread counts and read receipts)."""
        claims = await authorize(request, room_id)
        await membership.require_member(claims, room_id)
        last_seq = await store.last_seq(room_id)
        page = await store.page(room_id, claims.user_id, before=None, limit=1)
        return json_response(
            {"last_seq": last_seq, "last_message": page.items[0] if page.items else None}
        )

    @app.put("/v1/rooms/{room_id}/read")
    async def mark_read(room_id: str, request: Request) -> Response:
        """Move the caller's read position forward (never back); answers the stored one."""
        claims = await authorize(request, room_id)
        seq = _read_seq(await json_object_body(request, error=InvalidBody))
        await membership.require_member_to_mark_read(claims, room_id)
        return json_response({"seq": await store.mark_read(room_id, claims.user_id, seq)})

    @app.post("/v1/summaries")
    async def summaries(request: Request) -> Response:
        """``{room_id: {last_seq, unread, last_message}}`` for the listed rooms the caller
        is a member of (others are left out)."""
        claims = await authorize(request)
        room_ids = _room_ids(await json_object_body(request, error=InvalidBody))

        async def member(room_id: str) -> bool:
            try:
                await membership.require_member(claims, room_id)
            except (Forbidden, NotFound):
                return False
            return True

        allowed = await asyncio.gather(*(member(r) for r in room_ids))
        rooms = [r for r, ok in zip(room_ids, allowed, strict=True) if ok]
        positions = await store.read_positions(rooms, claims.user_id) if rooms else {}
        results = await asyncio.gather(
            *(store.summary(r, claims.user_id, positions.get(r, 0)) for r in rooms)
        )
        return json_response(dict(zip(rooms, results, strict=True)))

    if files is not None:
        catalog, blobs, max_bytes = files
        add_file_routes(
            app,
            authorize=authorize,
            membership=membership,
            catalog=catalog,
            blobs=blobs,
            max_bytes=max_bytes,
        )
    return app
