"""The HTTP API of the auth service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pymongo import AsyncMongoClient

from roomcast.auth.directory import (
    PublicUserEnvelope,
    PublicUserList,
    UserBatchRequest,
    UserDirectory,
)
from roomcast.auth.errors import MissingToken
from roomcast.auth.events import EventPublisher
from roomcast.auth.limits import Sleep, client_ip
from roomcast.auth.passwords import PasswordHasher
from roomcast.auth.service import AuthService, LoginResult
from roomcast.auth.sessions import SessionStore, utc_now
from roomcast.auth.settings import Settings
from roomcast.auth.users import UserRepository
from roomcast.common.accounts import (
    USERNAME_PATTERN,
    LoginRequest,
    ProfilePatch,
    PublicUser,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
    UserEnvelope,
)
from roomcast.common.errors import DependencyUnavailable, Unauthenticated
from roomcast.common.httpapp import create_service_app, error_response
from roomcast.common.httpinputs import MAX_AUTHORIZATION_LENGTH, bearer_token
from roomcast.common.mongo import UNAVAILABLE_ERRORS, ping
from roomcast.common.tokens import AccessClaims, TokenSigner, TokenVerifier


def _pair(result: LoginResult) -> TokenPair:
    return TokenPair(
        access_token=result.access_token,
        refresh_token=result.refresh_token,
        expires_in=result.expires_in,
        user=result.user.private(),
    )


async def _caller(request: Request) -> AccessClaims:
    """The verified claims of the request's bearer access token."""
    token = bearer_token(request)
    if token is None:
        header = request.headers.get("authorization", "")
        # A bearer header longer than any token: refused as invalid, not as missing.
        scheme, _, rest = header.partition(" ")
        if scheme.lower() == "bearer" and rest.strip() and len(header) > MAX_AUTHORIZATION_LENGTH:
            raise Unauthenticated("token too long", code="invalid_token")
        raise MissingToken()
    verifier = request.app.state.token_verifier
    assert isinstance(verifier, TokenVerifier)
    claims = await verifier.verify(token)
    # auth is the record of sessions: a logged-out or reuse-revoked session's tokens
    # stop here at once, without waiting for them to expire.
    if claims.session_id is not None and not await auth_service(request.app).sessions.is_active(
        claims.session_id
    ):
        raise Unauthenticated("session revoked", code="session_revoked")
    return claims


Caller = Annotated[AccessClaims, Depends(_caller)]


def auth_service(app: FastAPI) -> AuthService:
    """The service object behind an app made by :func:`create_app`."""
    service = app.state.auth_service
    assert isinstance(service, AuthService)
    return service


def create_app(
    settings: Settings,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    signer: TokenSigner,
    publisher: EventPublisher,
    *,
    hasher: PasswordHasher | None = None,
    rate_limit_clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], datetime] = utc_now,
    backoff_sleep: Sleep = asyncio.sleep,
) -> FastAPI:
    """Build the app. Indexes are not created here: call
    ``await auth_service(app).ensure_indexes()`` once before serving."""
    db = mongo_client[settings.mongo_db]
    service = AuthService(
        settings,
        users=UserRepository(db),
        sessions=SessionStore(db, ttl_seconds=settings.refresh_ttl_seconds, clock=wall_clock),
        hasher=hasher
        or PasswordHasher(
            cost=settings.bcrypt_cost,
            concurrency=settings.hash_concurrency,
            max_pending=settings.max_pending_hashes,
            niceness=settings.hash_thread_niceness,
        ),
        signer=signer,
        publisher=publisher,
        rate_limit_clock=rate_limit_clock,
        backoff_sleep=backoff_sleep,
    )
    # Tokens are verified exactly as every other service does it: against the JWKS.
    verifier = TokenVerifier.from_jwks(
        signer.jwks(), issuer=signer.issuer, audience=signer.audience
    )
    trusted_proxies = settings.trusted_proxies

    async def readiness() -> None:
        await ping(mongo_client)

    app = create_service_app("auth", readiness=readiness, max_body_bytes=settings.max_body_bytes)
    app.state.auth_service = service
    app.state.token_verifier = verifier
    directory = UserDirectory(service.users, clock=rate_limit_clock)

    async def _mongo_down(_: Request, exc: Exception) -> Response:
        return error_response(DependencyUnavailable("MongoDB is unavailable"))

    for error_type in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_type, _mongo_down)

    def ip_of(request: Request) -> str:
        peer = request.client.host if request.client is not None else None
        return client_ip(peer, request.headers.getlist("x-forwarded-for"), trusted_proxies)

    @app.post("/v1/auth/register", status_code=201)
    async def register(body: RegisterRequest, request: Request) -> UserEnvelope:
        user = await service.register(body, ip_of(request))
        return UserEnvelope(user=user.private())

    @app.post("/v1/auth/login")
    async def login(body: LoginRequest, request: Request) -> TokenPair:
        return _pair(await service.login(body, ip_of(request)))

    @app.post("/v1/auth/refresh")
    async def refresh(body: RefreshRequest) -> TokenPair:
        return _pair(await service.refresh(body.refresh_token))

    @app.post("/v1/auth/logout", status_code=204)
    async def logout(body: RefreshRequest) -> Response:
        await service.logout(body.refresh_token)
        return Response(status_code=204)

    @app.get("/v1/users/me")
    async def get_me(claims: Caller) -> UserEnvelope:
        return UserEnvelope(user=(await service.me(claims)).private())

    @app.patch("/v1/users/me")
    async def patch_me(body: ProfilePatch, claims: Caller) -> UserEnvelope:
        return UserEnvelope(user=(await service.update_me(claims, body)).private())

    @app.get("/v1/users")
    async def find_user(
        claims: Caller,
        username: Annotated[str, Query(pattern=USERNAME_PATTERN, min_length=3, max_length=32)],
    ) -> PublicUserEnvelope:
        return PublicUserEnvelope(user=(await directory.by_username(claims, username)).public())

    @app.post("/v1/users/lookup")
    async def lookup_users(body: UserBatchRequest, claims: Caller) -> PublicUserList:
        return PublicUserList(items=[u.public() for u in await directory.by_ids(claims, body.ids)])

    @app.get("/v1/users/{user_id}")
    async def get_user(user_id: str) -> dict[str, PublicUser]:
        return {"user": (await service.profile(user_id)).public()}

    @app.get("/.well-known/jwks.json")
    async def jwks() -> Response:
        # Verifiers cache the JWKS for 5 minutes themselves; let HTTP caches do the same.
        return Response(
            content=orjson.dumps(signer.jwks()),
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    return app
