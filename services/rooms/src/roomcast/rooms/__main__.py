"""``python -m roomcast.rooms``: the rooms gRPC service and its HTTP side port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from roomcast.common.lifecycle import (
    run,
    serve_until_stopped,
    stop_event_on_signals,
    uvicorn_server,
)
from roomcast.common.logging import configure_logging
from roomcast.common.mongo import UNAVAILABLE_ERRORS, service_mongo_client
from roomcast.common.natsconn import connect_nats
from roomcast.common.retry import Backoff, retry_until_ready
from roomcast.common.revocations import RevocationWatcher
from roomcast.common.verifier import build_verifier
from roomcast.rooms.server import RunningRooms, create_http_app, start_server
from roomcast.rooms.settings import Settings

log = logging.getLogger("roomcast.rooms")

T = TypeVar("T")

# Pause between attempts to reach MongoDB or NATS at startup: dependencies started at
# the same time (docker compose, a fresh cluster) usually appear within seconds.
STARTUP_RETRY_SECONDS = 1.0
# Time allowed to hand buffered events to NATS at shutdown.
NATS_DRAIN_SECONDS = 2.0


async def _until_ready(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    errors: tuple[type[BaseException], ...],
    stop: asyncio.Event,
) -> T | None:
    """Retry ``attempt`` until it succeeds (its value) or ``stop`` is set (None)."""
    backoff = Backoff.fixed(STARTUP_RETRY_SECONDS)
    return await retry_until_ready(
        what, attempt, errors=errors, stop=stop, backoff=backoff, log=log
    )


def _loaded(revocations: RevocationWatcher) -> Callable[[], Awaitable[bool]]:
    async def attempt() -> bool:
        async with asyncio.timeout(STARTUP_RETRY_SECONDS):
            await revocations.wait_loaded()
        return True

    return attempt


async def serve(settings: Settings) -> None:
    stop = stop_event_on_signals()
    revocations = RevocationWatcher()
    # Tokens of revoked sessions are refused (``revocations``, attached to NATS once
    # connected).
    verifier = build_verifier(settings, revocations, jwks_file=settings.jwks_file)
    # Every membership, role and room write is journaled and majority-acknowledged
    # before the RPC replies (common/mongo.py).
    mongo = service_mongo_client(settings, app_name="roomcast-rooms")
    nats: NatsClient | None = None
    running: RunningRooms | None = None
    try:
        nats = await _until_ready(
            "NATS",
            # fail_fast: each failed attempt comes back to this loop (logged, and SIGTERM
            # honoured) instead of nats-py retrying the first connection out of sight.
            lambda: connect_nats(settings.nats_url, name="roomcast-rooms", fail_fast=True),
            (NatsError, OSError, TimeoutError),
            stop,
        )
        if nats is None:
            return
        nats_client = nats
        revocations.attach(nats_client)
        # Serve once the revoked sessions are known (milliseconds with NATS up); until
        # then every token naming a session would be refused with UNAVAILABLE anyway.
        if (
            await _until_ready("revoked sessions", _loaded(revocations), (TimeoutError,), stop)
            is None
        ):
            return
        running = await _until_ready(
            "MongoDB",
            lambda: start_server(
                settings, verifier=verifier, mongo_client=mongo, nats_client=nats_client
            ),
            UNAVAILABLE_ERRORS,
            stop,
        )
        if running is None:
            return
        http = uvicorn_server(
            create_http_app(running.store),
            settings.host,
            settings.http_port,
            grace_seconds=settings.shutdown_grace_seconds,
        )
        log.info("rooms ready", extra={"grpc_port": running.port, "http_port": settings.http_port})
        await serve_until_stopped(http, stop)
    finally:
        log.info("rooms stopping")
        if running is not None:
            await running.stop(settings.shutdown_grace_seconds)
        if nats is not None:
            try:
                await asyncio.wait_for(nats.drain(), NATS_DRAIN_SECONDS)
            except (NatsError, TimeoutError) as exc:
                log.warning("nats drain: %r", exc)
        await revocations.close()
        await verifier.close()
        await mongo.close()
        log.info("rooms stopped")


def main() -> None:
    settings = Settings()
    configure_logging("rooms", settings.log_level)
    run(lambda: serve(settings))


if __name__ == "__main__":
    main()
