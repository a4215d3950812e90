"""The notifier's HTTP API (FastAPI): the inbox and Web Push subscriptions.

Clients reach it through the gateway, which proxies ``/v1/notifications*`` and
``/v1/push/*`` with the caller's bearer token; tokens are verified here from auth's
JWKS like every other service does.

- ``GET /v1/notifications?cursor&limit``: ``{items, next_cursor, unread}``, newest
  first; ``cursor`` is the previous page's ``next_cursor`` (a stream sequence).
- ``POST /v1/notifications/read {"up_to": <seq>}``: everything up to that sequence is
  read (never moves back); ``{read_up_to, unread}``.
- ``GET /v1/push/vapid-key``: ``{key}``, the ``applicationServerKey`` to subscribe with.
- ``POST /v1/push/subscriptions`` a ``PushSubscription`` (its ``toJSON()``): 201.
- ``DELETE /v1/push/subscriptions {"endpoint"}``: 204 (also when already gone).
"""

from __future__ import annotations

import datetime as dt

from fastapi import FastAPI, Request, Response

from roomcast.common.httpapp import ReadinessCheck, create_service_app
from roomcast.common.httpinputs import (
    bearer_token,
    int_query_param,
    json_object_body,
    json_response,
)
from roomcast.common.ratelimit import KeyedRateLimiter
from roomcast.common.tokens import AccessClaims, TokenVerifier
from roomcast.notifier.errors import InboxRateLimited, InvalidBody, MissingToken
from roomcast.notifier.records import public_item
from roomcast.notifier.settings import Settings
from roomcast.notifier.store import NotifierStore
from roomcast.notifier.webpush import PushSubscription, check_endpoint, parse_subscription

DEFAULT_LIMIT = 50
# A page of 100 notifications is ~40 KB of JSON: a screen and more.
MAX_LIMIT = 100
# Stream sequences are uint64 in JetStream, stored as int64.
MAX_SEQ = 2**63 - 1
# A subscription's JSON is under 1 KB; bodies of these endpoints are small.
MAX_BODY_BYTES = 8 * 1024


def create_app(
    *,
    settings: Settings,
    store: NotifierStore,
    verifier: TokenVerifier,
    limiter: KeyedRateLimiter,
    vapid_public_key: str,
    readiness: ReadinessCheck | None = None,
) -> FastAPI:
    app = create_service_app("notifier", readiness=readiness, max_body_bytes=MAX_BODY_BYTES)

    async def caller(request: Request) -> AccessClaims:
        token = bearer_token(request)
        if token is None:
            raise MissingToken("a bearer access token is required")
        claims = await verifier.verify(token)
        wait = limiter.hit(claims.user_id)
        if wait > 0:
            raise InboxRateLimited("too many requests; slow down", retry_after=wait)
        return claims

    @app.get("/v1/notifications")
    async def list_notifications(request: Request) -> Response:
        """The caller's notifications, newest first, with the unread count."""
        claims = await caller(request)
        limit = (
            int_query_param(request, "limit", low=1, high=MAX_LIMIT, error=InvalidBody)
            or DEFAULT_LIMIT
        )
        cursor = int_query_param(request, "cursor", low=1, high=MAX_SEQ, error=InvalidBody)
        read_up_to = await store.read_up_to(claims.user_id)
        docs = await store.page(claims.user_id, before=cursor, limit=limit + 1)
        page = docs[:limit]
        return json_response(
            {
                "items": [public_item(d, read_up_to) for d in page],
                "next_cursor": str(page[-1]["seq"]) if len(docs) > limit else None,
                "unread": await store.unread(claims.user_id, read_up_to),
            }
        )

    @app.post("/v1/notifications/read")
    async def mark_read(request: Request) -> Response:
        """Mark every notification up to ``up_to`` (a stream sequence) read."""
        claims = await caller(request)
        body = await json_object_body(request, error=InvalidBody)
        up_to = body.get("up_to")
        if set(body) != {"up_to"} or type(up_to) is not int or not 0 <= up_to <= MAX_SEQ:
            raise InvalidBody('the body must be {"up_to": <integer from 0 to 2^63-1>}')
        stored = await store.mark_read(claims.user_id, up_to)
        return json_response(
            {"read_up_to": stored, "unread": await store.unread(claims.user_id, stored)}
        )

    @app.get("/v1/push/vapid-key")
    async def vapid_key(request: Request) -> Response:
        """The VAPID public key browsers pass as ``applicationServerKey``."""
        await caller(request)
        return json_response({"key": vapid_public_key})

    @app.post("/v1/push/subscriptions")
    async def subscribe(request: Request) -> Response:
        """Register a browser's ``PushSubscription`` for the caller."""
        claims = await caller(request)
        sub = parse_subscription(
            await json_object_body(request, error=InvalidBody),
            allowed_hosts=settings.push_endpoint_hosts,
            allow_http=settings.push_allow_http,
        )
        await store.add_subscription(
            sub.to_doc(claims.user_id, dt.datetime.now(dt.UTC)),
            max_per_user=settings.push_max_subscriptions,
        )
        return json_response({"id": sub.id, "endpoint": sub.endpoint}, status_code=201)

    @app.delete("/v1/push/subscriptions")
    async def unsubscribe(request: Request) -> Response:
        """Forget one of the caller's subscriptions, by endpoint."""
        claims = await caller(request)
        body = await json_object_body(request, error=InvalidBody)
        if not set(body) <= {"endpoint", "expirationTime", "keys"} or "endpoint" not in body:
            raise InvalidBody('the body must be {"endpoint": <the subscription endpoint>}')
        endpoint = check_endpoint(
            body["endpoint"],
            allowed_hosts=settings.push_endpoint_hosts,
            allow_http=settings.push_allow_http,
        )
        await store.remove_subscription(claims.user_id, PushSubscription(endpoint, b"", b"").id)
        return Response(status_code=204)

    return app
