"""The FastAPI skeleton every HTTP service starts from: health, readiness, metrics,
request ids, the error envelope, and a request body size limit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roomcast.common.errors import RateLimited, RoomcastError, error_body, http_status_for
from roomcast.common.logging import request_id_var
from roomcast.common.metrics import HttpMetrics, HttpMetricsMiddleware, render_metrics

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]

# A request id from the client is echoed only if it is short and plain; anything else
# is replaced, so logs cannot be stuffed through the header.
MAX_REQUEST_ID_LENGTH = 64

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "dependency_unavailable",
}


def error_response(error: RoomcastError) -> JSONResponse:
    headers = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(max(1, int(error.retry_after + 0.999)))
    return JSONResponse(error.to_body(), status_code=http_status_for(error), headers=headers)


class BodySizeLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413, whether or not the client
    declared a Content-Length, before the application reads them."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, own_limit: Callable[[str], bool] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Paths whose handler streams the body and enforces its own, larger limit
        # (history's file uploads).
        self.own_limit = own_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.own_limit is not None and self.own_limit(scope.get("path", ""))
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        seen = 0
        rejected = False

        async def limited_receive() -> Message:
            # Over the limit: answer 413 ourselves and tell the app the client left, so
            # it stops reading; whatever it answers afterwards is dropped.
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    rejected = True
                    await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # The app may fail on the disconnect we handed it; the client has its 413.
            if not rejected:
                raise

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(
            error_body("payload_too_large", f"request body exceeds {self.max_bytes} bytes"),
            status_code=413,
        )
        await response({"type": "http"}, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if 0 < len(candidate) <= MAX_REQUEST_ID_LENGTH and candidate.isascii():
                    request_id = candidate
        request_id = request_id or uuid.uuid4().hex
        token = request_id_var.set(request_id)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_id_var.reset(token)


def create_service_app(
    service: str,
    *,
    readiness: ReadinessCheck | None = None,
    max_body_bytes: int = 64 * 1024,
    own_body_limit: Callable[[str], bool] | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with ``/healthz``, ``/readyz``, ``/metrics`` and the error envelope.

    ``readiness`` raises (any exception) when the service cannot serve; ``/readyz``
    then answers 503 with the error envelope.
    """
    app = FastAPI(title=f"Roomcast {service}", **fastapi_kwargs)
    metrics = HttpMetrics.for_service(service)

    @app.exception_handler(RoomcastError)
    async def _roomcast_error(_: Request, exc: RoomcastError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid value')}" if where else "invalid request"
        return JSONResponse(error_body("invalid_request", message), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal", "internal error"), status_code=500)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if readiness is not None:
            try:
                await readiness()
            except Exception as exc:
                return JSONResponse(
                    error_body("not_ready", str(exc) or type(exc).__name__), status_code=503
                )
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes, own_limit=own_body_limit)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
