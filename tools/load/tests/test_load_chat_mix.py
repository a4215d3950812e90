"""The `chat-mix` scenario: its shape, and a smoke-size variant of it (the same groups
scaled down: typing notices and read receipts included) run against a whole stack on
free ports, where typing notices and read receipts must reach the other members and
every acknowledged message every member."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roomcast.load.__main__ import START_STACK_ENV
from roomcast.load.plan import build_layout
from roomcast.load.run import RunConfig, run_scenario
from roomcast.load.scenario import ScenarioError, find_scenario, load_scenario, parse_scenario
from roomcast.testing.stack import Stack, StackPorts

SLOW_MODE_CHECK = re.compile(
    r'^roomcast_gateway_slow_mode_checks_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE
)


def test_chat_mix_replies_mention_react_and_read_the_inbox() -> None:
    scenario = load_scenario("chat-mix")
    layout = build_layout(scenario)
    assert 0 < scenario.inbox_rate * 2000 < 50  # a low rate: tens of reads/s in all
    _, big, slow = scenario.rooms
    assert 0 < big.reply_share < 0.5
    assert 0 < big.mention_share < big.reply_share
    assert slow.react_rate == slow.reply_share == 0  # the slow-mode rooms stay plain
    reacting = sum(len(s.reacts) for s in layout.sockets)
    assert reacting == 500 + 2 * 4
    # file messages at a low rate: 1 % of the small and big rooms' sends
    assert 0 < big.file_share <= 0.02
    assert slow.file_share == 0
    assert sum(len(s.files) for s in layout.sockets) == 500 + 2 * 4
    for s in layout.sockets:
        for room, (_, _, other) in s.threads.items():
            assert other != s.index
            assert other in layout.rooms[room].members


def test_chat_mix_has_small_and_big_rooms_typing_and_readers() -> None:
    scenario = load_scenario("chat-mix")
    layout = build_layout(scenario)
    sizes = sorted(len(r.members) for r in layout.rooms)
    assert len(layout.sockets) == 2000
    assert sizes[-2:] == [300, 300]
    assert len(sizes) == 522
    assert sizes[0] >= 2
    assert sizes[-3] <= 8
    # Every small-room sender and the big rooms' 4 senders type; 2 readers per small
    # room (slow-mode ones too) and 30 per big room send read receipts.
    assert sum(len(s.typing) for s in layout.sockets) == 500 + 2 * 4
    assert sum(len(s.reads) for s in layout.sockets) == 500 * 2 + 2 * 30 + 20 * 2
    assert scenario.expect.p99_ms == 50


def test_chat_mix_slow_mode_rooms_are_created_by_a_member_who_does_not_send() -> None:
    """Owners are exempt from slow mode: were the sender the creator, no send would go
    through the shared check the slow-mode rooms are there to load."""
    layout = build_layout(load_scenario("chat-mix"))
    slow = [r for r in layout.rooms if r.slow_mode_seconds]
    assert len(slow) == 20
    for room in slow:
        assert room.slow_mode_seconds * room.rate <= 1
        senders = {layout.sockets[s].user for s in room.members[: room.senders]}
        assert layout.creator(room.index) not in senders
    plain = next(r for r in layout.rooms if not r.slow_mode_seconds)
    assert layout.creator(plain.index) == layout.sockets[plain.members[0]].user


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"count": 1, "members": 2, "typing_rate": 1.0}, "typing_rate needs senders"),
        ({"count": 1, "members": 2, "readers": 3, "read_rate": 1.0}, "readers cannot exceed"),
        ({"count": 1, "members": 2, "readers": 1}, "read_rate must be positive"),
        (
            {"count": 1, "members": 2, "senders": 2, "rate": 0.1, "slow_mode_seconds": 5},
            "needs a member who does not send",
        ),
        (
            {"count": 1, "members": 3, "senders": 1, "rate": 1.0, "slow_mode_seconds": 2},
            r"rate must be at most 1 / slow_mode_seconds",
        ),
        ({"count": 1, "members": 2, "slow_mode_seconds": 86_400}, "must be <= 21600"),
        ({"count": 1, "members": 2, "reply_share": 0.5}, "reply_share needs senders"),
        (
            {"count": 1, "members": 2, "senders": 1, "rate": 1.0, "mention_share": 2},
            "fraction of the sends",
        ),
        ({"count": 1, "members": 2, "react_rate": 1.0}, "react_rate needs senders"),
        ({"count": 1, "members": 2, "file_share": 0.1}, "file_share needs senders"),
    ],
)
def test_bad_typing_and_read_settings_are_refused(group: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario({"name": "x", "rooms": [group]})


def smoke_variant() -> dict[str, Any]:
    """chat-mix with its groups shrunk to a few sockets and its rates raised, so a few
    seconds carry typing notices and read receipts in every room."""
    data = tomllib.loads(find_scenario("chat-mix").read_text())
    small, big, slow = data["rooms"]
    threads = {"reply_share": 0.5, "mention_share": 0.5, "react_rate": 1.0, "file_share": 0.3}
    small |= {"count": 3, "members": 3, "rate": 2.0, "typing_rate": 2.0, "read_rate": 2.0}
    small |= threads
    big |= {"count": 1, "members": 6, "senders": 2, "readers": 3, "read_rate": 1.0} | threads
    # Two sends each in 3 s, 1 s clear of the slow mode.
    slow |= {"count": 2, "members": 3, "rate": 0.5, "slow_mode_seconds": 1, "read_rate": 1.0}
    return data | {
        "name": "chat-mix-smoke",
        "users": 10,
        "sockets": 12,
        "workers": 1,
        "duration": 3,
        # every socket reads its inbox each second (10 users: far below the API's limit)
        "inbox_rate": 1.0,
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
        RunConfig(
            scenario=scenario,
            gateways=stack.gateway_urls,
            workers=1,
            progress=False,
            mongo_url=stack.mongo.url,
        )
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
    # Replies and mentions were sent (and acked, as every send above); reactions were
    # acked, each one, and reached the other members (in their chains: nothing lost);
    # inbox pages were answered, none refused.
    assert sig["replies_sent"] > 0
    assert sig["mentions_sent"] > 0
    assert sig["reactions_acked"] == sig["reactions_sent"] > 0
    assert sig["reactions_received"] >= sig["reactions_acked"]
    assert sig["inbox_reads"] > 0
    assert sig["inbox_errors"] == 0
    # File messages: uploaded, shared, acked each one (so counted in acc's acked == sent
    # too) and delivered to the members (in their chains: nothing lost above).
    assert sig["file_upload_errors"] == 0
    assert sig["files_acked"] == sig["files_sent"] > 0
    assert sig["files_received"] >= sig["files_acked"]
    assert report["unexpected_messages"] == 0
    assert not any(k.startswith("not_subscribed") for k in report["errors"])
    # The slow-mode rooms' sends went through the gateways' shared check and passed it.
    assert "slow_mode" not in acc["errors"]
    checks = await slow_mode_checks(stack.gateway_urls)
    assert checks.get("allowed", 0) > 0, checks
    assert checks.get("refused", 0) == 0, checks
    # Ack latency split by what each send went through: every ack is in one kind, and
    # the kinds count what was sent of each.
    kinds = report["ack_latency_by_kind_ms"]
    assert sum(k["count"] for k in kinds.values()) == report["ack_latency_ms"]["count"]
    assert kinds["reply"]["count"] == sig["replies_sent"]
    assert kinds["file"]["count"] == sig["files_acked"]
    assert kinds["reaction"]["count"] == sig["reactions_acked"]
    assert 0 < kinds["mention"]["count"] <= sig["mentions_sent"]
    assert kinds["slow_mode"]["count"] > 0
    assert kinds["plain"]["count"] > 0
    # The database's time over the window is split by namespace, i.e. by caller: history
    # stored the messages (inserts into its messages collection) within the window.
    top = report["database_top"]
    by_ns = {row["namespace"]: row for row in top["rows"]}
    messages = by_ns["roomcast_history.messages"]
    assert messages["commands"] > 0, top
    assert messages["time_ms"] > 0, top
    assert top["acked"] == acc["acked"]
    assert abs(sum(row["share_pct"] for row in top["rows"]) - 100) < 1, top


async def slow_mode_checks(gateways: list[str]) -> dict[str, float]:
    """roomcast_gateway_slow_mode_checks_total by outcome, summed over the gateways."""
    totals: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=5.0) as client:
        for base in gateways:
            text = (await client.get(base.rstrip("/") + "/metrics")).text
            for outcome, value in SLOW_MODE_CHECK.findall(text):
                totals[outcome] = totals.get(outcome, 0.0) + float(value)
    return totals
