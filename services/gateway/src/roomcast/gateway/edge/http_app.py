"""The gateway's HTTP side (served on the same port as /v1/ws, see multiplexer.py).

``create_http_app(readiness)`` builds the FastAPI app on the shared service skeleton
(/healthz, /readyz, /metrics, error envelope, body limit), the 426 answer of a plain
``GET /v1/ws`` and the web app's static files. The client-facing REST routes are
installed on it by the REST edge (``install_rest``), whose handlers get their
dependencies by closure.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from roomcast.common.errors import error_body
from roomcast.common.httpapp import ReadinessCheck, create_service_app
from roomcast.gateway.rest.files import is_upload_path

# REST request bodies are small JSON documents (a room, a profile, credentials).
MAX_REST_BODY_BYTES = 64 * 1024
# The web chat app (clients/web, built by `make js`): served at /app/ when it is built.
WEB_APP_DIR = Path(__file__).resolve().parents[6] / "clients" / "web" / "dist"


def create_http_app(readiness: ReadinessCheck) -> FastAPI:
    """The gateway's FastAPI app; ``readiness`` raises while /readyz must say 503."""
    app = create_service_app(
        "gateway",
        readiness=readiness,
        max_body_bytes=MAX_REST_BODY_BYTES,
        # File uploads stream to history; rest/files.py enforces the file limit.
        own_body_limit=is_upload_path,
    )

    @app.get("/v1/ws", include_in_schema=False)
    async def websocket_without_upgrade() -> JSONResponse:
        # The multiplexer sends real upgrades to picows; a plain GET lands here.
        return JSONResponse(
            error_body("upgrade_required", "GET /v1/ws must be a WebSocket upgrade"),
            status_code=426,
            headers={"Upgrade": "websocket"},
        )

    if WEB_APP_DIR.is_dir():
        app.mount("/app", StaticFiles(directory=WEB_APP_DIR, html=True), name="web-app")
    return app
