"""The infrastructure bootstrap against a real nats-server (one node and a 3-node
JetStream cluster) and a real SecantusDB: it creates what is missing, a second run
changes nothing, an existing stream that is not ours is refused with the reason, and
replicas are raised, never lowered."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig
from pydantic import SecretStr
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from roomcast.common.bootstrap_errors import BootstrapConflict, BootstrapError, NotReachable
from roomcast.common.bootstrap_mongo import bootstrap_mongo
from roomcast.common.bootstrap_settings import BootstrapSettings
from roomcast.common.bootstrap_streams import bootstrap_nats
from roomcast.common.chatstream import StreamSettings, chat_stream_config
from roomcast.common.retention import BUCKET as RETENTION_BUCKET
from roomcast.common.retention import open_bucket as open_retention_bucket
from roomcast.common.revocations import BUCKET
from roomcast.common.subjects import STREAM_NAME
from roomcast.testing.processes import MongoServer, NatsServer, free_port

# The CLI imports pydantic, nats and pymongo: a few seconds on a loaded 2-core machine.
CLI_TIMEOUT_SECONDS = 60
# Short, so the unreachable case fails fast; long enough for one connection attempt.
SHORT_DEADLINE_SECONDS = 3.0


def nats_settings(url: str, **overrides: object) -> BootstrapSettings:
    return BootstrapSettings(nats_url=url, connect_deadline_seconds=30, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def test_nats_creates_stream_and_bucket_then_changes_nothing(
    nats_url: str, nc: NatsClient
) -> None:
    first = await bootstrap_nats(nats_settings(nats_url))
    assert first == [
        f"stream {STREAM_NAME} created with 1 replicas",
        f"bucket {BUCKET} created with 1 replicas, ttl 930 s",
        f"bucket {RETENTION_BUCKET} created with 1 replicas",
    ]
    js = nc.jetstream()
    chat = await js.stream_info(STREAM_NAME)
    want = chat_stream_config(StreamSettings())
    assert chat.config.subjects == want.subjects
    assert chat.config.republish is not None
    assert chat.config.republish.dest == want.republish.dest  # type: ignore[union-attr]
    bucket = await js.stream_info(f"KV_{BUCKET}")
    assert bucket.config.max_age == 930
    assert bucket.config.max_msgs_per_subject == 1

    assert await bootstrap_nats(nats_settings(nats_url)) == []
    assert (await js.stream_info(STREAM_NAME)).config == chat.config
    assert (await js.stream_info(f"KV_{BUCKET}")).config == bucket.config
    retention = await js.stream_info(f"KV_{RETENTION_BUCKET}")
    assert retention.config.max_msgs_per_subject == 1
    assert not retention.config.max_age


async def test_nats_keeps_a_bucket_auth_created(nats_url: str, nc: NatsClient) -> None:
    js = nc.jetstream()
    await js.create_key_value(bucket=BUCKET, ttl=3630, history=1)
    await open_retention_bucket(js, replicas=1, create=True)  # rooms made it first
    changes = await bootstrap_nats(nats_settings(nats_url))
    assert changes == [f"stream {STREAM_NAME} created with 1 replicas"]
    assert (await js.stream_info(f"KV_{BUCKET}")).config.max_age == 3630


async def test_nats_refuses_a_chat_stream_that_is_not_ours(nats_url: str, nc: NatsClient) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM_NAME, subjects=["other.>"]))
    with pytest.raises(BootstrapConflict) as raised:
        await bootstrap_nats(nats_settings(nats_url))
    message = str(raised.value)
    assert "subjects: have ['other.>'], want ['chat.room.*']" in message
    assert "republish" in message
    # Left exactly as it was.
    assert (await js.stream_info(STREAM_NAME)).config.subjects == ["other.>"]


async def test_nats_unreachable_is_reported() -> None:
    settings = BootstrapSettings(
        nats_url=f"nats://127.0.0.1:{free_port()}", connect_deadline_seconds=SHORT_DEADLINE_SECONDS
    )
    with pytest.raises(NotReachable, match="did not answer in 3 s"):
        await bootstrap_nats(settings)


@pytest.fixture
def nats_cluster() -> Iterator[list[NatsServer]]:
    cluster_ports = [free_port() for _ in range(3)]
    routes = [f"nats://127.0.0.1:{p}" for p in cluster_ports]
    nodes = [
        NatsServer(name=f"n{i}", cluster_port=port, routes=routes)
        for i, port in enumerate(cluster_ports)
    ]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()


async def test_nats_raises_replicas_on_a_cluster_and_never_lowers(
    nats_cluster: list[NatsServer],
) -> None:
    url = nats_cluster[0].url
    # A stream made with one replica (a gateway before the 3-replica setting).
    first = await bootstrap_nats(nats_settings(url))
    assert len(first) == 3
    three = {"stream_replicas": 3, "revocations_replicas": 3, "retention_replicas": 3}
    raised = await bootstrap_nats(nats_settings(url, **three))
    assert raised == [
        f"stream {STREAM_NAME}: replicas 1 -> 3",
        f"stream KV_{BUCKET}: replicas 1 -> 3",
        f"stream KV_{RETENTION_BUCKET}: replicas 1 -> 3",
    ]
    assert await bootstrap_nats(nats_settings(url, **three)) == []
    # Asking for fewer leaves the 3 replicas in place.
    assert await bootstrap_nats(nats_settings(url)) == []
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for stream in (STREAM_NAME, f"KV_{BUCKET}", f"KV_{RETENTION_BUCKET}"):
            assert (await js.stream_info(stream)).config.num_replicas == 3, stream
    finally:
        await client.close()


def mongo_settings(server: MongoServer, **overrides: object) -> BootstrapSettings:
    values: dict[str, object] = {
        "mongo_address": f"{server.host}:{server.port}",
        "connect_deadline_seconds": 30,
        "mongo_admin_username": "admin",
        "mongo_admin_password": SecretStr("admin-pw"),
        "mongo_auth_password": SecretStr("auth-pw"),
        "mongo_rooms_password": SecretStr("rooms-pw"),
        "mongo_history_password": SecretStr("history-pw"),
        "mongo_notifier_password": SecretStr("notifier-pw"),
    }
    values.update(overrides)
    return BootstrapSettings(**values)  # type: ignore[arg-type]


def can_write(server: MongoServer, user: str, password: str, database: str) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(
        server.url,
        username=user,
        password=password,
        authSource="admin",
        serverSelectionTimeoutMS=2000,
    )
    try:
        client[database]["probe"].insert_one({"by": user})
        return True
    except OperationFailure:
        return False
    finally:
        client.close()


def test_mongo_creates_users_then_changes_nothing(restartable_mongo: MongoServer) -> None:
    # SecantusDB answers as the primary of its own set and has no replSetInitiate:
    # the bootstrap leaves the set alone and goes on with the users.
    first = bootstrap_mongo(mongo_settings(restartable_mongo))
    assert first == [
        "administrator admin created",
        "user roomcast-auth created",
        "user roomcast-rooms created",
        "user roomcast-history created",
        "user roomcast-notifier created",
    ]
    assert can_write(restartable_mongo, "roomcast-rooms", "rooms-pw", "roomcast_rooms")
    assert can_write(restartable_mongo, "roomcast-notifier", "notifier-pw", "roomcast_notifier")
    assert bootstrap_mongo(mongo_settings(restartable_mongo)) == []


def test_mongo_brings_a_changed_password_in(restartable_mongo: MongoServer) -> None:
    bootstrap_mongo(mongo_settings(restartable_mongo))
    rotated = mongo_settings(restartable_mongo, mongo_history_password=SecretStr("new-pw"))
    assert bootstrap_mongo(rotated) == ["user roomcast-history updated"]
    assert can_write(restartable_mongo, "roomcast-history", "new-pw", "roomcast_history")
    assert not can_write(restartable_mongo, "roomcast-history", "history-pw", "roomcast_history")
    assert bootstrap_mongo(rotated) == []


def test_mongo_wrong_admin_password_is_an_error(restartable_mongo: MongoServer) -> None:
    bootstrap_mongo(mongo_settings(restartable_mongo))
    wrong = mongo_settings(restartable_mongo, mongo_admin_password=SecretStr("not-it"))
    with pytest.raises(BootstrapError, match="cannot log in as 'admin' nor create it"):
        bootstrap_mongo(wrong)


def cli(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomcast.common.bootstrap", target],
        capture_output=True,
        text=True,
        check=False,
        timeout=CLI_TIMEOUT_SECONDS,
        env={**os.environ, **env},
    )


async def test_cli_reports_changes_and_conflicts(nats_url: str, nc: NatsClient) -> None:
    env = {"ROOMCAST_BOOTSTRAP_NATS_URL": nats_url}
    first = cli("nats", env)
    assert first.returncode == 0, first.stderr
    assert "bootstrap nats: done, 3 change(s)" in first.stdout
    second = cli("nats", env)
    assert second.returncode == 0, second.stderr
    assert "bootstrap nats: done, 0 change(s)" in second.stdout

    await nc.jetstream().delete_stream(STREAM_NAME)
    await nc.jetstream().add_stream(StreamConfig(name=STREAM_NAME, subjects=["elsewhere.*"]))
    refused = cli("nats", env)
    assert refused.returncode == 1
    assert "exists with another configuration: subjects" in refused.stderr
