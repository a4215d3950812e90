"""End to end: the tiny `smoke` scenario against a whole stack on free ports (real
nats-server, SecantusDB, auth, rooms, history and two gateways), through the public
REST API and WebSocket protocol: every acknowledged message reaches every member."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roomcast.load.__main__ import START_STACK_ENV
from roomcast.load.run import RunConfig, run_scenario
from roomcast.load.scenario import load_scenario
from roomcast.testing.stack import Stack, StackPorts


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Any]:
    s = Stack(tmp_path / "stack", StackPorts.free(), bcrypt_cost=4, extra_env=START_STACK_ENV)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.slow
async def test_smoke_scenario_has_zero_loss_on_a_real_stack(stack: Any) -> None:
    scenario = load_scenario("smoke")
    report = await run_scenario(
        RunConfig(scenario=scenario, gateways=stack.gateway_urls, workers=1, progress=False)
    )
    acc = report["accounting"]
    assert report["passed"], (report["expectations"], report["errors"])
    assert report["connections"]["live_at_end"] == 8
    assert acc["acked"] == acc["sent"] > 0
    assert acc["lost"] == 0
    assert acc["duplicated"] == 0
    # 2 rooms x 4 members: every acked message reaches the 4 members of its room.
    assert acc["expected"] == acc["delivered"] == 4 * acc["acked"]
    assert report["latency_ms"]["count"] == 4 * acc["acked"]
