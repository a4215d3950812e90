"""The `chat-mix` scenario: its shape, and a smoke-size variant of it (the same groups
scaled down: typing notices and read receipts included) run against a whole stack on
free ports, where typing notices and read receipts must reach the other members and
every acknowledged message every member."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roomcast.load.__main__ import START_STACK_ENV
from roomcast.load.plan import build_layout
from roomcast.load.run import RunConfig, run_scenario
from roomcast.load.scenario import ScenarioError, find_scenario, load_scenario, parse_scenario
from roomcast.testing.stack import Stack, StackPorts


def test_chat_mix_has_small_and_big_rooms_typing_and_readers() -> None:
    scenario = load_scenario("chat-mix")
    layout = build_layout(scenario)
    sizes = sorted(len(r.members) for r in layout.rooms)
    assert len(layout.sockets) == 2000
    assert sizes[-2:] == [300, 300]
    assert len(sizes) == 502
    assert sizes[0] >= 2
    assert sizes[-3] <= 8
    # Every small-room sender and the big rooms' 4 senders type; 2 readers per small
    # room and 30 per big room send read receipts.
    assert sum(len(s.typing) for s in layout.sockets) == 500 + 2 * 4
    assert sum(len(s.reads) for s in layout.sockets) == 500 * 2 + 2 * 30
    assert scenario.expect.p99_ms == 50


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"count": 1, "members": 2, "typing_rate": 1.0}, "typing_rate needs senders"),
        ({"count": 1, "members": 2, "readers": 3, "read_rate": 1.0}, "readers cannot exceed"),
        ({"count": 1, "members": 2, "readers": 1}, "read_rate must be positive"),
    ],
)
def test_bad_typing_and_read_settings_are_refused(group: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario({"name": "x", "rooms": [group]})


def smoke_variant() -> dict[str, Any]:
    """chat-mix with its groups shrunk to a few sockets and its rates raised, so a few
    seconds carry typing notices and read receipts in every room."""
    data = tomllib.loads(find_scenario("chat-mix").read_text())
    small, big = data["rooms"]
    small |= {"count": 3, "members": 3, "rate": 2.0, "typing_rate": 2.0, "read_rate": 2.0}
    big |= {"count": 1, "members": 6, "senders": 2, "readers": 3, "read_rate": 1.0}
    return data | {
        "name": "chat-mix-smoke",
        "users": 10,
        "sockets": 12,
        "workers": 1,
        "duration": 3,
        # The shared test machine: loss and order are the point here, not latency.
        "expect": {"lost": 0, "duplicated": 0, "out_of_order": 0},
    }


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Any]:
    s = Stack(tmp_path / "stack", StackPorts.free(), bcrypt_cost=4, extra_env=START_STACK_ENV)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.slow
async def test_chat_mix_smoke_delivers_messages_typing_and_read_receipts(stack: Any) -> None:
    scenario = parse_scenario(smoke_variant())
    report = await run_scenario(
        RunConfig(scenario=scenario, gateways=stack.gateway_urls, workers=1, progress=False)
    )
    acc, sig = report["accounting"], report["signals"]
    assert report["passed"], (report["expectations"], report["errors"])
    assert acc["acked"] == acc["sent"] > 0
    assert acc["expected"] == acc["delivered"]
    assert sig["typing_sent"] > 0
    assert sig["reads_sent"] > 0
    # Typing goes to the other subscribers, read receipts to every subscriber: both
    # arrive somewhere, and no frame the load tool does not know is left unexplained.
    assert sig["typing_received"] > 0
    assert sig["reads_received"] > 0
    assert report["unexpected_messages"] == 0
    assert not any(k.startswith("not_subscribed") for k in report["errors"])
