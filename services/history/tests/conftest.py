"""Helpers for history's tests: chat records in the gateways' format, a JetStream
publisher, the consumer run in-process, and the history process."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import orjson
import pytest
from aiobotocore.session import get_session
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pymongo import AsyncMongoClient

from roomcast.common.chatstream import StreamSettings, ensure_chat_stream
from roomcast.common.subjects import STREAM_NAME, room_subject
from roomcast.history.consumer import HistoryConsumer
from roomcast.history.files import BLOB_BUCKET
from roomcast.history.s3blobs import S3Config
from roomcast.history.settings import Settings
from roomcast.history.store import HistoryStore
from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.polling import eventually
from roomcast.testing.processes import (
    START_TIMEOUT_SECONDS,
    ManagedProcess,
    ServiceProcess,
    free_port,
    port_accepts,
    wait_until,
)


class Kit:
    """Record builders (the gateways' payload format) and polling, for the tests."""

    @staticmethod
    def oid() -> str:
        return uuid.uuid4().hex[:24]

    @staticmethod
    def now_iso() -> str:
        return dt.datetime.now(dt.UTC).isoformat()

    @staticmethod
    def sender(user_id: str) -> dict[str, Any]:
        return {
            "id": user_id,
            "username": f"u{user_id[:6]}",
            "display_name": f"User {user_id[:6]}",
            "avatar_url": None,
        }

    @staticmethod
    def message(
        room: str,
        user_id: str,
        content: str,
        *,
        to: str | None = None,
        client_id: str | None = None,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "kind": "message",
            "room": room,
            "sender": Kit.sender(user_id),
            "body": {"type": "text", "content": content},
            "sent_at": Kit.now_iso(),
            "client_id": client_id or uuid.uuid4().hex,
        }
        if to is not None:
            record["to"] = to
        return record

    @staticmethod
    def edit(room: str, user_id: str, target_seq: int, content: str) -> dict[str, Any]:
        return {
            "kind": "edit",
            "room": room,
            "target_seq": target_seq,
            "sender": Kit.sender(user_id),
            "body": {"type": "text", "content": content},
            "sent_at": Kit.now_iso(),
        }

    @staticmethod
    def delete(room: str, user_id: str, target_seq: int) -> dict[str, Any]:
        return {
            "kind": "delete",
            "room": room,
            "target_seq": target_seq,
            "sender": Kit.sender(user_id),
            "sent_at": Kit.now_iso(),
        }

    # ``kit.eventually(condition, within=..., what=...)``: the shared poll with a deadline.
    eventually = staticmethod(eventually)


@dataclass
class Publisher:
    """Publishes records as a gateway does: JetStream, with a Nats-Msg-Id header."""

    nc: NatsClient
    js: JetStreamContext
    acked: list[int] = field(default_factory=list)

    async def publish(self, room: str, record: dict[str, Any] | bytes, msg_id: str = "") -> int:
        payload = record if isinstance(record, bytes) else orjson.dumps(record)
        ack = await self.js.publish(
            room_subject(room), payload, headers={"Nats-Msg-Id": msg_id or uuid.uuid4().hex}
        )
        self.acked.append(ack.seq)
        return int(ack.seq)

    async def stream_messages(self) -> int:
        info = await self.js.stream_info(STREAM_NAME)
        return int(info.state.messages)


@pytest.fixture
async def publisher(nats_url: str) -> AsyncIterator[Publisher]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_chat_stream(js, StreamSettings(), update=False)
    yield Publisher(nc, js)
    await nc.close()


@pytest.fixture
def make_settings(nats_url: str, mongo_url: str, mongo_db_name: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "nats_url": nats_url,
            "mongo_url": mongo_url,
            "mongo_db": mongo_db_name,
            "mongo_timeout_ms": 1000,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def mongo(mongo_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, serverSelectionTimeoutMS=2000
    )
    yield client
    await client.close()


@contextlib.asynccontextmanager
async def _running_consumer(settings: Settings) -> AsyncIterator[HistoryConsumer]:
    """The consumer in this process, stopped (its batch finished) on exit."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo_url,
        serverSelectionTimeoutMS=settings.mongo_timeout_ms,
        connectTimeoutMS=settings.mongo_timeout_ms,
        socketTimeoutMS=settings.mongo_timeout_ms * 2,
    )
    consumer = HistoryConsumer(settings, HistoryStore(client, settings.mongo_db))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await consumer.close()
        await client.close()


def _history_process(
    *,
    nats_url: str,
    mongo_url: str,
    mongo_db: str,
    jwks_url: str = "http://127.0.0.1:9/.well-known/jwks.json",
    rooms_target: str = "127.0.0.1:9",
    **extra: str,
) -> ServiceProcess:
    port = free_port()
    env = {
        "ROOMCAST_HISTORY_PORT": str(port),
        "ROOMCAST_HISTORY_NATS_URL": nats_url,
        "ROOMCAST_HISTORY_MONGO_URL": mongo_url,
        "ROOMCAST_HISTORY_MONGO_DB": mongo_db,
        "ROOMCAST_HISTORY_JWKS_URL": jwks_url,
        "ROOMCAST_HISTORY_ROOMS_TARGET": rooms_target,
        "ROOMCAST_HISTORY_MONGO_TIMEOUT_MS": "1000",
    }
    env.update({f"ROOMCAST_HISTORY_{k.upper()}": v for k, v in extra.items()})
    proc = ServiceProcess("history", env, ready_url=f"http://127.0.0.1:{port}/readyz")
    proc.port = port
    return proc


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


RunConsumer = Callable[[Settings], contextlib.AbstractAsyncContextManager[HistoryConsumer]]


@pytest.fixture
def run_consumer() -> RunConsumer:
    """``async with run_consumer(settings) as consumer:`` runs the consumer in-process."""
    return _running_consumer


@pytest.fixture
def history_proc() -> Iterator[Callable[..., ServiceProcess]]:
    """Build (not start) history processes; every one is stopped at teardown."""
    made: list[ServiceProcess] = []

    def make(**kwargs: Any) -> ServiceProcess:
        proc = _history_process(**kwargs)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()


class History:
    """A started history process and an HTTP client for it."""

    def __init__(self, proc: ServiceProcess, client: httpx.AsyncClient) -> None:
        self.proc = proc
        self.client = client

    async def page(self, room: str, token: str | None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.get(f"/v1/rooms/{room}/messages", params=params, headers=headers)

    async def all_pages(self, room: str, token: str, limit: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": limit}
        while True:
            response = await self.page(room, token, **params)
            assert response.status_code == 200, response.text
            body = response.json()
            assert len(body["items"]) <= limit
            items.extend(body["items"])
            if body["next_before"] is None:
                return items
            assert body["next_before"] == body["items"][-1]["seq"]
            params["before"] = body["next_before"]

    async def wait_stored(self, kit: type[Kit], room: str, token: str, seq: int) -> None:
        async def stored() -> bool:
            response = await self.client.get(
                f"/v1/rooms/{room}/summary", headers={"Authorization": f"Bearer {token}"}
            )
            return response.status_code == 200 and response.json()["last_seq"] >= seq

        await kit.eventually(stored, within=30, what=f"seq {seq} stored")


@pytest.fixture
async def start_history(
    history_proc: Callable[..., ServiceProcess],
    nats_url: str,
    mongo_url: str,
    mongo_db_name: str,
    jwks_server: JwksServer,
    fake_rooms: FakeRooms,
) -> AsyncIterator[Callable[..., Any]]:
    clients: list[httpx.AsyncClient] = []

    async def start(**overrides: str) -> History:
        settings = {
            "nats_url": nats_url,
            "mongo_url": mongo_url,
            "mongo_db": mongo_db_name,
            "jwks_url": jwks_server.url,
            "rooms_target": fake_rooms.target,
        }
        settings.update(overrides)
        proc = history_proc(**settings)
        await asyncio.to_thread(proc.start)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{proc.port}", timeout=10)
        clients.append(client)
        return History(proc, client)

    yield start
    for client in clients:
        await client.aclose()


@dataclass(frozen=True)
class S3Server:
    """moto's standalone S3-compatible server (a real HTTP server in its own process)
    and the settings that point history at one of its buckets."""

    endpoint_url: str
    region: str = "us-east-1"
    # moto accepts any keys; history's settings require some, as for a real store.
    access_key_id: str = "roomcast-test-key"
    secret_access_key: str = "roomcast-test-secret"

    def client(self) -> Any:
        """An async S3 client (``async with``) for the tests' own checks."""
        return get_session().create_client(
            "s3",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def config(self, bucket: str, **overrides: Any) -> S3Config:
        values: dict[str, Any] = {
            "bucket": bucket,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "endpoint_url": self.endpoint_url,
            "addressing_style": "path",
        }
        values.update(overrides)
        return S3Config(**values)

    async def new_bucket(self) -> str:
        """A new, empty bucket."""
        name = f"roomcast-{uuid.uuid4().hex[:16]}"
        async with self.client() as client:
            await client.create_bucket(Bucket=name)
        return name

    def history_env(self, bucket: str) -> dict[str, str]:
        """``start_history`` overrides that select this bucket."""
        return {
            "files_backend": "s3",
            "files_s3_bucket": bucket,
            "files_s3_region": self.region,
            "files_s3_endpoint_url": self.endpoint_url,
            "files_s3_access_key_id": self.access_key_id,
            "files_s3_secret_access_key": self.secret_access_key,
            "files_s3_addressing_style": "path",
        }


@dataclass
class BlobStorage:
    """What a blob store's storage holds: GridFS's collections in ``db_name``, or the
    S3 bucket when ``s3`` is set; ``env`` selects it in ``start_history``."""

    mongo: AsyncMongoClient[dict[str, Any]]
    db_name: str
    s3: S3Server | None = None
    bucket: str = ""

    @property
    def name(self) -> str:
        return "gridfs" if self.s3 is None else "s3"

    @property
    def env(self) -> dict[str, str]:
        return {} if self.s3 is None else self.s3.history_env(self.bucket)

    async def stored(self) -> tuple[int, int]:
        """(complete blobs, pieces of unfinished uploads) in the storage."""
        if self.s3 is None:
            db = self.mongo[self.db_name]
            ids = [d["_id"] async for d in db[f"{BLOB_BUCKET}.files"].find({}, {"_id": 1})]
            chunks = db[f"{BLOB_BUCKET}.chunks"]
            orphans = await chunks.count_documents({"files_id": {"$nin": ids}})
            return len(ids), orphans
        async with self.s3.client() as client:
            objects = await client.list_objects_v2(Bucket=self.bucket)
            uploads = await client.list_multipart_uploads(Bucket=self.bucket)
        return int(objects.get("KeyCount", 0)), len(uploads.get("Uploads", []))


@pytest.fixture(params=["gridfs", "s3"])
async def blob_storage(
    request: pytest.FixtureRequest, mongo: AsyncMongoClient[dict[str, Any]], mongo_db_name: str
) -> BlobStorage:
    """Each blob store backend in turn (moto's server is only started for s3)."""
    if request.param == "gridfs":
        return BlobStorage(mongo, mongo_db_name)
    s3: S3Server = request.getfixturevalue("s3_server")
    return BlobStorage(mongo, mongo_db_name, s3, await s3.new_bucket())


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    port = free_port()
    proc = ManagedProcess(
        "moto-s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    )
    proc.start()
    try:
        wait_until(
            lambda: proc.check_alive() and port_accepts("127.0.0.1", port),
            timeout=START_TIMEOUT_SECONDS,
            what=f"moto's S3 server on {port}",
        )
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        proc.stop()


@pytest.fixture
async def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket for one test."""
    return await s3_server.new_bucket()
