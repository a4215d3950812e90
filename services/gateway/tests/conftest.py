"""Fixtures of the gateway tests.

The expensive pieces are shared by the whole session (their own event loop, so the
fake rooms gRPC server keeps serving between tests): one nats-server, the JWKS over
HTTP, the fake rooms service and a cluster of two gateway processes. Rooms and users
are fresh ids in every test, so tests do not see each other's traffic. Tests that kill,
drain or reconfigure a gateway start their own processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from roomcast.common.tokens import TokenSigner, TokenVerifier
from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.processes import MongoServer, NatsServer

# The fake rooms gRPC server lives in this process, which also starts gateway
# processes: gRPC's core logs a line per fork at INFO. Errors only.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# --import-mode=importlib does not put test directories on sys.path; the helpers
# module (unique name) is imported from here.
sys.path.insert(0, str(Path(__file__).parent))

from gateway_testkit import (
    TEST_AUDIENCE,
    TEST_ISSUER,
    GatewayProc,
    OpenWs,
    Spawner,
    User,
    WsClient,
    base_env,
)
from test_gateway_rest_kit import Gateway as RestGateway
from test_gateway_rest_kit import RestStack, gateway_opener


@pytest.fixture(scope="session")
def gw_nats() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def gw_jwks(signer: TokenSigner) -> Iterator[JwksServer]:
    server = JwksServer(signer.jwks())
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def gw_rooms(signer: TokenSigner) -> AsyncIterator[FakeRooms]:
    verifier = TokenVerifier.from_jwks(signer.jwks(), issuer=TEST_ISSUER, audience=TEST_AUDIENCE)
    rooms = FakeRooms(verifier)
    await rooms.start()
    yield rooms
    await rooms.stop()


@pytest.fixture(scope="session")
def gw_env(gw_nats: NatsServer, gw_jwks: JwksServer, gw_rooms: FakeRooms) -> dict[str, str]:
    """Environment of a gateway on the shared NATS, JWKS and rooms."""
    return base_env(gw_nats.url, gw_jwks.url, gw_rooms.target)


# Settings of the shared cluster: generous rate limits (the concurrency tests send
# hundreds of messages quickly), a short auth timeout (the no-auth test waits for it),
# and an Origin allowlist (the Origin test).
SHARED_SETTINGS = {
    "ROOMCAST_GATEWAY_RATE_LIMIT_PER_SECOND": "2000",
    "ROOMCAST_GATEWAY_RATE_LIMIT_BURST": "2000",
    "ROOMCAST_GATEWAY_AUTH_TIMEOUT_SECONDS": "1",
    "ROOMCAST_GATEWAY_ALLOWED_ORIGINS": "https://app.example, https://other.example",
    "ROOMCAST_GATEWAY_MEMBERSHIP_NEGATIVE_TTL_SECONDS": "0",
}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cluster(gw_env: dict[str, str]) -> AsyncIterator[list[GatewayProc]]:
    """Two gateway processes sharing NATS and rooms."""
    gateways = [GatewayProc({**gw_env, **SHARED_SETTINGS}, name=f"gateway-{i}") for i in range(2)]
    try:
        for gw in gateways:
            await gw.astart()
        yield gateways
    finally:
        for gw in gateways:
            await gw.astop()


@pytest_asyncio.fixture(loop_scope="session")
async def spawn() -> AsyncIterator[Spawner]:
    """Start gateway processes for this test; all are stopped at teardown, also one
    that failed to become ready or a test that failed half way."""
    spawner = Spawner()
    yield spawner
    await spawner.stop_all()


@pytest_asyncio.fixture(loop_scope="session")
async def nc(gw_nats: NatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(gw_nats.url)
    yield client
    await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def open_ws() -> AsyncIterator[OpenWs]:
    """Open WebSocket clients for this test; every one is closed at teardown."""
    opened: list[WsClient] = []

    async def open_client(url: str, user: User | None = None, **kwargs: Any) -> WsClient:
        client = await WsClient.open(url, user, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


# --- the REST edge (test_gateway_rest_*.py; helpers in test_gateway_rest_kit.py) ------


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, mongo_server: MongoServer, signing_key_pem: bytes
) -> Iterator[RestStack]:
    """The real auth and rooms processes of one REST test module, and history when the
    module sets ``REST_STACK_HISTORY = True`` (a module may define its own ``stack``)."""
    running = RestStack(mongo_server.url, signing_key_pem)
    try:
        yield running.start(
            history=getattr(request.module, "REST_STACK_HISTORY", False),
            notifier=getattr(request.module, "REST_STACK_NOTIFIER", False),
        )
    finally:
        running.stop()


@pytest.fixture
async def gw(stack: RestStack) -> AsyncIterator[RestGateway]:
    """A fresh gateway REST app on the module's ``stack``, with an httpx client."""
    async with gateway_opener(stack)() as gateway:
        yield gateway
