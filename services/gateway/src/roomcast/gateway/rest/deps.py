"""What the REST edge needs: its settings, its upstream clients and the caller's token.

``RestDeps`` holds one shared ``httpx.AsyncClient`` (auth and history), a rooms gRPC
stub on the gateway's existing channel, and the gateway's ``TokenVerifier``. Handlers
get it by closure (``create_rest_router(deps)``), not through global state.

Its settings are the gateway's one ``Settings`` (``ROOMCAST_GATEWAY_*``): the REST
edge's variables sit in their own section there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import grpc
import httpx
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from roomcast.common import httpinputs
from roomcast.common.errors import Unauthenticated
from roomcast.common.proxies import IpNetwork
from roomcast.common.tokens import AccessClaims, TokenVerifier
from roomcast.gateway.settings import Settings
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    from roomcast.rpc.rooms.v1.rooms_pb2_grpc import RoomsAsyncStub


@dataclass(frozen=True)
class RestDeps:
    """The REST edge's clients. ``aclose()`` closes the HTTP client (not the channel,
    which belongs to whoever passed it)."""

    http: httpx.AsyncClient
    auth_url: str
    history_url: str
    rooms: RoomsAsyncStub
    verifier: TokenVerifier
    rooms_timeout: float
    auth_timeout: float
    history_timeout: float
    trusted_proxies: tuple[IpNetwork, ...] = ()
    cors_allowed_origins: tuple[str, ...] = ()
    notifier_url: str = "http://127.0.0.1:8084"
    notifier_timeout: float = 5.0
    # Largest uploaded file (rest/files.py); history enforces the same limit.
    files_max_bytes: int = 25 * 1024 * 1024

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        verifier: TokenVerifier,
        rooms_channel: grpc.aio.Channel,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> RestDeps:
        http = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(
                max_connections=settings.upstream_max_connections,
                max_keepalive_connections=settings.upstream_max_keepalive,
                keepalive_expiry=settings.upstream_keepalive_expiry_seconds,
            ),
            # Per-request read timeouts are set per upstream (see auth/history above);
            # this default bounds connect, write and the wait for a pooled connection.
            timeout=httpx.Timeout(
                settings.auth_request_timeout_seconds,
                connect=settings.upstream_connect_timeout_seconds,
            ),
            follow_redirects=False,
            # Never read HTTP_PROXY & co. from the environment: upstreams are internal.
            trust_env=False,
        )
        return cls(
            http=http,
            auth_url=settings.auth_url.rstrip("/"),
            history_url=settings.history_url.rstrip("/"),
            rooms=rooms_pb2_grpc.RoomsStub(rooms_channel),
            verifier=verifier,
            rooms_timeout=settings.rooms_timeout_seconds,
            auth_timeout=settings.auth_request_timeout_seconds,
            history_timeout=settings.history_request_timeout_seconds,
            trusted_proxies=settings.trusted_proxies,
            cors_allowed_origins=settings.cors_allowed_origins,
            notifier_url=settings.notifier_url.rstrip("/"),
            notifier_timeout=settings.notifier_request_timeout_seconds,
            files_max_bytes=settings.files_max_bytes,
        )

    async def aclose(self) -> None:
        await self.http.aclose()


# Declares the bearer scheme in the OpenAPI document; parsing is ours (below), so a
# missing token is our 401 envelope, not FastAPI's 403.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An access token from POST /v1/auth/login (or /v1/auth/refresh).",
)


def bearer_token(request: Request) -> str:
    """The request's bearer token, or 401 ``missing_token`` (``invalid_token`` when the
    header is longer than any token could be)."""
    token = httpinputs.bearer_token(request)
    if token is not None:
        return token
    if len(request.headers.get("authorization", "")) > httpinputs.MAX_AUTHORIZATION_LENGTH:
        raise Unauthenticated("access token too long", code="invalid_token")
    raise Unauthenticated("a bearer access token is required", code="missing_token")


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller: the claims and the raw token (forwarded upstream)."""

    claims: AccessClaims
    token: str

    @property
    def user_id(self) -> str:
        return self.claims.user_id


def caller_dependency(verifier: TokenVerifier) -> Any:
    """A FastAPI dependency: verify the bearer token locally (401 before any hop)."""

    async def caller(request: Request, _: Annotated[Any, Depends(bearer_scheme)]) -> Caller:
        token = bearer_token(request)
        return Caller(await verifier.verify(token), token)

    return Depends(caller)
