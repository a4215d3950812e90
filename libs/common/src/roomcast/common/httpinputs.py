"""Reading a request's inputs the same way in every HTTP service: the bearer token, an
integer query parameter, a JSON object body, and a JSON response.

Each service raises its own error (its ``errors.py`` names the code its clients see),
so these take the error to raise instead of choosing one:

    token = bearer_token(request)          # None: no "Bearer <token>" header
    limit = int_query_param(request, "limit", low=1, high=100, error=InvalidPageParameter)
    body = await json_object_body(request, error=InvalidBody)
    return json_response({"items": items})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

# Longest Authorization header considered: an access token is well under 1 KiB, and
# the verifier refuses anything over 4 KiB anyway; this avoids even decoding more.
MAX_AUTHORIZATION_LENGTH = 4096
# Digits accepted in a numeric parameter: int64, the widest we store, has 19.
MAX_NUMBER_CHARS = 20


def bearer_token(request: Request) -> str | None:
    """The request's bearer token, or None when there is none (or the header is longer
    than any token could be)."""
    header = request.headers.get("authorization", "")
    if len(header) > MAX_AUTHORIZATION_LENGTH:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def int_query_param(
    request: Request, name: str, *, low: int, high: int, error: Callable[[str], Exception]
) -> int | None:
    """Query parameter ``name`` as an integer in ``[low, high]``, or None when absent.
    Given twice, not plain ASCII digits, too long or out of range: ``error(message)``."""
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise error(f"{name}: give it once")
    raw = values[0]
    if not (0 < len(raw) <= MAX_NUMBER_CHARS and raw.isascii() and raw.isdigit()):
        raise error(f"{name}: must be an integer from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise error(f"{name}: must be an integer from {low} to {high}")
    return value


async def json_object_body(
    request: Request, *, error: Callable[[str], Exception]
) -> dict[str, Any]:
    """The body as a JSON object, or ``error(message)``. The size limit is the app's
    (``create_service_app(max_body_bytes=...)``), enforced before this reads it."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise error("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise error("the body must be a JSON object")
    return body


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")
