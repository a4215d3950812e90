"""OpenAPI helpers of the REST edge: the error responses each route declares."""

from __future__ import annotations

from typing import Any

from roomcast.gateway.rest.models import ErrorEnvelope

_DESCRIPTIONS = {
    400: "invalid request: malformed JSON, unknown field, wrong type, out-of-range value",
    401: "missing, malformed or expired access token (code token_expired: refresh)",
    403: "authenticated but not allowed (your role in the room is too low)",
    404: "no such resource, or not visible to you (private rooms look missing)",
    409: "conflict with the current state (taken name, owner must transfer...)",
    413: "request body larger than the gateway accepts",
    429: "rate limited: retry after the Retry-After header's seconds",
    503: "a service behind the gateway is down or too slow; retry",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the error envelope under each status."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorEnvelope, "description": _DESCRIPTIONS[status]}
        if status == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before retrying",
                    "schema": {"type": "integer"},
                }
            }
        responses[status] = entry
    return responses
