"""history's readiness with an S3 file store: ``/readyz`` answers 503 naming
``files_store`` while the bucket is missing (moto's real S3-compatible server), and
recovers when it is back; checks are bounded in time and shared by concurrent probes.
With GridFS the store's gauge follows readiness's MongoDB ping."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from roomcast.common.errors import DependencyUnavailable
from roomcast.common.mongo import ping
from roomcast.history.errors import BlobStoreUnavailable
from roomcast.history.filesready import FilesStoreReadiness, gridfs_store_check
from roomcast.history.s3blobs import S3BlobStore
from roomcast.testing.processes import free_port

if TYPE_CHECKING:
    from conftest import History, Kit, S3Server


def store_up(metrics: str, backend: str = "s3") -> float | None:
    pattern = rf'^roomcast_history_files_store_up\{{backend="{backend}"\}} (\S+)$'
    match = re.search(pattern, metrics, re.M)
    return float(match.group(1)) if match else None


async def test_with_gridfs_the_store_gauge_follows_mongodb(
    start_history: Callable[..., Any], mongo_url: str
) -> None:
    history: History = await start_history()  # GridFS, the default
    ready = await history.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    metrics = (await history.client.get("/metrics")).text
    assert store_up(metrics, "gridfs") == 1.0
    assert store_up(metrics, "s3") is None

    # The same check in this process, against a MongoDB that is there, then one that
    # is not (a port nothing listens on).
    def gauge() -> float | None:
        return REGISTRY.get_sample_value("roomcast_history_files_store_up", {"backend": "gridfs"})

    up: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    down: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{free_port()}", serverSelectionTimeoutMS=300
    )
    try:
        await gridfs_store_check(lambda: ping(up))()
        assert gauge() == 1.0
        with pytest.raises(DependencyUnavailable):
            await gridfs_store_check(lambda: ping(down))()
        assert gauge() == 0.0
    finally:
        await up.close()
        await down.close()


async def test_readiness_follows_the_bucket(
    start_history: Callable[..., Any], kit: type[Kit], s3_server: S3Server
) -> None:
    bucket = await s3_server.new_bucket()
    history: History = await start_history(**s3_server.history_env(bucket))
    ready = await history.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert store_up((await history.client.get("/metrics")).text) == 1.0

    async with s3_server.client() as s3:
        await s3.delete_bucket(Bucket=bucket)

    async def not_ready() -> bool:
        return (await history.client.get("/readyz")).status_code == 503

    await kit.eventually(not_ready, within=30, what="/readyz 503 without the bucket")
    refused = await history.client.get("/readyz")
    assert refused.json()["error"]["code"] == "not_ready"
    assert "files_store" in refused.json()["error"]["message"]
    assert bucket in refused.json()["error"]["message"]
    assert store_up((await history.client.get("/metrics")).text) == 0.0

    async with s3_server.client() as s3:
        await s3.create_bucket(Bucket=bucket)

    async def ready_again() -> bool:
        return (await history.client.get("/readyz")).status_code == 200

    await kit.eventually(ready_again, within=30, what="/readyz 200 with the bucket back")
    assert store_up((await history.client.get("/metrics")).text) == 1.0


@pytest.fixture
async def s3_store(s3_server: S3Server, s3_bucket: str) -> AsyncIterator[S3BlobStore]:
    store = await S3BlobStore.open(s3_server.config(s3_bucket))
    yield store
    await store.close()


async def test_probes_share_one_request_until_the_answer_is_stale(
    s3_store: S3BlobStore, s3_server: S3Server, s3_bucket: str
) -> None:
    asked = 0

    async def counted() -> None:
        nonlocal asked
        asked += 1
        await s3_store.check_bucket()

    now = [0.0]
    readiness = FilesStoreReadiness(counted, backend="s3", cache_seconds=4, clock=lambda: now[0])
    await asyncio.gather(*(readiness() for _ in range(20)))
    assert asked == 1
    now[0] = 3.9
    await readiness()
    assert asked == 1

    async with s3_server.client() as s3:
        await s3.delete_bucket(Bucket=s3_bucket)
    await readiness()  # the cached success: the store is not asked again yet
    now[0] = 4.0
    with pytest.raises(BlobStoreUnavailable, match=r"files_store.*404"):
        await readiness()
    with pytest.raises(BlobStoreUnavailable, match="files_store"):
        await readiness()  # the cached failure
    assert asked == 2


async def test_a_store_that_does_not_answer_fails_within_the_bound(s3_server: S3Server) -> None:
    """A store that accepts the connection and never answers (a hung proxy or store):
    readiness fails after the check's timeout, not the client's 30 s per request."""
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = await S3BlobStore.open(
        s3_server.config("roomcast-silent", endpoint_url=f"http://127.0.0.1:{port}")
    )
    try:
        readiness = FilesStoreReadiness(store.check_bucket, backend="s3", timeout_seconds=0.5)
        started = asyncio.get_running_loop().time()
        with pytest.raises(BlobStoreUnavailable, match="files_store: no answer"):
            await readiness()
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        hold.set()
        await store.close()
        server.close()
        await server.wait_closed()
