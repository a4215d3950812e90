"""The gateway's HTTP side (served on the same port as /v1/ws, see multiplexer.py).

``create_http_app(settings, deps, routers=...)`` builds the FastAPI app on the shared
service skeleton (/healthz, /readyz, /metrics, error envelope, body limit). The
client-facing REST routes live in their own modules as ``APIRouter``s and are passed in
``routers``; a handler reaches the gateway's dependencies through
``request.app.state.deps`` (a :class:`GatewayDeps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from roomcast.common.errors import error_body
from roomcast.common.httpapp import create_service_app
from roomcast.common.tokens import TokenVerifier
from roomcast.gateway.hub import Hub
from roomcast.gateway.membership import MembershipCache, RoomsClient
from roomcast.gateway.settings import Settings

# REST request bodies are small JSON documents (a room, a profile, credentials).
MAX_REST_BODY_BYTES = 64 * 1024
# The web chat app (clients/web, built by `make js`): served at /app/ when it is built.
WEB_APP_DIR = Path(__file__).resolve().parents[5] / "clients" / "web" / "dist"


@dataclass(frozen=True)
class GatewayDeps:
    """What REST handlers may use. ``hub.nc`` / ``hub.stream`` are None until NATS is up."""

    settings: Settings
    hub: Hub
    verifier: TokenVerifier
    rooms: RoomsClient
    membership: MembershipCache


def create_http_app(
    settings: Settings, deps: GatewayDeps, routers: Sequence[APIRouter] = ()
) -> FastAPI:
    app = create_service_app(
        "gateway",
        readiness=deps.hub.readiness,
        max_body_bytes=MAX_REST_BODY_BYTES,
    )
    app.state.deps = deps
    app.state.settings = settings

    @app.get("/v1/ws", include_in_schema=False)
    async def websocket_without_upgrade() -> JSONResponse:
        # The multiplexer sends real upgrades to picows; a plain GET lands here.
        return JSONResponse(
            error_body("upgrade_required", "GET /v1/ws must be a WebSocket upgrade"),
            status_code=426,
            headers={"Upgrade": "websocket"},
        )

    for router in routers:
        app.include_router(router)
    if WEB_APP_DIR.is_dir():
        app.mount("/app", StaticFiles(directory=WEB_APP_DIR, html=True), name="web-app")
    return app
