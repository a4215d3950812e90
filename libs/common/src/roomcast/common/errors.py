"""The error hierarchy shared by every service.

Each service's ``errors.py`` subclasses these; the edges (HTTP handlers, gRPC
interceptors, WebSocket close codes) map them to a status exactly once.

  RoomcastError  code="internal"  HTTP 500
  ├── InvalidInput  code="invalid_request"  HTTP 400 / gRPC INVALID_ARGUMENT
  ├── Unauthenticated  code="unauthenticated"  HTTP 401 / gRPC UNAUTHENTICATED
  ├── Forbidden  code="forbidden"  HTTP 403 / gRPC PERMISSION_DENIED
  ├── NotFound  code="not_found"  HTTP 404 / gRPC NOT_FOUND
  ├── Conflict  code="conflict"  HTTP 409 / gRPC ALREADY_EXISTS
  ├── PreconditionFailed  code="precondition_failed"  HTTP 409 / gRPC FAILED_PRECONDITION
  ├── PayloadTooLarge  code="payload_too_large"  HTTP 413 / gRPC INVALID_ARGUMENT
  ├── RateLimited  code="rate_limited"  HTTP 429 (Retry-After) / gRPC RESOURCE_EXHAUSTED
  └── DependencyUnavailable  code="dependency_unavailable" HTTP 503 / gRPC UNAVAILABLE
"""

from __future__ import annotations

from typing import Any


class RoomcastError(Exception):
    """Base of every error a Roomcast service raises on purpose."""

    code = "internal"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, Any]:
        """The public error envelope: ``{"error": {"code", "message"}}``."""
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInput(RoomcastError):
    """The request is malformed or a field has an invalid value."""

    code = "invalid_request"


class Unauthenticated(RoomcastError):
    """Missing, malformed, expired or otherwise invalid credentials."""

    code = "unauthenticated"


class Forbidden(RoomcastError):
    """The caller is authenticated but not allowed to do this."""

    code = "forbidden"


class NotFound(RoomcastError):
    """The resource does not exist or is not visible to the caller."""

    code = "not_found"


class Conflict(RoomcastError):
    """The resource already exists."""

    code = "conflict"


class PreconditionFailed(RoomcastError):
    """The resource is not in a state that allows this operation."""

    code = "precondition_failed"


class PayloadTooLarge(RoomcastError):
    """The request body or frame is larger than allowed."""

    code = "payload_too_large"


class RateLimited(RoomcastError):
    """Too many requests; retry after ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, message: str = "", *, retry_after: float = 1.0, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class DependencyUnavailable(RoomcastError):
    """A dependency (MongoDB, NATS, another service) is unreachable."""

    code = "dependency_unavailable"


HTTP_STATUS: dict[type[RoomcastError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PreconditionFailed: 409,
    PayloadTooLarge: 413,
    RateLimited: 429,
    DependencyUnavailable: 503,
}


def http_status_for(error: RoomcastError) -> int:
    """The HTTP status of an error, found by walking its class hierarchy."""
    for cls in type(error).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_body(code: str, message: str) -> dict[str, Any]:
    """Build the error envelope for errors that are not exceptions."""
    return {"error": {"code": code, "message": message}}
