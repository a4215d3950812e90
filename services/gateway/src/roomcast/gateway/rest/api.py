"""The client-facing REST API of the gateway (docs/api.md): every REST row of the
public contract, the CORS allowlist and an accurate OpenAPI document.

Wiring (server.py), once, before the app starts::

    rest = RestDeps.create(settings, verifier=verifier, rooms_channel=rooms.channel)
    app = create_http_app(settings, deps)
    install_rest(app, rest)
    ...
    await rest.aclose()  # at shutdown, after HTTP has drained
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware

from roomcast.gateway.rest.auth import create_auth_router
from roomcast.gateway.rest.deps import RestDeps
from roomcast.gateway.rest.files import create_files_router
from roomcast.gateway.rest.messages import create_messages_router
from roomcast.gateway.rest.moderation import create_moderation_router
from roomcast.gateway.rest.notifications import create_notifications_router
from roomcast.gateway.rest.rooms import create_rooms_router

# Browsers cache a CORS preflight answer this long (seconds): 10 minutes saves a
# preflight per request without pinning a changed allowlist for long.
CORS_MAX_AGE_SECONDS = 600


def create_rest_router(deps: RestDeps) -> APIRouter:
    """Every REST route of the public contract (auth, users, rooms, DMs, messages)."""
    router = APIRouter()
    router.include_router(create_auth_router(deps))
    router.include_router(create_rooms_router(deps))
    router.include_router(create_messages_router(deps))
    router.include_router(create_moderation_router(deps))
    router.include_router(create_notifications_router(deps))
    router.include_router(create_files_router(deps))
    return router


def install_rest(app: FastAPI, deps: RestDeps) -> None:
    """Mount the REST routes on ``app``, add the CORS allowlist (if any) and make the
    OpenAPI document say what the app does: validation errors are 400 (the service
    skeleton's handler), never FastAPI's default 422."""
    app.include_router(create_rest_router(deps))
    install_cors(app, deps)
    _document_validation_as_400(app)


def install_cors(app: FastAPI, deps: RestDeps) -> None:
    """Answer CORS for the configured origins only (none by default: no CORS headers).

    Added last, so it wraps everything: 401/413/503 answers carry the CORS headers too
    and a browser client can read their error envelope. Credentials (cookies) are not
    allowed: tokens travel in the Authorization header.
    """
    origins = list(deps.cors_allowed_origins)
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["authorization", "content-type", "x-request-id"],
        expose_headers=["retry-after", "x-request-id"],
        allow_credentials=False,
        max_age=CORS_MAX_AGE_SECONDS,
    )


def _document_validation_as_400(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
