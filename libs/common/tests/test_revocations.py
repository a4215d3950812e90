"""The shared list of revoked sessions, against a real nats-server (the Debian 2.9 one
and, with ROOMCAST_NATS_SERVER, the current release): loaded at start, followed live,
closed for sessions while it cannot be loaded, and empty until auth creates the bucket."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from roomcast.common.errors import DependencyUnavailable, Unauthenticated
from roomcast.common.revocations import BUCKET, RevocationWatcher, revocation_value
from roomcast.testing.polling import eventually
from roomcast.testing.processes import NatsServer, free_port

# A revocation reaches a running watcher within this (the promise is 1 s end to end).
LIVE_DEADLINE_SECONDS = 1.0
# Loading the bucket at start on a loaded 2-core machine.
LOAD_DEADLINE_SECONDS = 10.0
# A watcher catching up after NATS came back: reconnect waits, then the watch resumes.
RESUME_DEADLINE_SECONDS = 15.0
# Access-token lifetime plus leeway, as auth creates the bucket.
BUCKET_TTL_SECONDS = 930.0
USER = "a" * 24


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def _bucket(nc: NatsClient) -> KeyValue:
    return await nc.jetstream().create_key_value(bucket=BUCKET, ttl=BUCKET_TTL_SECONDS, history=1)


def revoked_event(watcher: RevocationWatcher, session_id: str) -> asyncio.Event:
    """Set when ``session_id`` becomes revoked in ``watcher``."""
    event = asyncio.Event()

    def seen(sid: str, _user: str | None) -> None:
        if sid == session_id:
            event.set()

    watcher.on_revoked(seen)
    return event


async def _until_revoked(event: asyncio.Event, deadline: float) -> None:
    async with asyncio.timeout(deadline):
        await event.wait()


async def test_a_watcher_started_later_loads_existing_revocations(nc: NatsClient) -> None:
    kv = await _bucket(nc)
    await kv.put("old-session", revocation_value(USER, "logout"))
    watcher = RevocationWatcher()
    watcher.attach(nc)
    try:
        async with asyncio.timeout(LOAD_DEADLINE_SECONDS):
            await watcher.wait_loaded()
        with pytest.raises(Unauthenticated) as info:
            watcher.check("old-session")
        assert info.value.code == "session_revoked"
        watcher.check("live-session")  # others pass
        watcher.check(None)  # tokens without a session pass
    finally:
        await watcher.close()


async def test_a_running_watcher_learns_a_revocation_within_a_second(nc: NatsClient) -> None:
    kv = await _bucket(nc)
    closed: list[tuple[str, str | None]] = []
    watcher = RevocationWatcher()
    watcher.on_revoked(lambda sid, uid: closed.append((sid, uid)))
    watcher.attach(nc)
    try:
        async with asyncio.timeout(LOAD_DEADLINE_SECONDS):
            await watcher.wait_loaded()
        loop = asyncio.get_running_loop()
        learnt = revoked_event(watcher, "s-new")
        written = loop.time()
        await kv.put("s-new", revocation_value(USER, "refresh_reuse"))
        await _until_revoked(learnt, LIVE_DEADLINE_SECONDS)
        assert "s-new" in watcher
        assert loop.time() - written < LIVE_DEADLINE_SECONDS
        assert closed == [("s-new", USER)]
        # Written again (auth's retries): no second callback.
        await kv.put("s-new", revocation_value(USER, "refresh_reuse"))
        other = revoked_event(watcher, "s-other")
        await kv.put("s-other", revocation_value(USER, "logout"))
        await _until_revoked(other, LIVE_DEADLINE_SECONDS)
        assert closed == [("s-new", USER), ("s-other", USER)]
    finally:
        await watcher.close()


async def test_bucket_created_after_the_watcher_started(nc: NatsClient) -> None:
    watcher = RevocationWatcher()
    watcher.attach(nc)
    try:
        # No bucket: nothing was ever revoked here; the list is loaded and empty.
        async with asyncio.timeout(LOAD_DEADLINE_SECONDS):
            await watcher.wait_loaded()
        watcher.check("any")
        first = revoked_event(watcher, "s-first")
        kv = await _bucket(nc)
        await kv.put("s-first", revocation_value(USER, "logout"))
        # Bound within the retry interval, then loaded.
        await _until_revoked(first, LOAD_DEADLINE_SECONDS)
        with pytest.raises(Unauthenticated):
            watcher.check("s-first")
    finally:
        await watcher.close()


async def test_unreachable_nats_fails_closed_for_sessions_only() -> None:
    watcher = RevocationWatcher()
    watcher.start(f"nats://127.0.0.1:{free_port()}", name="roomcast-test-revocations")
    try:
        with pytest.raises(DependencyUnavailable):
            watcher.check("some-session")
        watcher.check(None)
        # An unrequired watcher (tools, tests without NATS) does not refuse.
        RevocationWatcher(required=False).check("some-session")
    finally:
        await watcher.close()


def test_entries_expire_with_the_tokens_of_their_session() -> None:
    now = [1000.0]
    watcher = RevocationWatcher(clock=lambda: now[0])
    watcher.add("s", USER)
    assert "s" in watcher
    now[0] += 86_400 + 61
    assert "s" not in watcher


async def test_the_watch_resumes_after_nats_restarts(tmp_path: Path) -> None:
    """kill -9 of NATS and a restart on the same port and store: a revocation written
    after the restart still reaches a watcher that loaded before it."""
    port = free_port()
    server = NatsServer(port, str(tmp_path))
    server.start()
    watcher = RevocationWatcher()
    watcher.start(server.url, name="roomcast-test-revocations")
    try:
        async with await nats.connect(server.url) as writer:
            await _bucket(writer)
        async with asyncio.timeout(LOAD_DEADLINE_SECONDS):
            await watcher.wait_loaded()
        server.kill()
        server.wait(10)
        server = NatsServer(port, str(tmp_path))
        server.start()
        after = revoked_event(watcher, "s-after-restart")
        async with await nats.connect(server.url) as writer:
            kv = await writer.jetstream().key_value(BUCKET)
            await kv.put("s-after-restart", revocation_value(USER, "logout"))
        # Reconnection (0.5 s waits) plus the ordered consumer's reset: a few seconds.
        await _until_revoked(after, RESUME_DEADLINE_SECONDS)
    finally:
        await watcher.close()
        server.stop()


async def test_nats_down_at_start_is_logged_then_loaded_once_nats_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The watcher's own retry loop sees the outage (a warning per attempt) instead of
    nats-py retrying the first connection out of sight, and loads once NATS is up."""
    caplog.set_level(logging.WARNING, logger="roomcast.common.revocations")
    port = free_port()
    watcher = RevocationWatcher()
    watcher.start(f"nats://127.0.0.1:{port}", name="roomcast-test-revocations")
    server: NatsServer | None = None
    try:
        await eventually(
            lambda: any(
                "revocations: NATS not reachable" in r.getMessage() for r in caplog.records
            ),
            "the watcher's warning about NATS being down",
            within=LOAD_DEADLINE_SECONDS,
        )
        with pytest.raises(DependencyUnavailable):
            watcher.check("some-session")
        server = NatsServer(port, str(tmp_path))
        server.start()
        async with asyncio.timeout(RESUME_DEADLINE_SECONDS):
            await watcher.wait_loaded()
        watcher.check("some-session")
    finally:
        await watcher.close()
        if server is not None:
            server.stop()
