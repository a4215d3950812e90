"""RoomcastHttp: typed errors, token handling and refresh, with httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from roomcast.client import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    RoomcastHttp,
    Unauthorized,
    Unavailable,
    Unreachable,
    jwt_expiry,
    ws_url,
)

BASE = "http://gateway.test"
USER = {"id": "1" * 24, "username": "alice"}


def fake_jwt(exp: float) -> str:
    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'EdDSA'})}.{seg({'sub': USER['id'], 'exp': int(exp)})}.c2ln"


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened"}}
    return httpx.Response(status, json=body, headers=headers)


class Recorder:
    """A MockTransport handler that records requests and answers from a routing function."""

    def __init__(self, route: Callable[[httpx.Request], httpx.Response]) -> None:
        self.route = route
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.route(request)


def client(
    route: Callable[[httpx.Request], httpx.Response], **kw: Any
) -> tuple[RoomcastHttp, Recorder]:
    recorder = Recorder(route)
    return RoomcastHttp(BASE, transport=httpx.MockTransport(recorder), **kw), recorder


async def test_client_http_login_stores_tokens_and_sends_bearer() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/login":
            assert json.loads(request.content) == {"username": "alice", "password": "pw"}
            assert "authorization" not in request.headers
            return httpx.Response(
                200,
                json={
                    "access_token": "A1",
                    "refresh_token": "R1",
                    "token_type": "bearer",
                    "expires_in": 900,
                    "user": USER,
                },
            )
        if request.url.path == "/v1/rooms":
            assert request.headers["authorization"] == "Bearer A1"
            return httpx.Response(
                201, json={"room": {"id": "r" * 24, "name": "lobby", "visibility": "public"}}
            )
        return error(404, "not_found")

    http, recorder = client(route)
    async with http:
        pair = await http.login("alice", "pw")
        assert pair["access_token"] == "A1"
        assert (http.access_token, http.refresh_token, http.user) == ("A1", "R1", USER)
        room = await http.create_room("lobby", topic="hi")
        assert room["name"] == "lobby"
        assert json.loads(recorder.requests[1].content) == {
            "name": "lobby",
            "visibility": "public",
            "topic": "hi",
        }


@pytest.mark.parametrize(
    ("status", "code", "exc"),
    [
        (400, "invalid_request", BadRequest),
        (401, "invalid_token", Unauthorized),
        (403, "not_owner", Forbidden),
        (404, "room_not_found", NotFound),
        (409, "already_member", Conflict),
        (503, "dependency_unavailable", Unavailable),
        (500, "internal", ApiError),
    ],
)
async def test_client_http_errors_are_typed(status: int, code: str, exc: type[ApiError]) -> None:
    http, _ = client(lambda _r: error(status, code), access_token="A")
    async with http:
        with pytest.raises(exc) as info:
            await http.get_room("r" * 24)
    assert type(info.value) is exc
    assert (info.value.status, info.value.code, info.value.message) == (
        status,
        code,
        f"{code} happened",
    )


async def test_client_http_rate_limited_has_retry_after() -> None:
    http, _ = client(lambda _r: error(429, "rate_limited", {"Retry-After": "7"}), access_token="A")
    async with http:
        with pytest.raises(RateLimited) as info:
            await http.list_rooms(scope="public", limit=10)
    assert info.value.retry_after == 7.0


async def test_client_http_non_envelope_error_body() -> None:
    http, _ = client(lambda _r: httpx.Response(502, text="<html>bad gateway</html>"))
    async with http:
        with pytest.raises(Unavailable) as info:
            await http.me()
    assert info.value.code == "http_502"
    assert "bad gateway" in info.value.message


async def test_client_http_unreachable() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    http, _ = client(route)
    async with http:
        with pytest.raises(Unreachable):
            await http.me()


async def test_client_http_refreshes_once_on_token_expired() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/refresh":
            assert json.loads(request.content) == {"refresh_token": "R1"}
            return httpx.Response(
                200,
                json={
                    "access_token": "A2",
                    "refresh_token": "R2",
                    "token_type": "bearer",
                    "expires_in": 900,
                },
            )
        if request.headers.get("authorization") == "Bearer A2":
            return httpx.Response(200, json=USER)
        return error(401, "token_expired")

    http, recorder = client(route, access_token="A1", refresh_token="R1")
    async with http:
        assert await http.me() == USER
        assert (http.access_token, http.refresh_token) == ("A2", "R2")
        paths = [r.url.path for r in recorder.requests]
        assert paths == ["/v1/users/me", "/v1/auth/refresh", "/v1/users/me"]


async def test_client_http_other_401_is_not_refreshed() -> None:
    http, recorder = client(
        lambda _r: error(401, "invalid_token"), access_token="A1", refresh_token="R1"
    )
    async with http:
        with pytest.raises(Unauthorized):
            await http.me()
    assert len(recorder.requests) == 1


async def test_client_http_concurrent_expiry_refreshes_once() -> None:
    refreshes = 0

    def route(request: httpx.Request) -> httpx.Response:
        nonlocal refreshes
        if request.url.path == "/v1/auth/refresh":
            refreshes += 1
            if json.loads(request.content) != {"refresh_token": "R1"}:
                return error(401, "refresh_token_reused")
            return httpx.Response(
                200,
                json={
                    "access_token": "A2",
                    "refresh_token": "R2",
                    "token_type": "bearer",
                    "expires_in": 900,
                },
            )
        if request.headers.get("authorization") == "Bearer A2":
            return httpx.Response(200, json=USER)
        return error(401, "token_expired")

    http, _ = client(route, access_token="A1", refresh_token="R1")
    async with http:
        results = await asyncio.gather(*(http.me() for _ in range(5)))
    assert results == [USER] * 5
    assert refreshes == 1


async def test_client_http_fresh_access_token_refreshes_near_expiry() -> None:
    soon = fake_jwt(time.time() + 5)
    later = fake_jwt(time.time() + 900)
    assert jwt_expiry(later) == pytest.approx(time.time() + 900, abs=2)
    assert jwt_expiry("garbage") is None

    def route(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "access_token": later,
                "refresh_token": "R2",
                "token_type": "bearer",
                "expires_in": 900,
            },
        )

    http, recorder = client(route, access_token=soon, refresh_token="R1")
    async with http:
        assert await http.access_token_provider() == later
        assert await http.fresh_access_token() == later  # still valid: no second refresh
    assert len(recorder.requests) == 1


async def test_client_http_history_page_and_paths() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        assert request.url.raw_path.split(b"?")[0] == b"/v1/rooms/r%2Fx/messages"
        assert dict(request.url.params) == {"before": "10", "limit": "2"}
        return httpx.Response(200, json={"items": [{"seq": 9}, {"seq": 7}], "next_before": 7})

    http, _ = client(route, access_token="A")
    async with http:
        page = await http.messages("r/x", before=10, limit=2)
    assert page == {"items": [{"seq": 9}, {"seq": 7}], "next_before": 7}


async def test_client_http_logout_forgets_tokens() -> None:
    http, recorder = client(lambda _r: httpx.Response(204), access_token="A", refresh_token="R")
    async with http:
        await http.logout()
    assert (http.access_token, http.refresh_token) == (None, None)
    assert json.loads(recorder.requests[0].content) == {"refresh_token": "R"}


def test_client_ws_url() -> None:
    assert ws_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/v1/ws"
    assert ws_url("https://chat.example/api/") == "wss://chat.example/api/v1/ws"
    assert ws_url("ws://h:1") == "ws://h:1/v1/ws"
    assert ws_url("wss://h/custom") == "wss://h/custom"
    with pytest.raises(ValueError, match="not an http"):
        ws_url("ftp://h")
