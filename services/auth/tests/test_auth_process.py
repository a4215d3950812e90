"""The real ``python -m roomcast.auth`` process: starts with a generated key (even with
NATS unreachable), serves, stops cleanly on SIGTERM, and refuses to start without a key
or with a bad one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from roomcast.auth.keys import public_pem
from roomcast.common.tokens import generate_private_key_pem, key_id, load_private_key
from roomcast.testing.processes import ServiceProcess, free_port

# Seconds the process may take to exit after SIGTERM: its grace period is 10 s.
STOP_TIMEOUT_SECONDS = 20
PASSWORD = "correct horse battery staple"


def _env(mongo_url: str, db: str, port: int, **extra: str) -> dict[str, str]:
    env = {
        "ROOMCAST_AUTH_PORT": str(port),
        "ROOMCAST_AUTH_MONGO_URL": mongo_url,
        "ROOMCAST_AUTH_MONGO_DB": db,
        # Nothing listens here: the service must start and serve anyway.
        "ROOMCAST_AUTH_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "ROOMCAST_AUTH_LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_AUTH_")}


@pytest.fixture(autouse=True)
def _no_inherited_auth_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ROOMCAST_AUTH_"):
            monkeypatch.delenv(name)


async def test_process_serves_and_stops_on_sigterm(
    mongo_url: str, mongo_db_name: str, tmp_path: Path
) -> None:
    port = free_port()
    key = generate_private_key_pem()
    previous = load_private_key(generate_private_key_pem())
    previous_file = tmp_path / "previous.pem"
    previous_file.write_text(public_pem(previous))
    env = _env(
        mongo_url,
        mongo_db_name,
        port,
        ROOMCAST_AUTH_SIGNING_KEY=key.decode(),
        ROOMCAST_AUTH_PREVIOUS_PUBLIC_KEYS_FILE=str(previous_file),
    )
    base = f"http://127.0.0.1:{port}"
    proc = ServiceProcess("auth", env, ready_url=f"{base}/readyz")
    proc.start()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready"}
            kids = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
            assert kids == [
                key_id(load_private_key(key).public_key()),
                key_id(previous.public_key()),
            ]
            created = await client.post(
                "/v1/auth/register", json={"username": "proc", "password": PASSWORD}
            )
            assert created.status_code == 201, created.text
            login = await client.post(
                "/v1/auth/login", json={"username": "proc", "password": PASSWORD}
            )
            assert login.status_code == 200
            # Logout works although NATS is unreachable (the event is best effort).
            logout = await client.post(
                "/v1/auth/logout", json={"refresh_token": login.json()["refresh_token"]}
            )
            assert logout.status_code == 204
        proc.signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT_SECONDS) == 0, proc.log_tail()
        assert "auth stopped" in proc.log_path.read_text()
    finally:
        proc.stop()


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomcast.auth"],
        env={**_clean_environ(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_process_refuses_to_start_without_a_key(mongo_url: str) -> None:
    result = _run(_env(mongo_url, "unused", free_port()))
    assert result.returncode != 0
    assert "ROOMCAST_AUTH_SIGNING_KEY" in result.stderr
    assert "no signing key" in result.stderr


def test_process_refuses_a_bad_key(mongo_url: str, tmp_path: Path) -> None:
    result = _run(_env(mongo_url, "unused", free_port(), ROOMCAST_AUTH_SIGNING_KEY="garbage"))
    assert result.returncode != 0
    assert "not an unencrypted Ed25519 private key" in result.stderr
    missing = tmp_path / "absent.pem"
    result = _run(
        _env(mongo_url, "unused", free_port(), ROOMCAST_AUTH_SIGNING_KEY_FILE=str(missing))
    )
    assert result.returncode != 0
    assert "cannot read ROOMCAST_AUTH_SIGNING_KEY_FILE" in result.stderr
