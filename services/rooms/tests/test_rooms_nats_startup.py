"""NATS down when ``python -m roomcast.rooms`` starts: the start-up loop logs each
failed attempt, rooms becomes ready once nats-server starts, and SIGTERM during the
outage ends the process at once (nats-py is not left retrying the first connection
out of the loop's sight)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from roomcast.testing.fakes import JwksServer
from roomcast.testing.processes import NatsServer, ServiceProcess, free_port, wait_until

# Start-up retries every second (STARTUP_RETRY_SECONDS): two attempts and a loaded
# machine's process start fit in this.
NOT_READY_WITHIN_SECONDS = 20.0
# After nats-server starts: one retry delay, the revoked sessions loaded, MongoDB
# indexes created.
READY_WITHIN_SECONDS = 20.0
# SIGTERM while NATS is down: the start-up loop stops at once; this is the slack of a
# loaded machine, far below the hang it guards against.
STOP_WITHIN_SECONDS = 10.0


def _rooms(nats_port: int, mongo_url: str, jwks_url: str) -> tuple[ServiceProcess, int]:
    http_port = free_port()
    env = {
        "ROOMCAST_ROOMS_MONGO_URL": mongo_url,
        "ROOMCAST_ROOMS_MONGO_DB": "rooms_nats_startup",
        "ROOMCAST_ROOMS_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "ROOMCAST_ROOMS_JWKS_URL": jwks_url,
        "ROOMCAST_ROOMS_GRPC_PORT": str(free_port()),
        "ROOMCAST_ROOMS_HTTP_PORT": str(http_port),
    }
    # No ready_url: start() must not wait for a readiness NATS being down prevents.
    return ServiceProcess("rooms", env), http_port


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _logged_nats_down(proc: ServiceProcess) -> bool:
    proc.check_alive()
    return "NATS not reachable yet" in proc.log_path.read_text(errors="replace")


def test_nats_down_at_start_is_logged_and_ready_once_nats_starts(
    tmp_path: Path, mongo_url: str, jwks_server: JwksServer
) -> None:
    nats_port = free_port()
    proc, http_port = _rooms(nats_port, mongo_url, jwks_server.url)
    nats: NatsServer | None = None
    proc.start()
    try:
        wait_until(
            lambda: _logged_nats_down(proc), timeout=NOT_READY_WITHIN_SECONDS, what="NATS-down log"
        )
        assert not _ready(http_port)
        nats = NatsServer(nats_port, str(tmp_path))
        nats.start()
        wait_until(lambda: _ready(http_port), timeout=READY_WITHIN_SECONDS, what="rooms ready")
    finally:
        proc.stop()
        if nats is not None:
            nats.stop()


def test_sigterm_while_nats_is_down_at_start_stops_promptly(
    mongo_url: str, jwks_server: JwksServer
) -> None:
    proc, _ = _rooms(free_port(), mongo_url, jwks_server.url)
    proc.start()
    try:
        wait_until(
            lambda: _logged_nats_down(proc), timeout=NOT_READY_WITHIN_SECONDS, what="NATS-down log"
        )
        proc.signal(signal.SIGTERM)
        assert proc.wait(STOP_WITHIN_SECONDS) == 0, proc.log_tail()
    finally:
        proc.stop()
