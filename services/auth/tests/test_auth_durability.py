"""Every write behind an auth 2xx (a registration, a login's session and refresh token,
a refresh rotation, a logout's revocation) is journaled and majority-acknowledged before
the answer: observed on the wire (PyMongo command monitoring) against real SecantusDB,
with the MongoDB client built exactly as the service builds it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import monitoring

from roomcast.auth.__main__ import mongo_client
from roomcast.auth.app import auth_service, create_app
from roomcast.auth.events import NullPublisher
from roomcast.auth.settings import Settings
from roomcast.common.tokens import TokenSigner

WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})
# What the wire must carry: journaled on the primary, acknowledged by a majority.
DURABLE = {"w": "majority", "j": True}
PASSWORD = "correct horse battery staple"


class WriteRecorder(monitoring.CommandListener):
    """Write commands sent to one database (with the collection they write), and any
    write-concern error in the replies."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.active = True
        self.writes: list[tuple[str, str, Any]] = []
        self.concern_errors: list[Any] = []
        self._ids: set[int] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        ours = self.active and event.database_name == self.database
        if ours and event.command_name in WRITE_COMMANDS:
            collection = str(event.command.get(event.command_name))
            self.writes.append((event.command_name, collection, event.command.get("writeConcern")))
            self._ids.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self._ids and "writeConcernError" in event.reply:
            self.concern_errors.append(event.reply["writeConcernError"])

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def recorder(mongo_db_name: str) -> Iterator[WriteRecorder]:
    # PyMongo listeners are process-wide and cannot be removed: it goes quiet afterwards.
    listener = WriteRecorder(mongo_db_name)
    monitoring.register(listener)
    yield listener
    listener.active = False


async def test_register_login_refresh_and_logout_writes_are_durable(
    mongo_url: str, mongo_db_name: str, signer: TokenSigner, recorder: WriteRecorder
) -> None:
    settings = Settings(mongo_url=mongo_url, mongo_db=mongo_db_name, bcrypt_cost=4)
    assert settings.mongo_durable_writes  # on by default
    mongo = mongo_client(settings)
    app = create_app(settings, mongo, signer, NullPublisher())
    service = auth_service(app)
    await service.ensure_indexes()
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://auth.test") as client:
            recorder.writes.clear()
            body = {"username": "durable", "password": PASSWORD}
            assert (await client.post("/v1/auth/register", json=body)).status_code == 201
            registered = list(recorder.writes)
            login = await client.post("/v1/auth/login", json=body)
            assert login.status_code == 200
            refreshed = await client.post(
                "/v1/auth/refresh", json={"refresh_token": login.json()["refresh_token"]}
            )
            assert refreshed.status_code == 200
            logout = await client.post(
                "/v1/auth/logout", json={"refresh_token": refreshed.json()["refresh_token"]}
            )
            assert logout.status_code == 204
    finally:
        service.hasher.close()
        await mongo.close()

    written = {(command, collection) for command, collection, _ in recorder.writes}
    # Each step's writes were seen: the user; the session and its first refresh token;
    # the rotation (spend, successor, session touch); the revocation.
    assert ("insert", "users") in {(c, n) for c, n, _ in registered}
    assert {
        ("insert", "sessions"),
        ("insert", "refresh_tokens"),
        ("findAndModify", "refresh_tokens"),
        ("update", "sessions"),
        ("findAndModify", "sessions"),
    } <= written
    for command, collection, concern in recorder.writes:
        assert concern == DURABLE, (command, collection, concern)
    assert recorder.concern_errors == []
