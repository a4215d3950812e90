"""Fixtures for the auth tests: the app built in-process against a real SecantusDB
(one fresh database per test), driven through httpx's ASGI transport."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from roomcast.auth.app import auth_service, create_app
from roomcast.auth.events import EventPublisher, NullPublisher
from roomcast.auth.service import AuthService
from roomcast.auth.sessions import utc_now
from roomcast.auth.settings import Settings
from roomcast.common.mongo import connect_mongo
from roomcast.common.tokens import TokenSigner, TokenVerifier

PASSWORD = "correct horse battery staple"
CLIENT_ADDRESS = ("203.0.113.7", 50000)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """The response is ``status`` with the error envelope (and ``code`` if given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str)
    assert isinstance(body["error"]["code"], str)
    if code is not None:
        assert body["error"]["code"] == code, body


@dataclass
class AuthHarness:
    """One in-process auth app and a client for it. Test modules cannot import from
    conftest (importlib mode), so the helpers they share hang off this object."""

    PASSWORD = PASSWORD
    bearer = staticmethod(bearer)
    expect_error = staticmethod(assert_error)

    app: FastAPI
    client: httpx.AsyncClient
    service: AuthService
    signer: TokenSigner
    settings: Settings

    async def register(self, username: str, password: str = PASSWORD, **extra: Any) -> Any:
        response = await self.client.post(
            "/v1/auth/register", json={"username": username, "password": password, **extra}
        )
        assert response.status_code == 201, response.text
        return response.json()["user"]

    async def login(self, username: str, password: str = PASSWORD) -> Any:
        response = await self.client.post(
            "/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def verifier(self) -> TokenVerifier:
        """A verifier fed from the JWKS the app serves, as other services build theirs."""

        async def fetch() -> Any:
            response = await self.client.get("/.well-known/jwks.json")
            response.raise_for_status()
            return response.json()

        return TokenVerifier(fetch, issuer="roomcast-auth", audience="roomcast")


MakeAuth = Callable[..., Awaitable[AuthHarness]]


@pytest.fixture
async def make_auth(
    mongo_url: str, mongo_db_name: str, signer: TokenSigner
) -> AsyncIterator[MakeAuth]:
    stack = AsyncExitStack()

    async def make(
        *,
        publisher: EventPublisher | None = None,
        token_signer: TokenSigner | None = None,
        rate_limit_clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
        client_address: tuple[str, int] = CLIENT_ADDRESS,
        create_indexes: bool = True,
        backoff_sleep: Callable[[float], Awaitable[None]] | None = None,
        **overrides: Any,
    ) -> AuthHarness:
        values: dict[str, Any] = {"mongo_url": mongo_url, "mongo_db": mongo_db_name}
        values["bcrypt_cost"] = 4  # ~1 ms per hash instead of ~250 ms
        values.update(overrides)
        settings = Settings(**values)
        mongo = connect_mongo(
            settings.mongo_url, timeout_ms=settings.mongo_timeout_ms, app_name="auth-tests"
        )
        stack.push_async_callback(mongo.close)
        the_signer = token_signer or signer
        app = create_app(
            settings,
            mongo,
            the_signer,
            publisher or NullPublisher(),
            rate_limit_clock=rate_limit_clock,
            wall_clock=wall_clock,
            **({"backoff_sleep": backoff_sleep} if backoff_sleep is not None else {}),
        )
        service = auth_service(app)
        stack.callback(service.hasher.close)
        if create_indexes:
            await service.ensure_indexes()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=client_address),
            base_url="http://auth.test",
        )
        await stack.enter_async_context(client)
        return AuthHarness(app, client, service, the_signer, settings)

    yield make
    await stack.aclose()


@pytest.fixture
async def auth(make_auth: MakeAuth) -> AuthHarness:
    return await make_auth()
