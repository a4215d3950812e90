"""NATS down when a gateway process starts: its start-up loop logs each failed
attempt while /readyz answers 503, the gateway becomes ready once nats-server starts,
and SIGTERM during the outage ends the process promptly (nats-py is not left retrying
the first connection out of the loop's sight)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from gateway_testkit import GatewayProc, base_env

from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.polling import eventually
from roomcast.testing.processes import ManagedProcess, NatsServer, free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Start-up retries every 0.5 s: the first attempts and a loaded machine's process
# start (imports, the port bound) fit in this.
NOT_READY_WITHIN_SECONDS = 20.0
# After nats-server starts: one retry delay, the CHAT stream, auth's keys, the hub.
READY_WITHIN_SECONDS = 20.0
# SIGTERM while NATS is down: the drain has nothing to wait for; the slack of a loaded
# machine, far below a hang.
STOP_WITHIN_SECONDS = 10.0


def _start_unready(env: dict[str, str]) -> GatewayProc:
    """A gateway process started without waiting for its readiness."""
    proc = GatewayProc(env, name="gateway-nats-startup")
    ManagedProcess.start(proc)
    return proc


async def _readyz(proc: GatewayProc) -> int:
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            return (await client.get(f"{proc.http_url}/readyz")).status_code
    except httpx.HTTPError:
        return 0


def _logged_nats_down(proc: GatewayProc) -> bool:
    proc.check_alive()
    return "NATS not reachable yet" in proc.log_path.read_text(errors="replace")


async def test_nats_down_at_start_is_logged_and_ready_once_nats_starts(
    tmp_path: Path, gw_jwks: JwksServer, gw_rooms: FakeRooms
) -> None:
    nats_port = free_port()
    proc = _start_unready(base_env(f"nats://127.0.0.1:{nats_port}", gw_jwks.url, gw_rooms.target))
    nats: NatsServer | None = None
    try:
        await eventually(
            lambda: _logged_nats_down(proc), "NATS-down warning", within=NOT_READY_WITHIN_SECONDS
        )
        assert await _readyz(proc) == 503
        nats = NatsServer(nats_port, str(tmp_path))
        nats.start()
        await eventually(
            lambda: _readyz_is(proc, 200), "gateway ready", within=READY_WITHIN_SECONDS
        )
    finally:
        await proc.astop()
        if nats is not None:
            nats.stop()


async def _readyz_is(proc: GatewayProc, status: int) -> bool:
    return await _readyz(proc) == status


async def test_sigterm_while_nats_is_down_at_start_stops_promptly(
    gw_jwks: JwksServer, gw_rooms: FakeRooms
) -> None:
    proc = _start_unready(base_env(f"nats://127.0.0.1:{free_port()}", gw_jwks.url, gw_rooms.target))
    try:
        await eventually(
            lambda: _logged_nats_down(proc), "NATS-down warning", within=NOT_READY_WITHIN_SECONDS
        )
        proc.signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, STOP_WITHIN_SECONDS) == 0, proc.log_tail()
    finally:
        await proc.astop()
