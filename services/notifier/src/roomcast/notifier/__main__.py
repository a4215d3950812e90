"""``python -m roomcast.notifier``: the consumer, the push and webhook workers and the
inbox API in one process.

SIGTERM/SIGINT: the consumer stops fetching and finishes (writes and acknowledges) the
batch in hand, the workers finish the attempts in flight, the HTTP server drains its
requests, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

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
from roomcast.notifier.app import create_app
from roomcast.notifier.consumer import NotifierConsumer
from roomcast.notifier.directory import RoomDirectory, ServiceSession
from roomcast.notifier.presence import PresenceProbe
from roomcast.notifier.pushworker import PushWorker
from roomcast.notifier.settings import Settings
from roomcast.notifier.store import NotifierStore
from roomcast.notifier.webhooks import WebhookWorker
from roomcast.notifier.webpush import WebPushSender

log = logging.getLogger("roomcast.notifier")


async def serve(settings: Settings) -> None:
    stop = stop_event_on_signals()
    mongo = service_mongo_client(settings, app_name="roomcast-notifier")
    store = NotifierStore(mongo, settings.mongo_db)
    # Redirects are never followed: a push endpoint or webhook answering 3xx is a failed
    # attempt, not a way to make the notifier request another address.
    http = httpx.AsyncClient(follow_redirects=False)
    sender = WebPushSender(
        vapid_private_key=settings.vapid_private_key.get_secret_value(),
        subject=settings.vapid_subject,
        http=http,
        ttl_seconds=settings.push_ttl_seconds,
        timeout_seconds=settings.push_timeout_seconds,
    )
    presence = PresenceProbe(timeout_seconds=settings.presence_timeout_seconds)
    pushes = PushWorker(settings, store, sender, presence)
    webhooks = WebhookWorker(settings, store, http)

    def written() -> None:
        pushes.wake()
        webhooks.wake()

    revocations = RevocationWatcher()
    revocations.start(settings.nats_url, name="roomcast-notifier-revocations")
    verifier = build_verifier(settings, revocations)
    directory = RoomDirectory(settings, ServiceSession(settings, http, verifier))
    consumer = NotifierConsumer(settings, store, directory, on_written=written)

    async def readiness() -> None:
        await ping(mongo)
        if not consumer.nats_connected:
            raise DependencyUnavailable("NATS is not connected")
        if not revocations.loaded:
            raise DependencyUnavailable("revoked sessions not loaded")

    app = create_app(
        settings=settings,
        store=store,
        verifier=verifier,
        limiter=KeyedRateLimiter(
            capacity=settings.api_rate_capacity, per_seconds=settings.api_rate_per_seconds
        ),
        vapid_public_key=sender.public_key,
        readiness=readiness,
    )
    server = uvicorn_server(
        app, settings.host, settings.port, grace_seconds=settings.shutdown_grace_seconds
    )
    tasks: list[asyncio.Task[None]] = []

    async def background() -> None:
        if not await consumer.connect(stop):
            return
        assert consumer.nats is not None
        await presence.start(consumer.nats)
        tasks.append(asyncio.create_task(pushes.run(stop), name="notifier-push"))
        tasks.append(asyncio.create_task(webhooks.run(stop), name="notifier-webhooks"))
        await consumer.run(stop)

    main_task = asyncio.create_task(background(), name="notifier-consumer")
    # The consumer only returns when asked to; anything else is a crash, and a notifier
    # that serves the inbox but fills it no more must not look healthy.
    watch_consumer(main_task, stop)
    log.info("notifier listening on %s:%d", settings.host, settings.port)
    try:
        await serve_until_stopped(server, stop)
        # The consumer finishes its batch, the workers their attempts in flight.
        await finish_consumer(
            main_task, grace_seconds=settings.shutdown_grace_seconds, others=tasks
        )
    finally:
        await cancel_tasks(main_task, *tasks)
        await presence.stop()
        await consumer.close()
        await directory.close()
        await http.aclose()
        await revocations.close()
        await verifier.close()
        await mongo.close()
    log.info("notifier stopped")


def main() -> None:
    settings = Settings()  # the required secrets come from the environment
    configure_logging("notifier", settings.log_level)
    # httpx logs every request at INFO: one line per push and webhook attempt would
    # drown the service's own log; failures are logged by the workers.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run(lambda: serve(settings))


if __name__ == "__main__":
    main()
