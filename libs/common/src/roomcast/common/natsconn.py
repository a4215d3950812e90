"""NATS connections tuned for long-lived services."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NatsClient
from prometheus_client import Gauge

log = logging.getLogger(__name__)

# Ping every 10 s and declare the server gone after 3 missed pongs: a dead TCP peer is
# noticed in ~30 s instead of the kernel's keepalive (minutes).
PING_INTERVAL_SECONDS = 10
MAX_OUTSTANDING_PINGS = 3
# Between reconnect attempts; short so a restarted server is found again quickly.
RECONNECT_WAIT_SECONDS = 0.5
# Bytes buffered for publishes while disconnected; beyond this publishes fail fast
# rather than growing memory without bound.
RECONNECT_BUFFER_BYTES = 8 * 1024 * 1024


_CONNECTED_GAUGES: dict[str, Gauge] = {}


class _FirstConnectFailed(Exception):
    """Every server refused the first connection (``fail_fast``)."""


def service_label(name: str) -> str:
    """The ``<service>`` of a connection name ``roomcast-<service>[-suffix]``, as
    metric names use it."""
    return re.sub(r"[^a-z0-9_]", "_", name.removeprefix("roomcast-").split("-")[0].lower())


def connected_gauge(name: str) -> Gauge:
    """``roomcast_<service>_nats_connected``: 1 while the connection is up, so an alert
    can tell "this service lost NATS" apart from "NATS is down"."""
    service = service_label(name)
    if service not in _CONNECTED_GAUGES:
        _CONNECTED_GAUGES[service] = Gauge(
            f"roomcast_{service}_nats_connected",
            "1 while this process is connected to NATS, else 0.",
        )
    return _CONNECTED_GAUGES[service]


async def connect_nats(
    url: str,
    *,
    name: str,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
    on_disconnected: Callable[[], Awaitable[None]] | None = None,
    connect_timeout: float = 5.0,
    fail_fast: bool = False,
) -> NatsClient:
    """Connect to NATS, retrying forever after the first successful connection.

    ``name`` is ``roomcast-<service>[-suffix]``; it names the connection on the server
    and the ``roomcast_<service>_nats_connected`` gauge.

    The first connection is retried forever too (nats-py's ``max_reconnect_attempts``
    covers it), unless ``fail_fast``: then each server is tried once and
    ``NoServersError`` raised, so a caller with its own retry loop can count the
    outage, log it and still honour its stop signal.
    """
    connected = connected_gauge(name)
    servers = [u.strip() for u in url.split(",") if u.strip()]
    first_failures = 0
    connecting = True

    async def error_cb(exc: Exception) -> None:
        nonlocal first_failures
        log.warning("nats error: %s", exc)
        if fail_fast and connecting:
            first_failures += 1
            # nats-py tries the servers in turn: after this many, each failed once.
            # Raised from the callback (of a type nats-py does not catch), it ends
            # nats-py's first-connection loop.
            if first_failures >= len(servers):
                raise _FirstConnectFailed from exc

    async def disconnected_cb() -> None:
        log.warning("nats disconnected")
        connected.set(0)
        if on_disconnected is not None:
            await on_disconnected()

    async def reconnected_cb() -> None:
        log.info("nats reconnected")
        connected.set(1)
        if on_reconnected is not None:
            await on_reconnected()

    async def closed_cb() -> None:
        connected.set(0)

    client = NatsClient()
    # nats-py annotates its timings as int, but they are seconds and fractions work
    # (nats.connect, untyped, passes them through the same way).
    connect: Callable[..., Awaitable[None]] = client.connect
    try:
        await connect(
            servers=servers,
            name=name,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_SECONDS,
            ping_interval=PING_INTERVAL_SECONDS,
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            pending_size=RECONNECT_BUFFER_BYTES,
            allow_reconnect=True,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            closed_cb=closed_cb,
        )
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await client.close()
        if isinstance(exc, _FirstConnectFailed):
            raise nats.errors.NoServersError from exc.__cause__
        raise
    connecting = False
    connected.set(1)
    return client
