"""A logged-out session's access token stops working everywhere within a second: the
gateway's REST (both replicas), rooms over gRPC, history's REST and auth's
``/v1/users/me``, and also on a gateway and a history started after the logout (they
load the revoked sessions from NATS at start). Real processes, public contract only."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from e2e_helpers import PASSWORD

from roomcast.common.grpcmeta import bearer_metadata
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from roomcast.testing.processes import ServiceProcess, free_port
from roomcast.testing.stack import Stack

# The promise: every path refuses a revoked session's token this soon after the logout.
REVOCATION_DEADLINE_SECONDS = 1.0

Check = Callable[[str], Awaitable[int]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _session(gateway: str) -> tuple[dict[str, Any], str]:
    """A new user's login (via the gateway's relay) and a room they own."""
    username = f"rv{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        registered = await client.post(
            "/v1/auth/register", json={"username": username, "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        login = await client.post(
            "/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        pair = login.json()
        created = await client.post(
            "/v1/rooms",
            json={"name": "revocation", "visibility": "public"},
            headers=bearer(pair["access_token"]),
        )
        assert created.status_code == 201, created.text
        return pair, created.json()["room"]["id"]


def _http_check(url: str) -> Check:
    async def check(token: str) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(url, headers=bearer(token))).status_code

    return check


def _grpc_check(target: str, room_id: str) -> Check:
    async def check(token: str) -> int:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = rooms_pb2_grpc.RoomsStub(channel)
            try:
                await stub.GetRoom(
                    rooms_pb2.GetRoomRequest(room_id=room_id), metadata=bearer_metadata(token)
                )
            except grpc.aio.AioRpcError as exc:
                return 401 if exc.code() == grpc.StatusCode.UNAUTHENTICATED else 500
            return 200

    return check


def _paths(stack: Stack, room_id: str) -> dict[str, Check]:
    p = stack.ports
    a, b = stack.gateway_urls
    return {
        "gateway A REST": _http_check(f"{a}/v1/rooms/{room_id}"),
        "gateway B REST": _http_check(f"{b}/v1/rooms/{room_id}"),
        "gateway B messages (history)": _http_check(f"{b}/v1/rooms/{room_id}/messages"),
        "rooms gRPC": _grpc_check(f"127.0.0.1:{p.rooms_grpc}", room_id),
        "history REST": _http_check(f"http://127.0.0.1:{p.history}/v1/rooms/{room_id}/messages"),
        "auth /v1/users/me": _http_check(f"http://127.0.0.1:{p.auth}/v1/users/me"),
        "gateway-relayed /v1/users/me": _http_check(f"{a}/v1/users/me"),
    }


async def test_logout_revokes_the_token_on_every_path_within_a_second(
    e2e_stack: Stack,
) -> None:
    pair, room_id = await _session(e2e_stack.gateway_urls[0])
    token = pair["access_token"]
    paths = _paths(e2e_stack, room_id)
    for name, check in paths.items():
        assert await check(token) == 200, name

    async with httpx.AsyncClient(base_url=e2e_stack.gateway_urls[1], timeout=10) as client:
        logout = await client.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert logout.status_code == 204
    logged_out = time.monotonic()

    refused_after: dict[str, float] = {}
    # Polled, since the answer comes from other processes; each round is a few ms.
    while len(refused_after) < len(paths):
        assert time.monotonic() - logged_out < REVOCATION_DEADLINE_SECONDS, (
            f"still accepted {REVOCATION_DEADLINE_SECONDS} s after the logout: "
            f"{sorted(set(paths) - set(refused_after))}"
        )
        for name, check in paths.items():
            if name not in refused_after and await check(token) == 401:
                refused_after[name] = time.monotonic() - logged_out
    assert max(refused_after.values()) < REVOCATION_DEADLINE_SECONDS, refused_after


@pytest.fixture
def late_processes(e2e_stack: Stack) -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.stop()


def _start_late(stack: Stack, name: str, port_var: str, port: int) -> ServiceProcess:
    module = name.split("-")[0]
    env = stack.service_env("gateway-a" if module == "gateway" else module)
    env[port_var] = str(port)
    if module == "gateway":
        env["ROOMCAST_GATEWAY_INSTANCE_NAME"] = name
    process = ServiceProcess(module, env, ready_url=f"http://127.0.0.1:{port}/readyz", name=name)
    process.start()
    return process


async def test_services_started_after_the_logout_refuse_the_token(
    e2e_stack: Stack, late_processes: list[ServiceProcess]
) -> None:
    pair, room_id = await _session(e2e_stack.gateway_urls[0])
    token = pair["access_token"]
    async with httpx.AsyncClient(base_url=e2e_stack.gateway_urls[0], timeout=10) as client:
        logout = await client.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert logout.status_code == 204

    gateway_port, history_port = free_port(), free_port()
    late_processes.append(
        await asyncio.to_thread(
            _start_late, e2e_stack, "gateway-late", "ROOMCAST_GATEWAY_PORT", gateway_port
        )
    )
    late_processes.append(
        await asyncio.to_thread(
            _start_late, e2e_stack, "history-late", "ROOMCAST_HISTORY_PORT", history_port
        )
    )
    gateway = f"http://127.0.0.1:{gateway_port}"
    history = f"http://127.0.0.1:{history_port}"
    async with httpx.AsyncClient(timeout=10) as client:
        # A token of a live session works on the late processes: they are serving.
        other, other_room = await _session(e2e_stack.gateway_urls[0])
        ok = await client.get(
            f"{gateway}/v1/rooms/{other_room}", headers=bearer(other["access_token"])
        )
        assert ok.status_code == 200, ok.text
        ok = await client.get(
            f"{history}/v1/rooms/{other_room}/messages", headers=bearer(other["access_token"])
        )
        assert ok.status_code == 200, ok.text
        # The logged-out session's token is refused from their first request.
        for url in (f"{gateway}/v1/rooms/{room_id}", f"{history}/v1/rooms/{room_id}/messages"):
            refused = await client.get(url, headers=bearer(token))
            assert refused.status_code == 401, (url, refused.text)
            assert refused.json()["error"]["code"] == "session_revoked"
