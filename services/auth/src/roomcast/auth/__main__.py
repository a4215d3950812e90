"""``python -m roomcast.auth``: the auth service process.

Start-up order: settings and signing key (refuse to start without one), logging,
MongoDB indexes (retried until MongoDB answers or SIGTERM), NATS in the background,
then serve. SIGTERM stops accepting, finishes in-flight requests, closes NATS and
MongoDB, and exits 0.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta

from pydantic import ValidationError

from roomcast.auth.app import auth_service, create_app
from roomcast.auth.errors import ConfigurationError
from roomcast.auth.events import NatsEventPublisher
from roomcast.auth.keys import build_signer
from roomcast.auth.sessions import Revocation
from roomcast.auth.settings import Settings
from roomcast.common.lifecycle import (
    run,
    serve_until_stopped,
    stop_event_on_signals,
    uvicorn_server,
)
from roomcast.common.logging import configure_logging
from roomcast.common.mongo import UNAVAILABLE_ERRORS, service_mongo_client
from roomcast.common.retry import Backoff, retry_until_ready
from roomcast.common.tokens import LEEWAY_SECONDS, TokenSigner

log = logging.getLogger("roomcast.auth")

# Wait between attempts to create indexes while MongoDB is not reachable yet (e.g. the
# whole stack starting at once); each attempt already waits mongo_timeout_ms.
INDEX_RETRY_SECONDS = 1.0
# Revocations rewritten to the NATS bucket at each connection, newest first: far above
# the logouts of one token lifetime at any realistic rate, and a bounded query.
MAX_REWRITTEN_REVOCATIONS = 200_000
# Exit status for a configuration the service cannot run with (EX_CONFIG).
EXIT_CONFIG = 78


async def serve(settings: Settings, signer: TokenSigner) -> None:
    stop = stop_event_on_signals()
    # A registration, a login's session and refresh token, and a refresh rotation are
    # journaled and majority-acknowledged before the 2xx (common/mongo.py).
    mongo = service_mongo_client(settings, app_name="roomcast-auth")
    publisher = NatsEventPublisher(
        settings.nats_url,
        # Entries live as long as any token of their session could be accepted.
        revocation_ttl_seconds=settings.access_ttl_seconds + LEEWAY_SECONDS,
        replicas=settings.revocations_replicas,
    )
    app = create_app(settings, mongo, signer, publisher)
    service = auth_service(app)
    try:
        await retry_until_ready(
            "MongoDB",
            service.ensure_indexes,
            errors=UNAVAILABLE_ERRORS,
            stop=stop,
            backoff=Backoff.fixed(INDEX_RETRY_SECONDS),
            log=log,
        )
        if stop.is_set():
            return
        sessions = service.sessions

        async def recent_revocations() -> list[Revocation]:
            window = timedelta(seconds=settings.access_ttl_seconds + LEEWAY_SECONDS)
            return await sessions.revoked_since(
                sessions.now() - window, limit=MAX_REWRITTEN_REVOCATIONS
            )

        publisher.start(backlog=recent_revocations)
        await service.hasher.warm_up()
        server = uvicorn_server(
            app, settings.host, settings.port, grace_seconds=settings.shutdown_grace_seconds
        )
        log.info(
            "auth listening",
            extra={"host": settings.host, "port": settings.port, "kid": signer.kid},
        )
        await serve_until_stopped(server, stop)
    finally:
        service.hasher.close()
        await publisher.close()
        await mongo.close()
        log.info("auth stopped")


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"roomcast-auth: invalid configuration:\n{exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    configure_logging("auth", settings.log_level)
    try:
        signer = build_signer(settings)
    except ConfigurationError as exc:
        log.error("cannot start: %s", exc)
        print(f"roomcast-auth: cannot start: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    run(lambda: serve(settings, signer))


if __name__ == "__main__":
    main()
