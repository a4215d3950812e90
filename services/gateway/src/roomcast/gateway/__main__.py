"""``python -m roomcast.gateway``: run one gateway replica until SIGTERM, then drain."""

from __future__ import annotations

import logging

from roomcast.common.lifecycle import run, stop_event_on_signals
from roomcast.common.logging import configure_logging
from roomcast.gateway.server import Gateway
from roomcast.gateway.settings import Settings

log = logging.getLogger("roomcast.gateway")


async def serve() -> None:
    settings = Settings()
    configure_logging("gateway", settings.log_level)
    # picows logs every connection at INFO and every client protocol error (an
    # oversized frame...) at ERROR: a log line per hostile frame. The gateway's
    # listener logs its own failures; picows' are counted by close code instead.
    logging.getLogger("picows").setLevel(logging.CRITICAL)
    stop = stop_event_on_signals()
    gateway = Gateway(settings)
    await gateway.start()
    log.info("gateway listening", extra={"host": settings.host, "port": gateway.port})
    await stop.wait()
    log.info("gateway draining")
    await gateway.stop()
    log.info("gateway stopped")


def main() -> None:
    run(serve)


if __name__ == "__main__":
    main()
