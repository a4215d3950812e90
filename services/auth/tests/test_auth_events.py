"""session_revoked events on a real nats-server: after logout and after refresh reuse,
and best effort when NATS is down (the request still succeeds; the publisher connects
in the background once NATS appears)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import nats
import pytest

from roomcast.auth.events import NatsEventPublisher
from roomcast.auth.sessions import Revocation
from roomcast.common.revocations import RevocationWatcher
from roomcast.common.subjects import user_events_subject
from roomcast.testing.processes import NatsServer, free_port

if TYPE_CHECKING:
    from conftest import AuthHarness, MakeAuth

pytestmark = pytest.mark.nats

# Generous for a loaded 2-core machine; the wait ends as soon as the event arrives.
EVENT_TIMEOUT_SECONDS = 10.0


@pytest.fixture
async def publisher(nats_url: str) -> AsyncIterator[NatsEventPublisher]:
    pub = NatsEventPublisher(nats_url)
    pub.start()
    yield pub
    await pub.close()


async def _wait_connected(pub: NatsEventPublisher) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENT_TIMEOUT_SECONDS
    while not pub.connected:
        assert loop.time() < deadline, "the publisher never connected"
        await asyncio.sleep(0.01)


async def _subscribe(url: str, subject: str) -> tuple[Any, asyncio.Queue[Any]]:
    nc = await nats.connect(url)
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(msg: Any) -> None:
        await queue.put(msg)

    await nc.subscribe(subject, cb=handler)
    await nc.flush()
    return nc, queue


async def test_logout_publishes_session_revoked(
    make_auth: MakeAuth, publisher: NatsEventPublisher, nats_url: str
) -> None:
    auth: AuthHarness = await make_auth(publisher=publisher)
    user = await auth.register("eve")
    pair = await auth.login("eve")
    sid = (await (await auth.verifier()).verify(pair["access_token"])).session_id
    await _wait_connected(publisher)
    nc, queue = await _subscribe(nats_url, user_events_subject(user["id"]))
    try:
        response = await auth.client.post(
            "/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}
        )
        assert response.status_code == 204
        msg = await asyncio.wait_for(queue.get(), EVENT_TIMEOUT_SECONDS)
        assert msg.subject == f"chat.events.user.{user['id']}"
        assert json.loads(msg.data) == {
            "type": "session_revoked",
            "user_id": user["id"],
            "session_id": sid,
            "reason": "logout",
        }
        # A second logout of the same session revokes nothing and announces nothing.
        again = await auth.client.post(
            "/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}
        )
        assert again.status_code == 204
        await nc.flush()
        probe = await auth.login("eve")
        await auth.client.post("/v1/auth/logout", json={"refresh_token": probe["refresh_token"]})
        nxt = await asyncio.wait_for(queue.get(), EVENT_TIMEOUT_SECONDS)
        assert json.loads(nxt.data)["session_id"] != sid
    finally:
        await nc.close()


async def test_refresh_reuse_publishes_session_revoked(
    make_auth: MakeAuth, publisher: NatsEventPublisher, nats_url: str
) -> None:
    auth: AuthHarness = await make_auth(publisher=publisher)
    user = await auth.register("mallory")
    pair = await auth.login("mallory")
    sid = (await (await auth.verifier()).verify(pair["access_token"])).session_id
    await _wait_connected(publisher)
    nc, queue = await _subscribe(nats_url, user_events_subject(user["id"]))
    try:
        first = await auth.client.post(
            "/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert first.status_code == 200
        replay = await auth.client.post(
            "/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        auth.expect_error(replay, 401, "refresh_token_reused")
        msg = await asyncio.wait_for(queue.get(), EVENT_TIMEOUT_SECONDS)
        assert json.loads(msg.data) == {
            "type": "session_revoked",
            "user_id": user["id"],
            "session_id": sid,
            "reason": "refresh_reuse",
        }
    finally:
        await nc.close()


async def test_nats_down_at_start_then_up(make_auth: MakeAuth) -> None:
    port = free_port()
    publisher = NatsEventPublisher(f"nats://127.0.0.1:{port}")
    publisher.start()  # returns at once although nothing listens
    server: NatsServer | None = None
    try:
        auth: AuthHarness = await make_auth(publisher=publisher)
        user = await auth.register("patient")
        pair = await auth.login("patient")
        # Logout succeeds without NATS; the event is dropped (and counted).
        response = await auth.client.post(
            "/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}
        )
        assert response.status_code == 204
        assert not publisher.connected
        metrics = (await auth.client.get("/metrics")).text
        assert 'roomcast_auth_events_published_total{result="not_connected"}' in metrics

        server = NatsServer(port=port)
        server.start()
        await _wait_connected(publisher)
        nc, queue = await _subscribe(server.url, user_events_subject(user["id"]))
        try:
            pair = await auth.login("patient")
            await auth.client.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
            msg = await asyncio.wait_for(queue.get(), EVENT_TIMEOUT_SECONDS)
            assert json.loads(msg.data)["reason"] == "logout"
        finally:
            await nc.close()
    finally:
        await publisher.close()
        if server is not None:
            server.cleanup()


async def test_revocations_reach_the_bucket_once_nats_is_back(make_auth: MakeAuth) -> None:
    """A logout while NATS is down is written to ROOMCAST_REVOKED once NATS is back (the
    publisher retries), and so is a revocation that only MongoDB knows (auth crashed
    between its two writes): it is rewritten from MongoDB at the connection."""
    port = free_port()
    publisher = NatsEventPublisher(f"nats://127.0.0.1:{port}")
    server: NatsServer | None = None
    watcher = RevocationWatcher()
    try:
        auth: AuthHarness = await make_auth(publisher=publisher)
        await auth.register("outage")
        verifier = await auth.verifier()
        logged_out = await auth.login("outage")
        only_in_mongo = await auth.login("outage")
        sessions = auth.service.sessions

        async def backlog() -> list[Revocation]:
            return await sessions.revoked_since(sessions.now() - timedelta(hours=1), limit=100)

        publisher.start(backlog=backlog)
        response = await auth.client.post(
            "/v1/auth/logout", json={"refresh_token": logged_out["refresh_token"]}
        )
        assert response.status_code == 204  # NATS down: the logout still succeeds
        assert publisher.pending == 1
        sid_out = (await verifier.verify(logged_out["access_token"])).session_id
        sid_mongo = (await verifier.verify(only_in_mongo["access_token"])).session_id
        assert sid_out is not None
        assert sid_mongo is not None
        assert await sessions.revoke(sid_mongo, reason="logout") is not None

        server = NatsServer(port=port)
        server.start()
        arrived = {sid_out: asyncio.Event(), sid_mongo: asyncio.Event()}

        def seen(session_id: str, _user: str | None) -> None:
            if session_id in arrived:
                arrived[session_id].set()

        watcher.on_revoked(seen)
        watcher.start(server.url, name="roomcast-test-revocations")
        async with asyncio.timeout(EVENT_TIMEOUT_SECONDS):
            for event in arrived.values():
                await event.wait()
        assert publisher.pending == 0
    finally:
        await watcher.close()
        await publisher.close()
        if server is not None:
            server.cleanup()
