"""The auth rows of the public contract, relayed to the auth service over HTTP.

The gateway declares each route with auth's own request model (one source of truth:
``roomcast.common.accounts``), so the OpenAPI document is complete and malformed bodies
are refused at the edge (400, same envelope as auth's) without a hop. A valid request
is relayed byte for byte: auth sees exactly what the client sent, and its answer
(status, body, Content-Type, Retry-After, Cache-Control) comes back unchanged. Token
checks on ``/v1/users/me`` are auth's (it verifies the token itself).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

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
from roomcast.common.errors import NotFound
from roomcast.common.subjects import is_object_id
from roomcast.gateway.rest.deps import RestDeps, bearer_scheme
from roomcast.gateway.rest.docs import errors
from roomcast.gateway.rest.models import Jwks
from roomcast.gateway.rest.upstream import forward


class PublicUserEnvelope(BaseModel):
    user: PublicUser


# The same message auth gives for an unknown id: a malformed id is just as unknown.
USER_NOT_FOUND = "No such user."


def create_auth_router(deps: RestDeps) -> APIRouter:
    router = APIRouter(tags=["auth"])
    secured = [Depends(bearer_scheme)]

    async def relay(request: Request, path: str) -> Response:
        return await forward(
            request,
            deps.http,
            "auth",
            deps.auth_url + path,
            time_limit=deps.auth_timeout,
            trusted=deps.trusted_proxies,
        )

    @router.post(
        "/v1/auth/register",
        status_code=201,
        response_model=UserEnvelope,
        responses=errors(400, 409, 413, 429, 503),
        summary="Create an account",
    )
    async def register(body: RegisterRequest, request: Request) -> Response:
        return await relay(request, "/v1/auth/register")

    @router.post(
        "/v1/auth/login",
        response_model=TokenPair,
        responses=errors(400, 401, 413, 429, 503),
        summary="Exchange credentials for an access and a refresh token",
    )
    async def login(body: LoginRequest, request: Request) -> Response:
        return await relay(request, "/v1/auth/login")

    @router.post(
        "/v1/auth/refresh",
        response_model=TokenPair,
        responses=errors(400, 401, 413, 503),
        summary="Rotate the token pair (a reused refresh token revokes its family)",
    )
    async def refresh(body: RefreshRequest, request: Request) -> Response:
        return await relay(request, "/v1/auth/refresh")

    @router.post(
        "/v1/auth/logout",
        status_code=204,
        response_class=Response,
        responses=errors(400, 413, 503),
        summary="Revoke a refresh token",
    )
    async def logout(body: RefreshRequest, request: Request) -> Response:
        return await relay(request, "/v1/auth/logout")

    @router.get(
        "/v1/users/me",
        response_model=UserEnvelope,
        dependencies=secured,
        responses=errors(401, 503),
        summary="The caller's own profile (with email)",
    )
    async def get_me(request: Request) -> Response:
        return await relay(request, "/v1/users/me")

    @router.patch(
        "/v1/users/me",
        response_model=UserEnvelope,
        dependencies=secured,
        responses=errors(400, 401, 413, 503),
        summary="Change display_name and/or avatar_url (null removes the avatar)",
    )
    async def patch_me(body: ProfilePatch, request: Request) -> Response:
        return await relay(request, "/v1/users/me")

    @router.get(
        "/v1/users",
        response_model=PublicUserEnvelope,
        dependencies=secured,
        responses=errors(400, 401, 404, 429, 503),
        summary="Find a user by exact username (case-insensitive); public profile only",
    )
    async def find_user(
        request: Request,
        username: Annotated[
            str,
            Query(pattern=USERNAME_PATTERN, min_length=3, max_length=32, description="exact"),
        ],
    ) -> Response:
        # Validated here (400 without a hop); auth checks the token and rate limits.
        return await relay(request, "/v1/users")

    @router.get(
        "/v1/users/{user_id}",
        response_model=PublicUserEnvelope,
        responses=errors(404, 503),
        summary="A user's public profile (no email)",
    )
    async def get_user(user_id: str, request: Request) -> Response:
        # Ids are ObjectIds; anything else names no user (and never reaches auth).
        if not is_object_id(user_id):
            raise NotFound(USER_NOT_FOUND, code="user_not_found")
        return await relay(request, f"/v1/users/{user_id}")

    @router.get(
        "/.well-known/jwks.json",
        response_model=Jwks,
        responses=errors(503),
        summary="The public keys access tokens are signed with",
    )
    async def jwks(request: Request) -> Response:
        return await relay(request, "/.well-known/jwks.json")

    return router
