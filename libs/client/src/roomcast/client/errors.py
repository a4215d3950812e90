"""Exceptions raised by the Roomcast client SDK.

  ClientError                      anything the SDK raises on purpose
  ├── ApiError(status, code, message)   a REST call answered with an error envelope
  │   ├── BadRequest          400  validation failed
  │   ├── Unauthorized        401  missing / invalid / expired token
  │   ├── Forbidden           403  authenticated but not allowed
  │   ├── NotFound            404
  │   ├── Conflict            409  already exists / wrong state
  │   ├── PayloadTooLarge     413
  │   ├── RateLimited         429  ``retry_after`` seconds (from Retry-After)
  │   └── Unavailable         502 / 503 / 504  a dependency is down
  ├── Unreachable                 the HTTP request never got an answer (DNS, refused, timeout)
  ├── RequestRejected(code, message, ref)  a WebSocket ``error`` frame answering one request
  └── ConnectionClosed(code, reason)      the WebSocket session ended for good (or a ping
                                          was cut by a disconnect)

REST errors keep the server's ``code`` string (``token_expired``, ``not_member``, ...) so
callers can branch on it without parsing messages.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from time import time


class ClientError(Exception):
    """Base of every exception the SDK raises on purpose."""


class ApiError(ClientError):
    """A REST call answered with an error status and envelope."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BadRequest(ApiError):
    """400: the request is malformed or a field is invalid."""


class Unauthorized(ApiError):
    """401: missing, invalid or expired credentials."""


class Forbidden(ApiError):
    """403: the caller may not do this."""


class NotFound(ApiError):
    """404: no such resource (or not visible to the caller)."""


class Conflict(ApiError):
    """409: the resource exists already or is in the wrong state."""


class PayloadTooLarge(ApiError):
    """413: the request body is larger than the server accepts."""


class RateLimited(ApiError):
    """429: too many requests; retry after ``retry_after`` seconds."""

    def __init__(self, status: int, code: str, message: str, retry_after: float) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class Unavailable(ApiError):
    """502/503/504: the service or one of its dependencies is unavailable."""


class Unreachable(ClientError):
    """The HTTP request got no answer (connection refused, DNS, timeout)."""


class RequestRejected(ClientError):
    """The gateway answered a WebSocket request (send, subscribe) with an ``error`` frame.

    ``retry_after`` (seconds) comes with ``slow_mode``: when the room accepts the
    next message from this user (docs/moderation.md); ``muted`` has none."""

    def __init__(
        self, code: str, message: str, ref: str | None = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after = retry_after


class SendUnconfirmed(RequestRejected):
    """A send whose ack was lost and whose first transmission is older than the resend
    window, in a room the session cannot check (not subscribed, or its resume was
    truncated): re-sending could store it twice, so it is not re-sent. It may or may
    not be stored; ``code`` is ``unconfirmed``, ``ref`` its client_id."""


class ConnectionClosed(ClientError):
    """The WebSocket session is over (fatal close code, ``close()``, or gave up reconnecting)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}

# Retry-After is missing or unparsable: wait one second, the server's own default.
DEFAULT_RETRY_AFTER = 1.0


def parse_retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return DEFAULT_RETRY_AFTER
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER


def api_error(status: int, code: str, message: str, retry_after: str | None = None) -> ApiError:
    """The typed exception for an HTTP error status."""
    if status == 429:
        return RateLimited(status, code, message, parse_retry_after(retry_after))
    cls = _BY_STATUS.get(status, ApiError)
    return cls(status, code, message)
