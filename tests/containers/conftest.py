"""Fixtures of the container tests: the compose stack under podman, built from the
images `make images` made and the local infrastructure stand-ins (built once, cached).

Every test module here is marked `containers` (pytestmark) and excluded from the default run:
`make test-containers` and `make test-kube` run them (CI does).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from podman_stack import (
    POLL_SECONDS,
    READY_DEADLINE_SECONDS,
    ComposeStack,
    PodmanStack,
    compose_binary,
    render,
)

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("auth", "rooms", "history", "gateway")
TAG = os.environ.get("ROOMCAST_TAG", "dev")
# Building the stand-ins from scratch (two apt installs, two pip installs) takes a few
# minutes on a loaded 2-core runner; cached, it returns at once.
STANDIN_BUILD_TIMEOUT_SECONDS = 900


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_images() -> None:
    if shutil.which("podman") is None:
        pytest.fail("podman is required: make setup installs it")
    missing = [
        f"roomcast/{s}:{TAG}"
        for s in SERVICES
        if subprocess.run(
            ["podman", "image", "exists", f"roomcast/{s}:{TAG}"], check=False
        ).returncode
    ]
    if missing:
        pytest.fail(f"images missing: {missing}: run make images")
    built = subprocess.run(
        [str(REPO / "tools" / "build_standin_images.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=STANDIN_BUILD_TIMEOUT_SECONDS,
    )
    if built.returncode != 0:
        pytest.fail(f"building the stand-in images failed:\n{built.stderr}")


def write_secrets(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = directory / "auth-signing-key.pem"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    password = directory / "grafana-admin-password"
    password.write_text(uuid.uuid4().hex)
    # The containers run as UID 10001 and read the secret through a bind mount.
    key.chmod(0o644)
    return key, password


def vapid_private_key() -> str:
    """A raw P-256 private key, base64url without padding (ROOMCAST_NOTIFIER_VAPID_...)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec

    value = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()


def wait_until_ready(stack: PodmanStack, url: str) -> None:
    """Until HAProxy answers /readyz from a gateway through its published port (it
    marks a gateway up after two passing checks, 2 s apart)."""
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if stack.state("proxy")["Status"] != "running":
            pytest.fail(f"the proxy stopped:\n{stack.logs('proxy')}")
        time.sleep(POLL_SECONDS)
    pytest.fail(f"{url}/readyz did not answer 200 in {READY_DEADLINE_SECONDS:.0f} s")


@pytest.fixture(scope="session")
def compose_stack() -> Iterator[ComposeStack]:
    require_images()
    directory = Path(tempfile.mkdtemp(prefix="roomcast-containers-"))
    key, password = write_secrets(directory)
    ports = {
        name: free_port()
        for name in (
            "ROOMCAST_HTTP_PORT",
            "ROOMCAST_PROMETHEUS_PORT",
            "ROOMCAST_GRAFANA_PORT",
            "ROOMCAST_GATEWAY_1_PORT",
            "ROOMCAST_GATEWAY_2_PORT",
        )
    }
    env = {
        "PATH": os.environ.get("PATH", ""),
        "ROOMCAST_TAG": TAG,
        "ROOMCAST_SIGNING_KEY_FILE": str(key),
        "ROOMCAST_GRAFANA_PASSWORD_FILE": str(password),
        # The notifier's required secrets, made as tools/gen_compose_env.sh makes them.
        "ROOMCAST_NOTIFIER_SERVICE_PASSWORD": uuid.uuid4().hex,
        "ROOMCAST_NOTIFIER_VAPID_PRIVATE_KEY": vapid_private_key(),
        **{name: str(port) for name, port in ports.items()},
    }
    project = f"roomcast-ct-{uuid.uuid4().hex[:6]}"
    files = [REPO / "docker-compose.yml", REPO / "deploy" / "compose" / "standins.yml"]
    model = render(compose_binary(), files, project, env)
    # Test-only: every test user registers and logs in from the same address, and
    # bcrypt's production cost (12) costs ~250 ms a login; both are tested elsewhere.
    model["services"]["auth"]["environment"].update(
        {
            "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_BCRYPT_COST": "4",
        }
    )
    with PodmanStack(model, project) as stack:
        proxy_url = f"http://127.0.0.1:{ports['ROOMCAST_HTTP_PORT']}"
        wait_until_ready(stack, proxy_url)
        yield ComposeStack(
            stack=stack,
            proxy_url=proxy_url,
            gateway_urls=[
                f"http://127.0.0.1:{ports['ROOMCAST_GATEWAY_1_PORT']}",
                f"http://127.0.0.1:{ports['ROOMCAST_GATEWAY_2_PORT']}",
            ],
            prometheus_url=f"http://127.0.0.1:{ports['ROOMCAST_PROMETHEUS_PORT']}",
        )
    shutil.rmtree(directory, ignore_errors=True)
