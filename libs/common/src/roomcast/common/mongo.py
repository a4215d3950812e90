"""MongoDB connection helpers (PyMongo's async API)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError

from roomcast.common.errors import DependencyUnavailable

# The exceptions that mean "MongoDB is unreachable", as opposed to a bad query.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (ConnectionFailure, ServerSelectionTimeoutError)


def connect_mongo(url: str, *, timeout_ms: int, app_name: str) -> AsyncMongoClient[dict[str, Any]]:
    """Create a client; no I/O happens until the first operation."""
    return AsyncMongoClient(
        url,
        appname=app_name,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=timeout_ms * 2,
        tz_aware=True,
    )


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> None:
    """Raise :class:`DependencyUnavailable` unless MongoDB answers."""
    try:
        await client.admin.command("ping")
    except UNAVAILABLE_ERRORS as exc:
        raise DependencyUnavailable("MongoDB is unavailable") from exc
