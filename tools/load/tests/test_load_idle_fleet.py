"""The idle fleet against a whole stack on free ports (real nats-server, SecantusDB,
auth, rooms, history, two gateways): its sockets authenticate on the gateway they are
pinned to, from several source addresses; when one gateway restarts (SIGTERM, then a new
process on the same port) every socket of that gateway comes back to it with jittered
backoff, and the other gateway's sockets are untouched."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roomcast.load import wire
from roomcast.load.benchkit import BENCH_STACK_ENV
from roomcast.load.fleet import Fleet, spread, window_total
from roomcast.load.promtext import scrape_gateway
from roomcast.load.provision import Rest, provision_users
from roomcast.testing.stack import Stack, StackPorts

SOCKETS = 60
USERS = 6
SOURCE_IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Any]:
    s = Stack(tmp_path / "stack", StackPorts.free(), bcrypt_cost=4, extra_env=BENCH_STACK_ENV)
    s.start()
    try:
        yield s
    finally:
        s.stop()


async def _connections(urls: list[str]) -> list[int | None]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        return [(await scrape_gateway(client, u)).get("connections") for u in urls]


@pytest.mark.slow
async def test_a_restarted_gateways_sockets_all_come_back_to_it(stack: Any) -> None:
    rest = Rest(stack.gateway_urls)
    try:
        users = await provision_users(rest, USERS)
    finally:
        await rest.aclose()
    fleet = Fleet(
        [wire.ws_url(u) for u in stack.gateway_urls],
        spread(SOCKETS, 2, SOURCE_IPS, USERS),
        [u.token for u in users],
        workers=2,
        connect_rate=300,
    )
    fleet.start()
    try:
        half = SOCKETS // 2
        assert await fleet.wait(lambda f: f.live() == [half, half], 60) is not None
        # Authenticated sockets, as the gateways count them.
        assert await _connections(stack.gateway_urls) == [half, half]

        t_term = time.time()
        await asyncio.to_thread(stack.services["gateway-a"].stop)
        assert (await fleet.wait(lambda f: f.live()[0] == 0, 10)) is not None
        await asyncio.to_thread(stack.restart, "gateway-a")
        assert await fleet.wait(lambda f: f.live() == [half, half], 60) is not None
        t_back = time.time()
        assert await _connections(stack.gateway_urls) == [half, half]

        # Every socket of gateway A was told to go (1012) and tried again, at least once
        # each; gateway B's sockets never left.
        assert fleet.closes.get(1012) == half
        # The snapshots that showed them live carried their attempts and readies too.
        assert window_total(fleet.attempts, t_term, t_back + 1) >= half
        assert window_total(fleet.readies, t_term, t_back + 1) == half
        assert not any(k.startswith("frame:") for k in fleet.errors), fleet.examples
    finally:
        await fleet.stop()


async def test_a_connection_lost_before_the_upgrade_is_retried_with_backoff() -> None:
    """A server that accepts TCP and closes at once (a full accept queue, a process on
    its way down): each attempt fails and the socket tries again, with backoff."""
    accepted: list[float] = []

    def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        writer.transport.abort()

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fleet = Fleet(
        [f"ws://127.0.0.1:{port}/"], [(0, None, 0)], [""], workers=1, connect_rate=10, raw=True
    )
    fleet.start()
    try:
        took = await fleet.wait(lambda f: f.errors.get("connect:lost_before_upgrade", 0) >= 4, 30)
        assert took is not None, (fleet.errors, len(accepted))
        assert fleet.live() == [0]
        # Full jitter under caps of 0.25, 0.5 and 1 s: four attempts within 1.75 s (and slack).
        assert len(accepted) >= 4
        assert accepted[3] - accepted[0] < 5.0
    finally:
        await fleet.stop()
        server.close()
        await server.wait_closed()


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def test_an_upgrade_that_completes_after_its_attempt_timed_out_is_closed() -> None:
    """The first two connections are answered only after the client's connect timeout:
    the client tries again, and when those late upgrades complete it closes them, so
    the socket is counted (and held) once."""
    delayed: list[asyncio.StreamWriter] = []
    open_now: set[asyncio.StreamWriter] = set()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        if len(delayed) < 2:
            delayed.append(writer)
            await asyncio.sleep(1.5)
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        open_now.add(writer)
        try:
            while await reader.read(4096):
                pass
        finally:
            open_now.discard(writer)
            writer.close()

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fleet = Fleet(
        [f"ws://127.0.0.1:{port}/"],
        [(0, None, 0)],
        [""],
        workers=1,
        connect_rate=10,
        raw=True,
        connect_timeout=0.5,
    )
    fleet.start()
    try:
        assert await fleet.wait(lambda f: f.live() == [1], 30) is not None
        # Both late upgrades completed and were closed by the client.
        deadline = time.monotonic() + 10
        while len(delayed) < 2 or any(w in open_now for w in delayed):
            assert time.monotonic() < deadline, (len(delayed), len(open_now))
            await asyncio.sleep(0.05)
        assert fleet.errors.get("connect:timeout") == 2
        assert len(open_now) == 1
        # The next snapshot still counts the socket once.
        first = dict(fleet.latest)
        assert await fleet.wait(lambda f: f.latest != first, 5) is not None
        assert fleet.live() == [1]
    finally:
        await fleet.stop()
        server.close()
        await server.wait_closed()
