"""Fixtures of the notifier's tests: the parts of a stack the notifier talks to (real
nats-server, SecantusDB, auth and rooms) shared by a module, the notifier as its own
process, and a local receiver for pushes and webhooks (helpers in notifier_testkit)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from notifier_testkit import (
    SERVICE_PASSWORD,
    SERVICE_USER,
    Receiver,
    StartNotifier,
    World,
    vapid_private_key,
)

from roomcast.testing.processes import MongoServer, NatsServer, ServiceProcess, free_port
from roomcast.testing.stack import Stack, StackPorts


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """nats-server, SecantusDB, auth and rooms of a stack on free ports (the parts the
    notifier talks to; records are published to JetStream as a gateway publishes them)."""
    s = Stack(
        Path(tempfile.mkdtemp(prefix="roomcast-notifier-")),
        StackPorts.free(),
        bcrypt_cost=4,
        extra_env={
            "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
            # The notifier's service account sees every room (docs/notifications.md).
            "ROOMCAST_AUTH_SERVICE_READER_USERNAMES": SERVICE_USER,
        },
    )
    (s.state_dir / "nats").mkdir(parents=True)
    s.nats_cluster = [NatsServer(s.ports.nats, str(s.state_dir / "nats"))]
    s.nats = s.nats_cluster[0]
    s.mongo = MongoServer(s.ports.mongo)
    try:
        s.nats.start()
        s.mongo.start()
        for name in ("auth", "rooms"):
            s.services[name] = s.make_service(name)
            s.services[name].start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def world(stack: Stack) -> World:
    return World(
        f"http://127.0.0.1:{stack.ports.auth}",
        f"127.0.0.1:{stack.ports.rooms_grpc}",
        stack.nats_url,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def notifier_env(stack: Stack) -> Callable[..., dict[str, str]]:
    """The environment of a notifier process on the stack, with its own database and
    consumer; keyword arguments override settings."""
    tag = uuid.uuid4().hex[:8]

    def make(**extra: str) -> dict[str, str]:
        p = stack.ports
        assert stack.mongo is not None
        env = {
            "ROOMCAST_NOTIFIER_PORT": str(free_port()),
            "ROOMCAST_NOTIFIER_NATS_URL": stack.nats_url,
            "ROOMCAST_NOTIFIER_MONGO_URL": stack.mongo.url,
            "ROOMCAST_NOTIFIER_MONGO_DB": f"notifier_{tag}",
            "ROOMCAST_NOTIFIER_CONSUMER_NAME": f"notifier_{tag}",
            "ROOMCAST_NOTIFIER_JWKS_URL": stack.jwks_url,
            "ROOMCAST_NOTIFIER_ROOMS_TARGET": f"127.0.0.1:{p.rooms_grpc}",
            "ROOMCAST_NOTIFIER_AUTH_URL": f"http://127.0.0.1:{p.auth}",
            "ROOMCAST_NOTIFIER_SERVICE_USERNAME": SERVICE_USER,
            "ROOMCAST_NOTIFIER_SERVICE_PASSWORD": SERVICE_PASSWORD,
            "ROOMCAST_NOTIFIER_SERVICE_REGISTER": "true",
            "ROOMCAST_NOTIFIER_VAPID_PRIVATE_KEY": vapid_private_key(),
            "ROOMCAST_NOTIFIER_VAPID_SUBJECT": "mailto:ops@example.com",
            "ROOMCAST_NOTIFIER_PUSH_ENDPOINT_HOSTS": "127.0.0.1",
            "ROOMCAST_NOTIFIER_PUSH_ALLOW_HTTP": "true",
            "ROOMCAST_NOTIFIER_PUSH_COALESCE_SECONDS": "1",
            # The test's webhook receivers listen on 127.0.0.1.
            "ROOMCAST_NOTIFIER_WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",
            "ROOMCAST_NOTIFIER_MONGO_TIMEOUT_MS": "2000",
        }
        env.update({f"ROOMCAST_NOTIFIER_{k.upper()}": v for k, v in extra.items()})
        return env

    return make


@pytest.fixture
def start_notifier() -> Iterator[StartNotifier]:
    procs: list[ServiceProcess] = []

    async def start(env: dict[str, str]) -> tuple[ServiceProcess, str]:
        port = env["ROOMCAST_NOTIFIER_PORT"]
        proc = ServiceProcess(
            "notifier", env, ready_url=f"http://127.0.0.1:{port}/readyz", name="notifier"
        )
        procs.append(proc)
        await asyncio.to_thread(proc.start)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.stop()
