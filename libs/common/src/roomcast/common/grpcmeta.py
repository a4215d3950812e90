"""How a user's access token travels in gRPC metadata."""

from __future__ import annotations

AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "Bearer "


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION_KEY, BEARER_PREFIX + token),)


def token_from_metadata(metadata: object) -> str | None:
    """Extract the bearer token from invocation metadata, or None."""
    if not metadata:
        return None
    for item in metadata:  # type: ignore[attr-defined]
        key, value = item[0], item[1]
        if key == AUTHORIZATION_KEY and isinstance(value, str) and value.startswith(BEARER_PREFIX):
            return value[len(BEARER_PREFIX) :]
    return None
