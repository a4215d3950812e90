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
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

from roomcast.common.httpapp import ReadinessCheck, create_service_app
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
# Digits accepted in a numeric parameter (int64 has 19).
MAX_NUMBER_CHARS = 20
# A subscription's JSON is under 1 KB; bodies of these endpoints are small.
MAX_BODY_BYTES = 8 * 1024


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def _int_param(request: Request, name: str, *, low: int, high: int) -> int | None:
    values = request.query_params.getlist(name)
    if not values:
        return None
    raw = values[0]
    if len(values) > 1 or not (
        0 < len(raw) <= MAX_NUMBER_CHARS and raw.isascii() and raw.isdigit()
    ):
        raise InvalidBody(f"{name}: must be an integer from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidBody(f"{name}: must be an integer from {low} to {high}")
    return value


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidBody("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
    return body


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
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MissingToken("a bearer access token is required")
        claims = await verifier.verify(token.strip())
        wait = limiter.hit(claims.user_id)
        if wait > 0:
            raise InboxRateLimited("too many requests; slow down", retry_after=wait)
        return claims

    @app.get("/v1/notifications")
    async def list_notifications(request: Request) -> Response:
        """The caller's notifications, newest first, with the unread count."""
        claims = await caller(request)
        limit = _int_param(request, "limit", low=1, high=MAX_LIMIT) or DEFAULT_LIMIT
        cursor = _int_param(request, "cursor", low=1, high=MAX_SEQ)
        read_up_to = await store.read_up_to(claims.user_id)
        docs = await store.page(claims.user_id, before=cursor, limit=limit + 1)
        page = docs[:limit]
        return _json(
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
        body = await _json_body(request)
        up_to = body.get("up_to")
        if set(body) != {"up_to"} or type(up_to) is not int or not 0 <= up_to <= MAX_SEQ:
            raise InvalidBody('the body must be {"up_to": <integer from 0 to 2^63-1>}')
        stored = await store.mark_read(claims.user_id, up_to)
        return _json({"read_up_to": stored, "unread": await store.unread(claims.user_id, stored)})

    @app.get("/v1/push/vapid-key")
    async def vapid_key(request: Request) -> Response:
        """The VAPID public key browsers pass as ``applicationServerKey``."""
        await caller(request)
        return _json({"key": vapid_public_key})

    @app.post("/v1/push/subscriptions")
    async def subscribe(request: Request) -> Response:
        """Register a browser's ``PushSubscription`` for the caller."""
        claims = await caller(request)
        sub = parse_subscription(
            await _json_body(request),
            allowed_hosts=settings.push_endpoint_hosts,
            allow_http=settings.push_allow_http,
        )
        await store.add_subscription(
            sub.to_doc(claims.user_id, dt.datetime.now(dt.UTC)),
            max_per_user=settings.push_max_subscriptions,
        )
        return _json({"id": sub.id, "endpoint": sub.endpoint}, status_code=201)

    @app.delete("/v1/push/subscriptions")
    async def unsubscribe(request: Request) -> Response:
        """Forget one of the caller's subscriptions, by endpoint."""
        claims = await caller(request)
        body = await _json_body(request)
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
