"""Token edges on the socket: the same expiry rule as REST, and a clear answer to an
auth frame without a token (two real gateway processes, see conftest.py)."""

from __future__ import annotations

import time

import httpx
import pytest
from gateway_testkit import GatewayProc, OpenWs, make_user

from roomcast.common.tokens import LEEWAY_SECONDS, TokenSigner

pytestmark = pytest.mark.asyncio(loop_scope="session")

# How far past exp the test token is: inside the leeway, with a few seconds left, so the
# socket's life is observable and its close comes quickly.
PAST_EXP_SECONDS = LEEWAY_SECONDS - 6


async def test_gateway_token_past_exp_inside_leeway_works_on_socket_and_rest_alike(
    open_ws: OpenWs, cluster: list[GatewayProc], signer: TokenSigner
) -> None:
    gw = cluster[0]
    ttl = 60
    user = make_user(signer, ttl=ttl, now=time.time() - ttl - PAST_EXP_SECONDS)
    # REST accepts it (the gateway verifies room-route tokens itself: no 401).
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        listing = await http.get("/v1/rooms", headers={"authorization": f"Bearer {user.token}"})
    assert listing.status_code != 401, listing.text
    # So does a socket: ready, then it keeps answering, not an immediate 4001.
    client = await open_ws(gw.ws_url, user)
    await client.send_json({"type": "ping"})
    await client.expect_type("pong")
    assert client.closed is None
    # At exp + leeway both stop: the socket closes with token_expired / 4001 ...
    closed = await client.wait_closed(within=LEEWAY_SECONDS)
    assert closed.code == 4001
    assert client.frames[-1]["code"] == "token_expired"
    # ... and REST refuses the same token.
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        refused = await http.get("/v1/rooms", headers={"authorization": f"Bearer {user.token}"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_expired"


@pytest.mark.parametrize("frame", [{"type": "auth", "token": ""}, {"type": "auth"}])
async def test_gateway_auth_frame_without_token_says_missing_token(
    open_ws: OpenWs, cluster: list[GatewayProc], frame: dict[str, str]
) -> None:
    client = await open_ws(cluster[1].ws_url)
    await client.send_json(frame)
    closed = await client.wait_closed()
    assert closed.code == 4001
    assert "missing token" in closed.reason
    assert client.frames[-1]["code"] == "missing_token"


async def test_gateway_auth_frame_with_non_string_token_is_invalid_token(
    open_ws: OpenWs, cluster: list[GatewayProc]
) -> None:
    client = await open_ws(cluster[1].ws_url)
    await client.send_json({"type": "auth", "token": 42})
    closed = await client.wait_closed()
    assert closed.code == 4001
    assert client.frames[-1]["code"] == "invalid_token"
