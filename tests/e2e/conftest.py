"""End-to-end fixtures: the whole stack (both gateways included) as real processes on
free ports, exactly as ``make up`` runs it, driven only through the public contract."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roomcast.testing.stack import Stack, StackPorts


@pytest.fixture(scope="session")
def e2e_stack() -> Iterator[Stack]:
    stack = Stack(
        Path(tempfile.mkdtemp(prefix="roomcast-e2e-")),
        StackPorts.free(),
        # bcrypt's production cost (12) costs ~250 ms a login on these machines; the
        # end-to-end tests log in often and test the cost elsewhere.
        bcrypt_cost=4,
        # Every test user registers and logs in from 127.0.0.1; auth's per-address limit
        # (10 per 30 s) is tested in services/auth, not here.
        extra_env={
            "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
        },
    )
    stack.start()
    yield stack
    stack.stop()
