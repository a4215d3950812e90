"""The auth rows through the gateway: relayed to the REAL auth process (status, body and
headers as auth answers them), X-Forwarded-For built from the peer (a client's own
chain is believed only from a trusted proxy), X-Request-Id passed along."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from test_gateway_rest_kit import (
    PASSWORD,
    Gateway,
    RestStack,
    assert_error,
    bearer,
    gateway_opener,
    new_ip,
)

from roomcast.common.tokens import TokenVerifier
from roomcast.gateway.settings import Settings
from roomcast.testing.processes import MongoServer

# auth believes X-Forwarded-For from the gateway (127.0.0.1) and from "load balancers"
# in 10.0.0.0/8 (the test clients' addresses), as a deployment behind a balancer would.
AUTH_TRUSTED = "127.0.0.1,10.0.0.0/8"


@pytest.fixture(scope="module")
def stack(mongo_server: MongoServer, signing_key_pem: bytes) -> Iterator[RestStack]:
    running = RestStack(mongo_server.url, signing_key_pem)
    try:
        running.nats.start()
        running.auth = running.start_auth(ROOMCAST_AUTH_TRUSTED_PROXIES=AUTH_TRUSTED)
        yield running
    finally:
        running.stop()


async def test_account_lifecycle_through_the_gateway(gw: Gateway) -> None:
    c = gw.client
    name = f"u{uuid.uuid4().hex[:10]}"
    created = await c.post(
        "/v1/auth/register",
        json={"username": name, "password": PASSWORD, "email": f"{name}@example.com"},
    )
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith("application/json")
    user = created.json()["user"]
    assert user["username"] == name
    assert user["email"] == f"{name}@example.com"
    assert_error(
        await c.post("/v1/auth/register", json={"username": name, "password": PASSWORD}),
        409,
        "username_taken",
    )

    assert_error(
        await c.post("/v1/auth/login", json={"username": name, "password": "wrong-password"}),
        401,
        "invalid_credentials",
    )
    login = await c.post("/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    pair = login.json()
    assert pair["token_type"] == "bearer"
    assert pair["user"]["id"] == user["id"]

    # the access token is auth's: the JWKS relayed by the gateway verifies it
    jwks = await c.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert jwks.headers["cache-control"] == "public, max-age=300"
    verifier = TokenVerifier.from_jwks(jwks.json(), issuer="roomcast-auth", audience="roomcast")
    assert (await verifier.verify(pair["access_token"])).user_id == user["id"]

    me = await c.get("/v1/users/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    assert me.json()["user"]["email"] == user["email"]
    patched = await c.patch(
        "/v1/users/me",
        json={"display_name": "Ada", "avatar_url": "https://cdn.example/a.png"},
        headers=bearer(pair["access_token"]),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["user"]["display_name"] == "Ada"
    public = await c.get(f"/v1/users/{user['id']}")
    assert public.status_code == 200
    assert public.json()["user"]["display_name"] == "Ada"
    assert "email" not in public.json()["user"]
    assert_error(await c.get("/v1/users/me"), 401, "missing_token")

    # refresh rotates; reusing the spent refresh token is refused (and revokes it all)
    rotated = await c.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    new_pair = rotated.json()
    assert new_pair["refresh_token"] != pair["refresh_token"]
    reused = await c.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_error(reused, 401, "refresh_token_reused")
    assert_error(
        await c.post("/v1/auth/refresh", json={"refresh_token": new_pair["refresh_token"]}),
        401,
    )

    # logout: 204, empty body
    again = await c.post("/v1/auth/login", json={"username": name, "password": PASSWORD})
    out = await c.post("/v1/auth/logout", json={"refresh_token": again.json()["refresh_token"]})
    assert out.status_code == 204
    assert out.content == b""
    assert_error(
        await c.post("/v1/auth/refresh", json={"refresh_token": again.json()["refresh_token"]}),
        401,
    )


async def failed_logins(gw: Gateway, count: int, **headers: str) -> list[httpx.Response]:
    """``count`` wrong-password logins, each for another username (so only the per-IP
    bucket can fill up)."""
    responses = []
    for _ in range(count):
        body = {"username": f"nobody{uuid.uuid4().hex[:8]}", "password": "wrong-password"}
        responses.append(await gw.client.post("/v1/auth/login", json=body, headers=headers))
    return responses


async def test_login_limits_follow_the_client_address(stack: RestStack) -> None:
    opener = gateway_opener(stack)
    async with opener() as first, opener() as second:
        # auth allows 10 attempts per IP per 30 s: the 11th from one client is 429 with
        # Retry-After (relayed), although every attempt named another user.
        responses = await failed_logins(first, 11)
        assert [r.status_code for r in responses[:10]] == [401] * 10
        assert_error(responses[10], 429, "rate_limited")
        assert int(responses[10].headers["retry-after"]) >= 1
        # another client address is unaffected: auth saw the real client, not the gateway
        assert_error((await failed_logins(second, 1))[0], 401, "invalid_credentials")
        # a client cannot escape its bucket with its own X-Forwarded-For
        spoofed = await failed_logins(first, 1, **{"X-Forwarded-For": "198.51.100.1"})
        assert_error(spoofed[0], 429, "rate_limited")

    # behind a trusted proxy (the client address is in the gateway's trusted list), the
    # proxy's chain is kept: the original client is the one accounted for.
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    exhausted_proxy = first.client_ip
    async with opener(trusted_proxies=proxies, client_ip=exhausted_proxy) as proxied:
        ok = await failed_logins(
            proxied, 1, **{"X-Forwarded-For": f"198.51.100.{uuid.uuid4().int % 200}"}
        )
        assert_error(ok[0], 401, "invalid_credentials")


async def test_request_id_and_headers_are_relayed(gw: Gateway) -> None:
    response = await gw.client.get(
        "/.well-known/jwks.json", headers={"X-Request-Id": "rest-test-42"}
    )
    assert response.status_code == 200
    # one X-Request-Id (the gateway's, equal to the client's), not two
    assert response.headers.get_list("x-request-id") == ["rest-test-42"]


# --------------------------------------------------------------- exact relaying


class Recorder:
    """An upstream that records what reached it and answers a canned response."""

    def __init__(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        self.answer = (status, content, headers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        status, content, headers = self.answer
        return httpx.Response(status, content=content, headers=headers)


@pytest.fixture
async def recorded(stack: RestStack) -> AsyncIterator[tuple[Gateway, Recorder]]:
    recorder = Recorder(
        429,
        b'{"error":{"code":"rate_limited","message":"slow down"}}',
        {
            "content-type": "application/json",
            "retry-after": "7",
            "connection": "close",
            "set-cookie": "a=b",
            "x-internal": "secret",
        },
    )
    opener = gateway_opener(stack, transport=httpx.MockTransport(recorder))
    async with opener(client_ip="192.0.2.10") as gateway:
        yield gateway, recorder


async def test_forwarding_sends_exactly_what_the_contract_says(
    recorded: tuple[Gateway, Recorder],
) -> None:
    gw, recorder = recorded
    body = b'{"username":"alice","password":"correct horse"}'
    response = await gw.client.post(
        "/v1/auth/login?lang=en&x=1",
        content=body,
        headers={
            "content-type": "application/json",
            "authorization": "Bearer abc",
            "x-request-id": "req-1",
            "x-forwarded-for": "203.0.113.9",
            "cookie": "session=1",
            "x-custom": "dropped",
        },
    )
    (sent,) = recorder.requests
    assert sent.method == "POST"
    assert sent.url.path == "/v1/auth/login"
    assert sent.url.query == b"lang=en&x=1"
    assert str(sent.url).startswith(gw.deps.auth_url)
    assert sent.content == body
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["authorization"] == "Bearer abc"
    assert sent.headers["x-request-id"] == "req-1"
    # the peer is not a trusted proxy: its own chain is dropped, its address is used
    assert sent.headers["x-forwarded-for"] == "192.0.2.10"
    assert "cookie" not in sent.headers
    assert "x-custom" not in sent.headers
    # auth's answer comes back as-is, minus hop-by-hop and unrelated headers
    assert response.status_code == 429
    assert response.json() == {"error": {"code": "rate_limited", "message": "slow down"}}
    assert response.headers["retry-after"] == "7"
    assert "set-cookie" not in response.headers
    assert "x-internal" not in response.headers
    assert response.headers["x-request-id"] == "req-1"


async def test_trusted_proxy_chain_is_kept(stack: RestStack) -> None:
    recorder = Recorder(200, b'{"keys":[]}', {"content-type": "application/json"})
    proxies = (ipaddress.ip_network("192.0.2.0/24"),)
    opener = gateway_opener(stack, transport=httpx.MockTransport(recorder))
    async with opener(client_ip="192.0.2.10", trusted_proxies=proxies) as gw:
        await gw.client.get(
            "/.well-known/jwks.json",
            headers={"x-forwarded-for": "203.0.113.9, 198.51.100.2"},
        )
    async with opener(client_ip=new_ip(), trusted_proxies=proxies) as untrusted:
        await untrusted.client.get(
            "/.well-known/jwks.json", headers={"x-forwarded-for": "203.0.113.9"}
        )
    assert recorder.requests[0].headers["x-forwarded-for"] == (
        "203.0.113.9, 198.51.100.2, 192.0.2.10"
    )
    assert recorder.requests[1].headers["x-forwarded-for"] == untrusted.client_ip


def test_rest_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ROOMCAST_GATEWAY_CORS_ALLOWED_ORIGINS", "https://a.example/, https://b.example"
    )
    monkeypatch.setenv("ROOMCAST_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
    monkeypatch.setenv("ROOMCAST_GATEWAY_AUTH_REQUEST_TIMEOUT_SECONDS", "3")
    monkeypatch.delenv("ROOMCAST_GATEWAY_UPSTREAM_MAX_CONNECTIONS", raising=False)
    monkeypatch.setenv("ROOMCAST_GATEWAY_ALLOWED_ORIGINS", " https://App.example/ ,")
    settings = Settings()
    assert settings.cors_allowed_origins == ("https://a.example", "https://b.example")
    # the WebSocket's allowlist is read the same way and compared in lowercase
    assert settings.allowed_origins == ("https://App.example",)
    assert settings.origins == frozenset({"https://app.example"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.1/32"]
    assert settings.auth_request_timeout_seconds == 3.0
    assert settings.upstream_max_connections == 200
