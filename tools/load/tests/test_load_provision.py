"""Provisioning through the REST API, against an in-process fake of the gateway's
routes (httpx MockTransport): the calls made, retries, the users file."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from roomcast.load import provision
from roomcast.load.plan import build_layout
from roomcast.load.provision import (
    ProvisionError,
    Rest,
    load_users_file,
    provision_rooms,
    provision_users,
)
from roomcast.load.scenario import parse_scenario


class FakeApi:
    """Just enough of /v1/auth and /v1/rooms; every 3rd request first gets a 429."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {}
        self.rooms: dict[str, set[str]] = {}
        self.calls: list[str] = []
        self.n = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.n += 1
        if self.n % 3 == 0:
            return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {}})
        body = json.loads(request.content or b"{}")
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if path == "/v1/auth/register":
            self.users[body["username"]] = f"{len(self.users):024x}"
            return httpx.Response(201, json={"user": {"id": self.users[body["username"]]}})
        if path == "/v1/auth/login":
            uid = self.users[body["username"]]
            return httpx.Response(200, json={"access_token": f"t.{uid}.x", "user": {"id": uid}})
        uid = token.split(".")[1]
        if path == "/v1/rooms":
            room = f"{len(self.rooms) + 100:024x}"
            self.rooms[room] = {uid}
            return httpx.Response(201, json={"room": {"id": room}})
        room = path.split("/")[3]
        self.rooms[room].add(uid)
        return httpx.Response(200, json={})


async def test_users_rooms_and_joins_are_created_and_saved(tmp_path: Path) -> None:
    api = FakeApi()
    rest = Rest(["http://gw-a", "http://gw-b"], transport=httpx.MockTransport(api))
    sc = parse_scenario(
        {"name": "p", "users": 3, "sockets": 6, "rooms": [{"count": 2, "members": 4}]}
    )
    layout = build_layout(sc)
    users_file = tmp_path / "users.json"
    users = await provision_users(rest, layout.users, users_file=users_file, prefix="t")
    rooms = await provision_rooms(rest, layout, users, label="x")
    await rest.aclose()
    assert [u.username for u in users] == ["t_0", "t_1", "t_2"]
    assert all(u.token and u.user_id for u in users)
    assert rest.rate_limited > 0  # the 429s were waited out
    # Every member's user is in its room: creators by creating it, the others by joining.
    for r in layout.rooms:
        want = {users[layout.sockets[s].user].user_id for s in r.members}
        assert api.rooms[rooms[r.index]] == want
    assert api.calls.count("POST /v1/auth/register") == 3
    saved = load_users_file(users_file)
    assert [u.username for u in saved] == ["t_0", "t_1", "t_2"]

    # A rerun reuses the file: no registration; tokens that do not expire soon are kept
    # (these fake ones have no exp, so they log in again).
    api.calls.clear()
    rest = Rest(["http://gw-a"], transport=httpx.MockTransport(api))
    again = await provision_users(rest, 3, users_file=users_file)
    await rest.aclose()
    assert "POST /v1/auth/register" not in api.calls
    assert api.calls.count("POST /v1/auth/login") == 3
    assert [u.user_id for u in again] == [u.user_id for u in users]


async def test_persistent_failures_give_up_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provision, "MAX_ATTEMPTS", 3)
    monkeypatch.setattr(provision, "BACKOFF_SECONDS", 0.001)
    rest = Rest(["http://gw"], transport=httpx.MockTransport(lambda _r: httpx.Response(503)))
    with pytest.raises(ProvisionError, match="HTTP 503"):
        await provision_users(rest, 2, prefix="x")
    await rest.aclose()


async def test_a_refused_request_is_reported() -> None:
    def refuse(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"code": "invalid_request", "message": "no"}})

    rest = Rest(["http://gw"], transport=httpx.MockTransport(refuse))
    with pytest.raises(ProvisionError, match="register x_0: HTTP 400"):
        await provision_users(rest, 1, prefix="x")
    await rest.aclose()
