"""The whole engine (coordinator, worker processes, picows clients, accounting)
against the raw picows broadcast server from bench/: no Roomcast services needed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from roomcast.load.run import RunConfig, run_scenario
from roomcast.load.scenario import parse_scenario

RAW_SERVER = Path(__file__).resolve().parents[3] / "bench" / "raw_picows_server.py"


@pytest.fixture
def raw_server() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(RAW_SERVER), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "listening on <port>" once bound
        assert line.startswith("listening on"), line
        yield f"http://127.0.0.1:{int(line.split()[-1])}"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_raw_broadcast_is_fully_accounted(raw_server: str) -> None:
    sc = parse_scenario(
        {
            "name": "raw-unit",
            "duration": 2,
            "drain_timeout": 10,
            "rooms": [{"count": 1, "members": 40, "senders": 1, "rate": 25}],
        }
    )
    report = await run_scenario(
        RunConfig(scenario=sc, gateways=[raw_server], workers=2, raw=True, progress=False)
    )
    acc = report["accounting"]
    assert report["passed"], report["expectations"]
    assert report["connections"]["live_after_connect"] == 40
    assert acc["acked"] == acc["sent"] >= 40  # ~50 scheduled in 2 s at 25/s
    assert acc["lost"] == 0
    assert acc["duplicated"] == 0
    assert acc["expected"] == acc["delivered"] == 40 * acc["acked"]
    assert report["throughput"]["deliveries"] == 40 * acc["acked"]
    assert report["latency_ms"]["count"] == 40 * acc["acked"]
    assert report["timeline"]
    assert set(report["worker_cpu_seconds"]) == {"0", "1"}
