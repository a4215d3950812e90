"""What the REST edge needs: its settings, its upstream clients and the caller's token.

``RestDeps`` holds one shared ``httpx.AsyncClient`` (auth and history), a rooms gRPC
stub on the gateway's existing channel, and the gateway's ``TokenVerifier``. Handlers
get it by closure (``create_rest_router(deps)``), not through global state.

Settings that the gateway's core ``Settings`` does not have live in ``RestSettings``
(same ``ROOMCAST_GATEWAY_`` prefix), so the REST edge can be configured without
touching the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import grpc
import httpx
from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from roomcast.common.errors import Unauthenticated
from roomcast.common.proxies import IpNetwork, comma_list, parse_networks
from roomcast.common.tokens import AccessClaims, TokenVerifier
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc

if TYPE_CHECKING:
    from roomcast.gateway.settings import Settings
    from roomcast.rpc.rooms.v1.rooms_pb2_grpc import RoomsAsyncStub


# Longest Authorization header considered: an access token is well under 1 KiB; the
# verifier refuses anything over 4 KiB anyway, this avoids even base64-decoding more.
MAX_AUTHORIZATION_LENGTH = 4096


class RestSettings(BaseSettings):
    """REST-edge settings (``ROOMCAST_GATEWAY_*``); every default is explained."""

    model_config = SettingsConfigDict(env_prefix="ROOMCAST_GATEWAY_", extra="ignore", frozen=True)

    # Browser origins allowed to call the REST API cross-origin (comma-separated, "*" =
    # any). Default: none, so no CORS headers at all: a same-origin or non-browser
    # client is unaffected, a foreign web page cannot read responses.
    cors_allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # Peers whose X-Forwarded-For chain is kept when forwarding to auth (the load
    # balancer in front of the gateways); IPs or CIDRs. Default: none, so the chain a
    # client sends is replaced by the client's address and cannot spoof auth's
    # per-IP login limits.
    trusted_proxies: Annotated[tuple[IpNetwork, ...], NoDecode] = ()
    # auth answers in milliseconds, except login/register which wait for a bcrypt
    # hash: auth queues at most ~8 s of hashing before it answers 503 itself, so 10 s
    # lets its own answer through and still bounds a hung auth.
    auth_request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # A history page is one indexed MongoDB read plus a cached membership check
    # (history gives rooms 2 s); 5 s means history is overloaded or gone.
    history_request_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # Connecting to a service on the cluster network takes about a millisecond; 2 s
    # covers one lost SYN (retransmitted after 1 s) and fails fast when it is down.
    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # Concurrent upstream HTTP requests per gateway (auth + history). Each REST request
    # holds at most one; beyond this a request waits up to the connect timeout for a
    # free connection, then gets 503, instead of queueing without limit.
    upstream_max_connections: int = Field(default=200, ge=1, le=10_000)
    # Idle keep-alive connections kept open: enough for steady traffic without a TCP
    # handshake per request, few enough to not hold hundreds of idle sockets on auth.
    upstream_max_keepalive: int = Field(default=50, ge=0, le=10_000)
    # Idle connections are closed after this: below the upstreams' own keep-alive
    # timeout (30 s, roomcast.common.lifecycle.uvicorn_server), so the gateway never
    # reuses a connection the server is about to close.
    upstream_keepalive_expiry_seconds: float = Field(default=20.0, ge=0, le=300)

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        value = comma_list(value)
        if isinstance(value, list | tuple):
            return tuple(str(v).rstrip("/") for v in value)
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        return parse_networks(value)


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

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        verifier: TokenVerifier,
        rooms_channel: grpc.aio.Channel,
        rest: RestSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> RestDeps:
        rest = rest or RestSettings()
        http = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(
                max_connections=rest.upstream_max_connections,
                max_keepalive_connections=rest.upstream_max_keepalive,
                keepalive_expiry=rest.upstream_keepalive_expiry_seconds,
            ),
            # Per-request read timeouts are set per upstream (see auth/history above);
            # this default bounds connect, write and the wait for a pooled connection.
            timeout=httpx.Timeout(
                rest.auth_request_timeout_seconds, connect=rest.upstream_connect_timeout_seconds
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
            auth_timeout=rest.auth_request_timeout_seconds,
            history_timeout=rest.history_request_timeout_seconds,
            trusted_proxies=rest.trusted_proxies,
            cors_allowed_origins=rest.cors_allowed_origins,
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
    """The request's bearer token, or 401 ``missing_token``."""
    header = request.headers.get("authorization", "")
    if len(header) > MAX_AUTHORIZATION_LENGTH:
        raise Unauthenticated("access token too long", code="invalid_token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("a bearer access token is required", code="missing_token")
    return token


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
