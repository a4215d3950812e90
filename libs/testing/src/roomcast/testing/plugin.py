"""pytest fixtures that start real servers. Loaded for every test run (``-p``).

- ``mongo_server`` (session): one SecantusDB; each test gets its own database through
  ``mongo_db_name``, dropped afterwards.
- ``nats_server`` (function): a fresh nats-server with JetStream per test. It starts in
  tens of milliseconds, and a fresh one isolates stream configuration completely.
- ``restartable_mongo`` (function): a private SecantusDB that a test may stop and start.
- ``signer`` / ``verifier`` / ``issue_token``: Ed25519 tokens like auth's.
- ``jwks_server``: the signer's JWKS over HTTP; ``fake_rooms``: membership over real gRPC.
"""

from __future__ import annotations

import os

# Tests fork servers (nats-server, SecantusDB, services) while gRPC servers run in this
# process; gRPC's fork handlers then abort children at random. Set before grpc loads.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from roomcast.common.tokens import (
    TokenSigner,
    TokenVerifier,
    generate_private_key_pem,
    load_private_key,
)
from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.processes import (
    MongoServer,
    NatsServer,
    nats_server_binary,
    nats_server_version,
)

TEST_ISSUER = "roomcast-auth"
TEST_AUDIENCE = "roomcast"


# Tests that use any of these fixtures talk to a real nats-server: they carry the
# ``nats`` marker, so CI can run exactly them again against another nats-server release.
NATS_FIXTURES = frozenset({"nats_server", "nats_url", "stack", "e2e_stack"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NATS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.nats)


def pytest_report_header(config: pytest.Config) -> str:
    try:
        binary = nats_server_binary()
        return f"nats-server under test: {binary} ({nats_server_version(binary)})"
    except RuntimeError as exc:
        return str(exc)


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    server = MongoServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def mongo_url(mongo_server: MongoServer) -> str:
    return mongo_server.url


@pytest.fixture
def mongo_db_name(mongo_server: MongoServer) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(
        mongo_server.url, serverSelectionTimeoutMS=2000
    )
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture
def restartable_mongo() -> Iterator[MongoServer]:
    server = MongoServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def signing_key_pem() -> bytes:
    return generate_private_key_pem()


@pytest.fixture(scope="session")
def signer(signing_key_pem: bytes) -> TokenSigner:
    return TokenSigner(
        load_private_key(signing_key_pem),
        issuer=TEST_ISSUER,
        audience=TEST_AUDIENCE,
        access_ttl_seconds=900,
    )


@pytest.fixture
def verifier(signer: TokenSigner) -> TokenVerifier:
    return TokenVerifier.from_jwks(signer.jwks(), issuer=TEST_ISSUER, audience=TEST_AUDIENCE)


IssueToken = Callable[..., str]


@pytest.fixture
def issue_token(signer: TokenSigner) -> IssueToken:
    """``issue_token(user_id=None, username=None, roles=(), ttl_seconds=None,
    session_id=None)`` → token.
    A missing user id gets a fresh ObjectId-shaped one."""

    def issue(
        user_id: str | None = None,
        username: str | None = None,
        roles: tuple[str, ...] = (),
        ttl_seconds: int | None = None,
        session_id: str | None = None,
    ) -> str:
        uid = user_id or uuid.uuid4().hex[:24]
        token, _ = signer.issue_access(
            user_id=uid,
            username=username or f"u{uid[:8]}",
            display_name=username or f"User {uid[:6]}",
            roles=roles,
            ttl_seconds=ttl_seconds,
            session_id=session_id,
        )
        return token

    return issue


@pytest.fixture
def jwks_server(signer: TokenSigner) -> Iterator[JwksServer]:
    """auth's JWKS endpoint for the test signer, over real HTTP."""
    server = JwksServer(signer.jwks())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def fake_rooms(verifier: TokenVerifier) -> AsyncIterator[FakeRooms]:
    """A real gRPC server with an in-memory membership table (see roomcast.testing.fakes)."""
    rooms = FakeRooms(verifier)
    await rooms.start()
    yield rooms
    await rooms.stop()
