"""Every write behind an auth 2xx (a registration, a login's session and refresh token,
a refresh rotation, a logout's revocation) is journaled and majority-acknowledged before
the answer: observed on the wire (PyMongo command monitoring) against real SecantusDB,
with the MongoDB client built exactly as the service builds it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from roomcast.auth.app import auth_service, create_app
from roomcast.auth.events import NullPublisher
from roomcast.auth.settings import Settings
from roomcast.common.mongo import service_mongo_client
from roomcast.common.tokens import TokenSigner
from roomcast.testing.mongowire import DURABLE, WriteRecorder, recording_writes

PASSWORD = "correct horse battery staple"


@pytest.fixture
def recorder(mongo_db_name: str) -> Iterator[WriteRecorder]:
    with recording_writes(mongo_db_name) as listener:
        yield listener


async def test_register_login_refresh_and_logout_writes_are_durable(
    mongo_url: str, mongo_db_name: str, signer: TokenSigner, recorder: WriteRecorder
) -> None:
    settings = Settings(mongo_url=mongo_url, mongo_db=mongo_db_name, bcrypt_cost=4)
    assert settings.mongo_durable_writes  # on by default
    mongo = service_mongo_client(settings, app_name="roomcast-auth")
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
