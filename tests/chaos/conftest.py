"""Chaos fixtures: a supervised stack on free ports (never the default ones), with the
limits that would otherwise throttle the run's own setup and checks lifted."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from roomcast.testing.stack import Stack, StackPorts
from roomcast.testing.supervisor import Supervisor

StackFactory = Callable[[int], tuple[Stack, Supervisor]]
# The supervisor reports from its own thread: one line at a time past the capture.
_SAY_LOCK = threading.Lock()


@pytest.fixture
def say(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Print at once, past pytest's capture: the run's progress is the point of it."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        with _SAY_LOCK:
            if capture is not None:
                with capture.global_and_fixture_disabled():
                    print(line, flush=True)
            else:
                print(line, flush=True)

    return say


@pytest.fixture
def supervised_stack(tmp_path: Path, say: Callable[[str], None]) -> Iterator[StackFactory]:
    """``supervised_stack(nats_nodes)`` -> a started stack and its running supervisor;
    both stopped at teardown, supervisor first (so nothing is restarted while stopping)."""
    started: list[tuple[Stack, Supervisor]] = []

    def start(nats_nodes: int) -> tuple[Stack, Supervisor]:
        stack = Stack(
            tmp_path / f"stack-{len(started)}",
            StackPorts.free(),
            # bcrypt's production cost is tested in services/auth; here it would only
            # slow the setup of the run's users.
            bcrypt_cost=4,
            extra_env={
                # Every chaos user registers and logs in from 127.0.0.1.
                "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
                "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
                # The run polls history for its recovery figures and pages all of it.
                "ROOMCAST_HISTORY_READ_RATE_CAPACITY": "1000000",
            },
            nats_nodes=nats_nodes,
        )
        stack.start()
        supervisor = stack.supervisor(report=say)
        started.append((stack, supervisor))
        supervisor.start_thread()
        return stack, supervisor

    yield start
    for stack, supervisor in started:
        supervisor.stop_thread()
        stack.stop()
