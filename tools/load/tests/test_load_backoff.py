"""The load clients' reconnect policy is the SDKs' (exponential, full jitter), with the
TypeScript SDK's constants; and the fleet's spread of sockets over addresses."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from roomcast.load.backoff import (
    SDK_BACKOFF_INITIAL_SECONDS,
    SDK_BACKOFF_MAX_SECONDS,
    SDK_RATE_LIMITED_DELAY_SECONDS,
    ReconnectPolicy,
)
from roomcast.load.fleet import FleetError, per_second, spread
from roomcast.load.idlefleet import tick_of

SOCKET_TS = Path(__file__).resolve().parents[3] / "clients" / "typescript" / "src" / "socket.ts"


def _ts_constant(name: str) -> float:
    match = re.search(rf"const {name} = ([\d_]+);", SOCKET_TS.read_text())
    assert match, name
    return int(match.group(1).replace("_", "")) / 1000


def test_constants_are_the_typescript_sdks() -> None:
    assert _ts_constant("DEFAULT_BACKOFF_INITIAL_MS") == SDK_BACKOFF_INITIAL_SECONDS
    assert _ts_constant("DEFAULT_BACKOFF_MAX_MS") == SDK_BACKOFF_MAX_SECONDS
    assert _ts_constant("RATE_LIMITED_DELAY_MS") == SDK_RATE_LIMITED_DELAY_SECONDS


def test_failed_attempts_double_the_cap_up_to_the_max_with_full_jitter() -> None:
    policy = ReconnectPolicy()
    rng = random.Random(7)
    caps = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    for failures, cap in enumerate(caps, start=1):
        draws = [policy.after_failure(failures, None, rng) for _ in range(2000)]
        assert all(0 <= d <= cap for d in draws)
        # Full jitter: the whole [0, cap] is used, not only its upper half.
        assert min(draws) < 0.05 * cap
        assert max(draws) > 0.95 * cap


def test_a_ready_socket_reconnects_within_one_initial_delay() -> None:
    policy = ReconnectPolicy()
    rng = random.Random(3)
    draws = [policy.after_ready(1012, rng) for _ in range(2000)]
    assert all(0 <= d <= SDK_BACKOFF_INITIAL_SECONDS for d in draws)
    assert max(draws) - min(draws) > 0.9 * SDK_BACKOFF_INITIAL_SECONDS


def test_rate_limited_closes_wait_at_least_the_sdks_delay() -> None:
    policy = ReconnectPolicy()
    assert policy.after_ready(4008) >= SDK_RATE_LIMITED_DELAY_SECONDS
    assert policy.after_failure(1, 4008) >= SDK_RATE_LIMITED_DELAY_SECONDS


def test_untried_urls_of_a_round_are_tried_at_once() -> None:
    policy = ReconnectPolicy(urls=3)
    assert policy.after_failure(1) == 0.0
    assert policy.after_failure(2) == 0.0
    assert 0 <= policy.after_failure(3) <= SDK_BACKOFF_INITIAL_SECONDS
    assert 0 <= policy.after_failure(6) <= 2 * SDK_BACKOFF_INITIAL_SECONDS


def test_spread_puts_every_source_address_on_every_gateway() -> None:
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    layout = spread(1200, 4, ips, 60)
    assert len(layout) == 1200
    pairs = {(g, ip) for g, ip, _ in layout}
    assert pairs == {(g, ip) for g in range(4) for ip in ips}
    per_gateway = [sum(1 for g, _, _ in layout if g == k) for k in range(4)]
    assert per_gateway == [300] * 4
    # 20 sockets per token (a user's devices), all of them on one gateway here.
    assert max(sum(1 for _, _, t in layout if t == k) for k in range(60)) == 20


def test_spread_refuses_more_sockets_than_an_address_has_ports() -> None:
    with pytest.raises(FleetError, match="source address"):
        spread(60_000, 4, ["127.0.0.2", "127.0.0.3"], 100)
    assert len(spread(60_000, 4, ["127.0.0.2", "127.0.0.3", "127.0.0.4"], 100)) == 60_000


def test_per_second_sums_the_ticks_of_each_second() -> None:
    start = 1_000.0
    ticks = {tick_of(1_000.05): 3, tick_of(1_000.95): 2, tick_of(1_002.5): 7, tick_of(990.0): 9}
    assert per_second(ticks, start, 1_003.0) == [5, 0, 7]
