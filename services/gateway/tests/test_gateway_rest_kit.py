"""Helpers of the REST-edge tests (no tests here): the real services as processes and
the gateway's REST router mounted on a service app, driven through httpx's ASGI
transport.

A :class:`RestStack` runs a nats-server and the REAL auth, rooms and (optionally)
history processes against the session's SecantusDB. auth signs with the test
``signing_key_pem``, so the ``issue_token`` fixture's tokens are valid everywhere
(rooms and history verify against auth's JWKS), and users that only need a token
need no registration.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from pymongo import MongoClient

from roomcast.common.httpapp import create_service_app
from roomcast.common.tokens import TokenVerifier
from roomcast.gateway.edge.http_app import MAX_REST_BODY_BYTES
from roomcast.gateway.rest.api import install_rest
from roomcast.gateway.rest.deps import RestDeps
from roomcast.gateway.settings import Settings
from roomcast.testing.processes import NatsServer, ServiceProcess, free_port

PASSWORD = "correct horse battery staple"
ISSUER = "roomcast-auth"
AUDIENCE = "roomcast"


def new_id() -> str:
    return uuid.uuid4().hex[:24]


def new_ip() -> str:
    """A client address of its own, so auth's per-IP attempt limits never couple tests."""
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{max(1, raw[2])}"


@dataclass
class RestStack:
    """nats-server + auth + rooms (+ history) processes on free ports."""

    mongo_url: str
    signing_key_pem: bytes
    nats: NatsServer = field(default_factory=NatsServer)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: list[ServiceProcess] = field(default_factory=list)
    auth: ServiceProcess | None = None
    rooms: ServiceProcess | None = None
    history: ServiceProcess | None = None
    notifier: ServiceProcess | None = None
    auth_port: int = 0
    rooms_port: int = 0
    history_port: int = 0
    notifier_port: int = 0

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.auth_port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.auth_url}/.well-known/jwks.json"

    @property
    def rooms_target(self) -> str:
        return f"127.0.0.1:{self.rooms_port}"

    @property
    def history_url(self) -> str:
        return f"http://127.0.0.1:{self.history_port}"

    @property
    def notifier_url(self) -> str:
        return f"http://127.0.0.1:{self.notifier_port}"

    @property
    def databases(self) -> list[str]:
        return [f"rest_{svc}_{self.tag}" for svc in ("auth", "rooms", "history", "notifier")]

    def start(self, *, history: bool = False, notifier: bool = False, **env: str) -> RestStack:
        self.nats.start()
        self.auth = self.start_auth(**env)
        self.rooms = self.start_rooms(**env)
        if history:
            self.history = self.start_history(**env)
        if notifier:
            self.notifier = self.start_notifier(**env)
        return self

    def start_notifier(self, **env: str) -> ServiceProcess:
        """The notifier's API (its consumer has no records to turn into notifications
        here, so its rooms service account never logs in)."""
        self.notifier_port = self.notifier_port or free_port()
        raw = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
        return self._spawn(
            "notifier",
            {
                "ROOMCAST_NOTIFIER_HOST": "127.0.0.1",
                "ROOMCAST_NOTIFIER_PORT": str(self.notifier_port),
                "ROOMCAST_NOTIFIER_MONGO_URL": self.mongo_url,
                "ROOMCAST_NOTIFIER_MONGO_DB": self.databases[3],
                "ROOMCAST_NOTIFIER_NATS_URL": self.nats.url,
                "ROOMCAST_NOTIFIER_JWKS_URL": self.jwks_url,
                "ROOMCAST_NOTIFIER_ROOMS_TARGET": self.rooms_target,
                "ROOMCAST_NOTIFIER_AUTH_URL": self.auth_url,
                "ROOMCAST_NOTIFIER_SERVICE_PASSWORD": uuid.uuid4().hex,
                "ROOMCAST_NOTIFIER_VAPID_PRIVATE_KEY": base64.urlsafe_b64encode(
                    raw.to_bytes(32, "big")
                ).decode(),
                **self._extra("ROOMCAST_NOTIFIER_", env),
            },
            f"{self.notifier_url}/readyz",
        )

    def _spawn(self, service: str, env: dict[str, str], ready_url: str) -> ServiceProcess:
        proc = ServiceProcess(service, env, ready_url=ready_url, name=f"rest-{service}")
        self.procs.append(proc)
        proc.start()
        return proc

    def _extra(self, prefix: str, env: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in env.items() if k.startswith(prefix)}

    def start_auth(self, **env: str) -> ServiceProcess:
        self.auth_port = self.auth_port or free_port()
        return self._spawn(
            "auth",
            {
                "ROOMCAST_AUTH_HOST": "127.0.0.1",
                "ROOMCAST_AUTH_PORT": str(self.auth_port),
                "ROOMCAST_AUTH_MONGO_URL": self.mongo_url,
                "ROOMCAST_AUTH_MONGO_DB": self.databases[0],
                "ROOMCAST_AUTH_NATS_URL": self.nats.url,
                "ROOMCAST_AUTH_SIGNING_KEY": self.signing_key_pem.decode(),
                # bcrypt cost 4: ~1 ms per hash instead of ~250 ms.
                "ROOMCAST_AUTH_BCRYPT_COST": "4",
                # The gateway (this test process) forwards from 127.0.0.1.
                "ROOMCAST_AUTH_TRUSTED_PROXIES": "127.0.0.1",
                **self._extra("ROOMCAST_AUTH_", env),
            },
            f"{self.auth_url}/readyz",
        )

    def start_rooms(self, **env: str) -> ServiceProcess:
        self.rooms_port = self.rooms_port or free_port()
        http_port = free_port()
        return self._spawn(
            "rooms",
            {
                "ROOMCAST_ROOMS_HOST": "127.0.0.1",
                "ROOMCAST_ROOMS_GRPC_PORT": str(self.rooms_port),
                "ROOMCAST_ROOMS_HTTP_PORT": str(http_port),
                "ROOMCAST_ROOMS_MONGO_URL": self.mongo_url,
                "ROOMCAST_ROOMS_MONGO_DB": self.databases[1],
                "ROOMCAST_ROOMS_NATS_URL": self.nats.url,
                "ROOMCAST_ROOMS_JWKS_URL": self.jwks_url,
                **self._extra("ROOMCAST_ROOMS_", env),
            },
            f"http://127.0.0.1:{http_port}/readyz",
        )

    def start_history(self, **env: str) -> ServiceProcess:
        self.history_port = self.history_port or free_port()
        return self._history(self.history_port, env)

    def start_history_replica(self, port: int) -> ServiceProcess:
        """Another history process on ``port`` (same database, stream and consumer)."""
        return self._history(port, {})

    def _history(self, port: int, env: dict[str, str]) -> ServiceProcess:
        return self._spawn(
            "history",
            {
                "ROOMCAST_HISTORY_HOST": "127.0.0.1",
                "ROOMCAST_HISTORY_PORT": str(port),
                "ROOMCAST_HISTORY_MONGO_URL": self.mongo_url,
                "ROOMCAST_HISTORY_MONGO_DB": self.databases[2],
                "ROOMCAST_HISTORY_NATS_URL": self.nats.url,
                "ROOMCAST_HISTORY_JWKS_URL": self.jwks_url,
                "ROOMCAST_HISTORY_ROOMS_TARGET": self.rooms_target,
                **self._extra("ROOMCAST_HISTORY_", env),
            },
            f"http://127.0.0.1:{port}/readyz",
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.nats.cleanup()
        with contextlib.suppress(Exception):
            client: MongoClient[dict[str, Any]] = MongoClient(
                self.mongo_url, serverSelectionTimeoutMS=2000
            )
            with client:
                for name in self.databases:
                    client.drop_database(name)


def stopped(proc: ServiceProcess | None) -> None:
    """Stop a service (SIGTERM, waits for the exit)."""
    assert proc is not None
    proc.stop()
    assert not proc.running, proc.log_tail()


@dataclass
class Gateway:
    """The REST edge under test: the app, its deps and a client with its own IP."""

    app: FastAPI
    deps: RestDeps
    client: httpx.AsyncClient
    client_ip: str

    async def register(self, username: str | None = None, **extra: Any) -> dict[str, Any]:
        """Register and log in a new user; the login body plus ``token``/``id``."""
        username = username or f"u{uuid.uuid4().hex[:12]}"
        created = await self.client.post(
            "/v1/auth/register", json={"username": username, "password": PASSWORD, **extra}
        )
        assert created.status_code == 201, created.text
        login = await self.client.post(
            "/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        body: dict[str, Any] = login.json()
        body["token"] = body["access_token"]
        body["id"] = body["user"]["id"]
        return body

    async def create_room(
        self, token: str, name: str = "room", visibility: str = "public", **extra: Any
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/rooms",
            json={"name": name, "visibility": visibility, **extra},
            headers=bearer(token),
        )
        assert response.status_code == 201, response.text
        room: dict[str, Any] = response.json()["room"]
        return room


OpenGateway = Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]


def gateway_opener(
    stack: RestStack, *, transport: httpx.AsyncBaseTransport | None = None
) -> OpenGateway:
    """``async with opener(...) as gw``: a fresh gateway app on ``stack``; ``transport``
    replaces the upstream HTTP transport (to record exactly what is relayed)."""

    @contextlib.asynccontextmanager
    async def open_gateway(
        *,
        client_ip: str | None = None,
        max_body_bytes: int = MAX_REST_BODY_BYTES,
        **overrides: Any,
    ) -> AsyncIterator[Gateway]:
        values: dict[str, Any] = {
            "auth_url": stack.auth_url,
            "history_url": stack.history_url if stack.history_port else "http://127.0.0.1:9",
            "notifier_url": stack.notifier_url if stack.notifier_port else "http://127.0.0.1:9",
            "rooms_target": stack.rooms_target,
            "jwks_url": stack.jwks_url,
            "rooms_timeout_seconds": 3.0,
        }
        values.update(overrides)
        settings = Settings(**values)
        verifier = TokenVerifier.from_url(settings.jwks_url, issuer=ISSUER, audience=AUDIENCE)
        channel = grpc.aio.insecure_channel(settings.rooms_target)
        deps = RestDeps.create(
            settings,
            verifier=verifier,
            rooms_channel=channel,
            transport=transport,
        )
        # A service name of its own: each app registers its own Prometheus metrics.
        app = create_service_app(f"gwtest{uuid.uuid4().hex[:10]}", max_body_bytes=max_body_bytes)
        install_rest(app, deps)
        ip = client_ip or new_ip()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(ip, 40000)),
            base_url="http://gateway.test",
            timeout=30,
        )
        try:
            yield Gateway(app, deps, client, ip)
        finally:
            await client.aclose()
            await deps.aclose()
            await channel.close()

    return open_gateway


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """``status`` with exactly the error envelope (and ``code`` if given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
