"""``python -m roomcast.history``: the JetStream consumer and the read API in one process.

SIGTERM/SIGINT: the consumer stops fetching, finishes writing and acknowledging the
batch in hand, the HTTP server drains its requests, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging

from roomcast.common.durableconsumer import cancel_tasks, finish_consumer, watch_consumer
from roomcast.common.errors import DependencyUnavailable
from roomcast.common.lifecycle import (
    run,
    serve_until_stopped,
    stop_event_on_signals,
    uvicorn_server,
)
from roomcast.common.logging import configure_logging
from roomcast.common.mongo import ping, service_mongo_client
from roomcast.common.ratelimit import KeyedRateLimiter
from roomcast.common.revocations import RevocationWatcher
from roomcast.common.verifier import build_verifier
from roomcast.history.app import create_app
from roomcast.history.consumer import HistoryConsumer
from roomcast.history.errors import StreamMismatch
from roomcast.history.files import FileCatalog
from roomcast.history.filesbackend import open_blob_store
from roomcast.history.filesgc import FileCollector
from roomcast.history.filesready import files_store_readiness, gridfs_store_check
from roomcast.history.membership import MembershipChecker
from roomcast.history.retention import RetentionPurger
from roomcast.history.settings import Settings
from roomcast.history.store import HistoryStore

log = logging.getLogger("roomcast.history")


async def serve(settings: Settings) -> None:
    stop = stop_event_on_signals()
    mongo = service_mongo_client(settings, app_name="roomcast-history")
    store = HistoryStore(mongo, settings.mongo_db)
    consumer = HistoryConsumer(settings, store)
    membership = MembershipChecker(
        settings.rooms_target,
        ttl_seconds=settings.membership_cache_seconds,
        read_position_ttl_seconds=settings.read_position_membership_cache_seconds,
        timeout_seconds=settings.rooms_timeout_seconds,
        max_entries=settings.membership_cache_entries,
    )
    # Tokens of revoked sessions are refused: the shared list, on its own NATS
    # connection (the consumer's is managed by the consumer).
    revocations = RevocationWatcher()
    revocations.start(settings.nats_url, name="roomcast-history-revocations")
    verifier = build_verifier(settings, revocations)

    async def ping_mongo() -> None:
        await ping(mongo)

    # With GridFS the files live in MongoDB: its ping is the file store's check too.
    mongo_ready = ping_mongo if settings.files_backend == "s3" else gridfs_store_check(ping_mongo)

    async def readiness() -> None:
        await mongo_ready()
        if not consumer.nats_connected:
            raise DependencyUnavailable("NATS is not connected")
        if consumer.stream_mismatch:
            raise StreamMismatch("CHAT was re-created; history refuses to consume it")
        if not revocations.loaded:
            raise DependencyUnavailable("revoked sessions not loaded")
        if files_store is not None:  # an S3 bucket (filesready.py); assigned below
            await files_store()

    limiter = KeyedRateLimiter(
        capacity=settings.read_rate_capacity, per_seconds=settings.read_rate_per_seconds
    )
    catalog = FileCatalog(mongo, settings.mongo_db)
    await catalog.ensure_indexes()
    blobs = await open_blob_store(settings, mongo)
    files_store = files_store_readiness(settings, blobs)
    app = create_app(
        store=store,
        verifier=verifier,
        membership=membership,
        limiter=limiter,
        readiness=readiness,
        files=(catalog, blobs, settings.files_max_bytes),
    )
    server = uvicorn_server(
        app, settings.host, settings.port, grace_seconds=settings.shutdown_grace_seconds
    )
    consumer_task = asyncio.create_task(consumer.run(stop), name="history-consumer")
    # The consumer only returns when asked to; anything else is a crash, and a history
    # that serves reads but stores nothing must not look healthy.
    watch_consumer(consumer_task, stop)
    # Messages past their room's retention period leave in the background (retention.py),
    # and the files only they shared with them (retentionfiles.py).
    purger = RetentionPurger(settings, mongo, blobs=blobs)
    purge_task = asyncio.create_task(purger.run(stop), name="history-retention")
    # Files no live message shares are collected after a grace period (filesgc.py):
    # never shared, or whose messages were deleted.
    collector = FileCollector(
        catalog,
        blobs,
        grace_seconds=settings.files_gc_grace_seconds,
        batch=settings.files_gc_batch,
        interval_seconds=settings.files_gc_interval_seconds,
    )
    gc_task = asyncio.create_task(collector.run(stop), name="history-files-gc")
    log.info("history listening on %s:%d", settings.host, settings.port)
    try:
        await serve_until_stopped(server, stop)
        # The consumer finishes its batch (bounded by the grace period for retries).
        await finish_consumer(consumer_task, grace_seconds=settings.shutdown_grace_seconds)
    finally:
        await cancel_tasks(consumer_task, purge_task, gc_task)
        await purger.close()
        await blobs.close()
        await consumer.close()
        await membership.close()
        await revocations.close()
        await verifier.close()
        await mongo.close()
    log.info("history stopped")


def main() -> None:
    settings = Settings()
    configure_logging("history", settings.log_level)
    run(lambda: serve(settings))


if __name__ == "__main__":
    main()
