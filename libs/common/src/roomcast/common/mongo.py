"""MongoDB connection helpers (PyMongo's async API).

Durability lives here, in one place: every client that :func:`connect_mongo` makes (and
:func:`service_mongo_client`, which every service's process builds its client with)
writes with ``w="majority", j=True`` by default (:data:`DURABLE_WRITE_CONCERN`), so a
write that an acknowledgement depends on (a stored message before its JetStream ack, a
session before a login's 200, a membership before the rooms reply) survives a crash of
the database process and, on a replica set, a failover. SecantusDB honours ``j: true``
per write; a MongoDB replica set honours both. ``durable=False`` exists only for
deliberate experiments (``ROOMCAST_<SERVICE>_MONGO_DURABLE_WRITES=false``); see
docs/reliability.md for what it costs and what it risks.
"""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient, WriteConcern
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError

from roomcast.common.errors import DependencyUnavailable
from roomcast.common.settings import MongoSettings

# The exceptions that mean "MongoDB is unreachable", as opposed to a bad query.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (ConnectionFailure, ServerSelectionTimeoutError)


# Journaled on the primary and acknowledged by a majority of the replica set: the write
# concern under which an acknowledged write survives a crash or an election.
DURABLE_WRITE_CONCERN = WriteConcern(w="majority", j=True)
# The same, spelled as client options (the client takes ``journal``, not ``j``).
_DURABLE_CLIENT_OPTIONS: dict[str, Any] = {"w": "majority", "journal": True}


def connect_mongo(
    url: str, *, timeout_ms: int, app_name: str, durable: bool = True
) -> AsyncMongoClient[dict[str, Any]]:
    """Create a client; no I/O happens until the first operation. Writes are durable
    (:data:`DURABLE_WRITE_CONCERN`) unless ``durable`` is False."""
    concern = _DURABLE_CLIENT_OPTIONS if durable else {}
    return AsyncMongoClient(
        url,
        appname=app_name,
        **concern,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=timeout_ms * 2,
        tz_aware=True,
    )


def service_mongo_client(
    settings: MongoSettings, *, app_name: str
) -> AsyncMongoClient[dict[str, Any]]:
    """A service's MongoDB client, from its settings: every write the service answers
    for (auth's sessions, rooms' memberships, history's messages, the notifier's
    inbox) is journaled and majority-acknowledged before the reply, through this
    client-wide write concern (no service overrides it per collection or operation),
    unless ``mongo_durable_writes`` is switched off."""
    return connect_mongo(
        settings.mongo_url,
        timeout_ms=settings.mongo_timeout_ms,
        app_name=app_name,
        durable=settings.mongo_durable_writes,
    )


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> None:
    """Raise :class:`DependencyUnavailable` unless MongoDB answers."""
    try:
        await client.admin.command("ping")
    except UNAVAILABLE_ERRORS as exc:
        raise DependencyUnavailable("MongoDB is unavailable") from exc
