"""Socket caps (socketcaps.py) on a real gateway process over real sockets: one user, or
one address's unauthenticated sockets, cannot take every socket of a gateway; behind a
trusted proxy each client is capped on its own address, not the proxy's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from gateway_testkit import WAIT, OpenWs, Spawner, WsClient, make_user
from websockets.asyncio.client import connect

from roomcast.common.tokens import TokenSigner

pytestmark = pytest.mark.asyncio(loop_scope="session")

RATE_LIMITED = 4008

OpenFrom = Callable[[str, str], Awaitable[WsClient]]


@pytest_asyncio.fixture(loop_scope="session")
async def open_from() -> AsyncIterator[OpenFrom]:
    """open_from(url, forwarded_for): a WebSocket whose handshake carries that
    X-Forwarded-For, as a proxy in front of the gateway would send it."""
    opened: list[WsClient] = []

    async def open_client(url: str, forwarded_for: str) -> WsClient:
        ws = await connect(
            url, additional_headers={"X-Forwarded-For": forwarded_for}, open_timeout=WAIT
        )
        client = WsClient(ws)
        client._reader = asyncio.create_task(client._read())
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


async def assert_refused(client: WsClient, limit: str) -> None:
    closed = await client.wait_closed()
    assert closed.code == RATE_LIMITED
    assert f"too many {limit}" in closed.reason
    assert [f["code"] for f in client.frames if f.get("type") == "error"] == ["too_many_sockets"]


async def test_one_user_cannot_hold_more_than_its_sockets(
    gw_env: dict[str, str], signer: TokenSigner, open_ws: OpenWs, spawn: Spawner
) -> None:
    gw = await spawn({**gw_env, "ROOMCAST_GATEWAY_MAX_SOCKETS_PER_USER": "2"}, "gw-user-cap")
    alice, bob = make_user(signer), make_user(signer)
    first = await open_ws(gw.ws_url, alice)
    await open_ws(gw.ws_url, alice)

    third = await open_ws(gw.ws_url)
    await third.send_json({"type": "auth", "token": alice.token})
    await assert_refused(third, "sockets for this user")
    assert not [f for f in third.frames if f.get("type") == "ready"]
    # another user is not affected, and alice's two sockets stay open
    await open_ws(gw.ws_url, bob)
    assert first.closed is None
    assert await gw.metric("roomcast_gateway_sockets_refused_total", 'limit="user"') == 1

    # a closed socket frees its slot (released when the gateway sees the close)
    await first.close()
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        again = await open_ws(gw.ws_url)
        await again.send_json({"type": "auth", "token": alice.token})
        frame = await again.expect(lambda f: f.get("type") in ("ready", "error"))
        if frame["type"] == "ready":
            break
        assert asyncio.get_running_loop().time() < deadline, "the closed socket's slot stays taken"
        await again.wait_closed()


async def test_unauthenticated_sockets_are_capped_per_address(
    gw_env: dict[str, str], signer: TokenSigner, open_ws: OpenWs, spawn: Spawner
) -> None:
    env = {**gw_env, "ROOMCAST_GATEWAY_MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS": "2"}
    gw = await spawn(env, "gw-address-cap")
    first = await open_ws(gw.ws_url)
    second = await open_ws(gw.ws_url)

    await assert_refused(await open_ws(gw.ws_url), "unauthenticated sockets from this address")
    assert await gw.metric("roomcast_gateway_sockets_refused_total", 'limit="address"') == 1

    # an authenticated socket counts against its user, not the address: a slot frees up
    assert second.closed is None
    await first.auth(make_user(signer))
    await open_ws(gw.ws_url, make_user(signer))
    await open_ws(gw.ws_url, make_user(signer))
    await second.auth(make_user(signer))
    assert first.closed is None


async def test_behind_a_trusted_proxy_each_client_has_its_own_cap(
    gw_env: dict[str, str], open_from: OpenFrom, spawn: Spawner
) -> None:
    env = {
        **gw_env,
        "ROOMCAST_GATEWAY_MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS": "1",
        "ROOMCAST_GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    gw = await spawn(env, "gw-proxied-cap")
    # two clients behind the proxy: each has its own address and its own slot
    one = await open_from(gw.ws_url, "203.0.113.1")
    two = await open_from(gw.ws_url, "203.0.113.2")
    # the proxy appends the real client to whatever the client claimed: the spoofed
    # left-hand address does not give the same client a second slot
    await assert_refused(
        await open_from(gw.ws_url, "198.51.100.77, 203.0.113.1"),
        "unauthenticated sockets from this address",
    )
    assert one.closed is None
    assert two.closed is None


async def test_an_untrusted_peer_cannot_pick_its_address(
    gw_env: dict[str, str], open_from: OpenFrom, spawn: Spawner
) -> None:
    env = {**gw_env, "ROOMCAST_GATEWAY_MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS": "1"}
    gw = await spawn(env, "gw-untrusted-cap")
    await open_from(gw.ws_url, "203.0.113.1")
    # a client's own X-Forwarded-For is ignored: it is still the same address
    await assert_refused(
        await open_from(gw.ws_url, "203.0.113.2"), "unauthenticated sockets from this address"
    )
