"""The promise under every crash: open-loop chat on both gateways while each part of the
stack is killed in turn (and restarted by the supervisor), then every acked message must
have reached every receiver exactly once in one order, and be in history exactly once.

``make chaos`` runs the CI schedule (every fault once); ``make chaos-full`` three rounds
with longer healthy periods (docs/reliability.md, "Chaos").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from roomcast.testing.chaos.faults import (
    CLUSTER_FAULTS,
    SINGLE_NODE_FAULTS,
    Fault,
    recovery_table,
)
from roomcast.testing.chaos.run import ChaosConfig, ChaosResult, ChaosRun
from roomcast.testing.stack import Stack
from roomcast.testing.supervisor import Supervisor

StackFactory = Callable[[int], tuple[Stack, Supervisor]]
# `make chaos` (and CI) runs the short schedule; `make chaos-full` sets "full".
SCHEDULE = os.environ.get("ROOMCAST_CHAOS_SCHEDULE", "ci")
# Optional: a file the recovery tables are appended to (docs/reliability.md's source).
REPORT_FILE = os.environ.get("ROOMCAST_CHAOS_REPORT")

# The whole CI schedule takes ~3-5 minutes on 2 cores; the full one ~15.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1800)]

ROUNDS = int(os.environ.get("ROOMCAST_CHAOS_ROUNDS", "3" if SCHEDULE == "full" else "1"))
# To reproduce one fault: ROOMCAST_CHAOS_FAULTS=secantusdb,history (kill -9 each in turn).
ONLY = [p for p in os.environ.get("ROOMCAST_CHAOS_FAULTS", "").split(",") if p]
# Healthy chat before the first fault and after each recovery: every fault starts from
# steady traffic, and the recovery figures see some undisturbed sends after it.
STEADY_SECONDS = 10.0 if SCHEDULE == "full" else 3.0


def run(
    supervised_stack: StackFactory,
    say: Callable[[str], None],
    nats_nodes: int,
    faults: tuple[Fault, ...],
) -> ChaosResult:
    stack, supervisor = supervised_stack(nats_nodes)
    config = ChaosConfig(faults=faults, rounds=ROUNDS, steady_seconds=STEADY_SECONDS)
    result = asyncio.run(ChaosRun(stack, supervisor, config, report=say).run())
    table = recovery_table(result.recoveries)
    title = f"NATS nodes: {nats_nodes}, schedule: {SCHEDULE}; {result.summary()}"
    say(f"\n{title}\n{table}\n")
    if REPORT_FILE:
        with Path(REPORT_FILE).open("a") as out:
            out.write(f"{title}\n\n{table}\n\n")
    return result


def assert_promise_kept(result: ChaosResult, faults: tuple[Fault, ...]) -> None:
    assert not result.problems, f"{len(result.problems)} problems:\n" + "\n".join(
        result.problems[:60]
    )
    assert len(result.recoveries) == len(faults) * ROUNDS
    assert all(r.part_back_s is not None for r in result.recoveries)
    # Non-vacuous: traffic flowed, every send was acked, every receiver got every message.
    assert result.sent > 0
    assert result.acked == result.sent == result.history


def test_every_acked_message_survives_each_part_killed_in_turn(
    supervised_stack: StackFactory, say: Callable[[str], None]
) -> None:
    faults = tuple(Fault(part) for part in ONLY) or SINGLE_NODE_FAULTS
    result = run(supervised_stack, say, 1, faults)
    assert_promise_kept(result, faults)


def test_every_acked_message_survives_a_nats_node_killed_in_a_three_node_cluster(
    supervised_stack: StackFactory, say: Callable[[str], None]
) -> None:
    result = run(supervised_stack, say, 3, CLUSTER_FAULTS)
    assert_promise_kept(result, CLUSTER_FAULTS)
