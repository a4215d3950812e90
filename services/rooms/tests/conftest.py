"""Fixtures of the rooms tests: the real grpc.aio server on a free port, backed by a
real SecantusDB database and a real nats-server, reached through a real channel."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from roomcast.common.mongo import connect_mongo
from roomcast.common.natsconn import connect_nats
from roomcast.common.tokens import TokenVerifier
from roomcast.rooms.server import start_server
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc as pb_grpc

# --import-mode=importlib does not put test directories on sys.path; the helpers
# module (unique name) is imported from here.
sys.path.insert(0, str(Path(__file__).parent))

from rooms_harness import EventSink, IssueToken, Rooms, rooms_settings


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def rooms(
    mongo_url: str,
    mongo_db_name: str,
    nats_url: str,
    verifier: TokenVerifier,
    issue_token: IssueToken,
    settings_overrides: dict[str, Any],
) -> AsyncIterator[Rooms]:
    settings = rooms_settings(mongo_url, mongo_db_name, nats_url, **settings_overrides)
    mongo = connect_mongo(mongo_url, timeout_ms=settings.mongo_timeout_ms, app_name="rooms-test")
    nc = await connect_nats(nats_url, name="rooms-test")
    running = await start_server(
        settings, verifier=verifier, mongo_client=mongo, nats_client=nc, port=0
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Rooms(running, channel, pb_grpc.RoomsStub(channel), issue_token, settings, nc)
    finally:
        await channel.close()
        await running.stop(1.0)
        await nc.close()
        await mongo.close()


@pytest.fixture
async def events(nats_url: str) -> AsyncIterator[EventSink]:
    sink = EventSink()
    nc = await nats.connect(nats_url)
    await nc.subscribe("chat.events.room.>", cb=sink.handler)
    await nc.flush()
    try:
        yield sink
    finally:
        await nc.close()
