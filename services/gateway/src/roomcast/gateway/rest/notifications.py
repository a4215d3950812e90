"""Notifications and Web Push subscriptions, relayed to the notifier service
(docs/notifications.md).

``GET /v1/notifications``, ``POST /v1/notifications/read``, ``GET /v1/push/vapid-key``
and ``POST``/``DELETE /v1/push/subscriptions``. As for history's pages: the token is
verified here first (401 without a hop), bodies and parameters are validated here (400
before any hop) and sent on as they came; the notifier verifies the token again and
its answer (or its error) is relayed unchanged.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``Auth``
# alias (a closure variable) in the signatures, not a string it cannot resolve.

import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from roomcast.common.errors import RoomcastError
from roomcast.common.logging import request_id_var
from roomcast.gateway.rest.deps import Caller, RestDeps, caller_dependency
from roomcast.gateway.rest.docs import errors
from roomcast.gateway.rest.models import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_SEQ, StrictBody
from roomcast.gateway.rest.upstream import forward, send

log = logging.getLogger(__name__)

# A push service's endpoint URL: browsers' are ~150-500 characters (the notifier's limit).
MAX_ENDPOINT_CHARS = 2048
# base64url of a 65-byte P-256 point is 87 characters, of a 16-byte secret 22; padding
# and slack stay far below this.
MAX_KEY_CHARS = 200


class ReadBody(StrictBody):
    up_to: int = Field(ge=0, le=MAX_SEQ, description="every notification up to this seq is read")


class PushKeys(StrictBody):
    p256dh: str = Field(min_length=1, max_length=MAX_KEY_CHARS)
    auth: str = Field(min_length=1, max_length=MAX_KEY_CHARS)


class PushSubscriptionBody(StrictBody):
    """A browser's ``PushSubscription.toJSON()``."""

    endpoint: str = Field(min_length=1, max_length=MAX_ENDPOINT_CHARS)
    # The Push API spells it so: milliseconds since the epoch, or null.
    expirationTime: float | None = None
    keys: PushKeys


class UnsubscribeBody(StrictBody):
    endpoint: str = Field(min_length=1, max_length=MAX_ENDPOINT_CHARS)


class NotificationPage(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="newest first: {id, kind: dm|mention|reply, room, seq, sender, preview, "
        "sent_at, private, read}"
    )
    next_cursor: str | None = Field(description="pass as cursor for older notifications")
    unread: int = Field(description="notifications after the read position (at most 999)")


class ReadState(BaseModel):
    read_up_to: int
    unread: int


class VapidKey(BaseModel):
    key: str = Field(description="the applicationServerKey to subscribe with (base64url)")


class PushSubscriptionCreated(BaseModel):
    id: str
    endpoint: str


async def unread_notifications(deps: RestDeps, token: str, *, time_limit: float) -> int | None:
    """The caller's unread notification count for the joined-rooms view, or None when
    the notifier cannot answer (the listing degrades: the rooms matter more than the
    badge). One notification page of one item: its ``unread`` is the count."""
    headers = {"authorization": f"Bearer {token}"}
    request_id = request_id_var.get()
    if request_id:
        headers["x-request-id"] = request_id
    try:
        status, body, _ = await send(
            deps.http,
            "notifier",
            "GET",
            f"{deps.notifier_url}/v1/notifications",
            headers=headers,
            params={"limit": "1"},
            time_limit=time_limit,
        )
        result = orjson.loads(body) if status == 200 else None
    except (RoomcastError, orjson.JSONDecodeError) as exc:
        log.warning("unread notification count unavailable: %r", exc)
        return None
    unread = result.get("unread") if isinstance(result, dict) else None
    if type(unread) is not int or unread < 0:
        log.warning("unread notification count unavailable: the notifier answered %d", status)
        return None
    return unread


def create_notifications_router(deps: RestDeps) -> APIRouter:
    router = APIRouter(tags=["notifications"])
    Auth = Annotated[Caller, caller_dependency(deps.verifier)]

    async def relay(request: Request, path: str, params: dict[str, str] | None = None) -> Response:
        return await forward(
            request,
            deps.http,
            "notifier",
            f"{deps.notifier_url}{path}",
            time_limit=deps.notifier_timeout,
            trusted=deps.trusted_proxies,
            params=params,
        )

    @router.get(
        "/v1/notifications",
        response_model=NotificationPage,
        responses=errors(400, 401, 429, 503),
        summary="The caller's mentions, replies and DMs, newest first",
    )
    async def list_notifications(
        request: Request,
        caller: Auth,
        cursor: Annotated[
            int | None, Query(ge=1, le=MAX_SEQ, description="the previous page's next_cursor")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")] = (
            DEFAULT_PAGE_SIZE
        ),
    ) -> Response:
        params = {"limit": str(limit)}
        if cursor is not None:
            params["cursor"] = str(cursor)
        return await relay(request, "/v1/notifications", params)

    @router.post(
        "/v1/notifications/read",
        response_model=ReadState,
        responses=errors(400, 401, 429, 503),
        summary="Mark the caller's notifications read up to a sequence",
    )
    async def mark_read(request: Request, body: ReadBody, caller: Auth) -> Response:
        return await relay(request, "/v1/notifications/read", {})

    @router.get(
        "/v1/push/vapid-key",
        response_model=VapidKey,
        responses=errors(401, 429, 503),
        summary="The VAPID public key browsers subscribe with",
    )
    async def vapid_key(request: Request, caller: Auth) -> Response:
        return await relay(request, "/v1/push/vapid-key", {})

    @router.post(
        "/v1/push/subscriptions",
        status_code=201,
        response_model=PushSubscriptionCreated,
        responses=errors(400, 401, 429, 503),
        summary="Register a browser's Web Push subscription",
    )
    async def subscribe(request: Request, body: PushSubscriptionBody, caller: Auth) -> Response:
        return await relay(request, "/v1/push/subscriptions", {})

    @router.delete(
        "/v1/push/subscriptions",
        status_code=204,
        responses=errors(400, 401, 429, 503),
        summary="Forget one of the caller's Web Push subscriptions",
    )
    async def unsubscribe(request: Request, body: UnsubscribeBody, caller: Auth) -> Response:
        return await relay(request, "/v1/push/subscriptions", {})

    return router
