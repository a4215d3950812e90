"""The faults a chaos run injects, and how long Roomcast took to recover from each.

Recovery is read from the ledger after the run, per fault, over the window from the
fault to the next one:

- ``part back``: the fault until the supervisor had the part ready again;
- ``first ack``: until the first ack of a send scheduled after the fault;
- ``sends ok``: until the last send that waited longer than ``SLOW_SECONDS`` for its ack
  was acked (afterwards every send is acked promptly again);
- ``deliveries ok``: the same for deliveries (scheduled send to receipt, any receiver);
- ``history ok``: until history listed every message acked before the fault;
- ``worst ack``: the longest any send of the window waited for its ack.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from roomcast.testing.chaos.ledger import Ledger

# A send or delivery slower than this counts as disturbed by the fault. Normal latency on
# a loaded 2-core machine is tens of milliseconds with spikes of a few hundred; two
# seconds only catches real outages (reconnects, restarts, timeouts).
SLOW_SECONDS = 2.0

# Targets of a fault on a NATS cluster: the node that leads the CHAT stream, or one that
# holds a replica without leading it, found when the fault is injected.
STREAM_LEADER = "stream-leader"
STREAM_FOLLOWER = "stream-follower"


@dataclass(frozen=True)
class Fault:
    part: str  # a stack part name (Stack.parts()) or STREAM_LEADER
    signum: int = signal.SIGKILL

    @property
    def label(self) -> str:
        how = "kill -9" if self.signum == signal.SIGKILL else f"{signal.Signals(self.signum).name}"
        return f"{how} {self.part}"


# Every part in turn, as the issue lists them; then a graceful restart of a gateway.
SINGLE_NODE_FAULTS = (
    Fault("gateway-a"),
    Fault("nats"),
    Fault("history"),
    Fault("secantusdb"),
    Fault("rooms"),
    Fault("auth"),
    Fault("gateway-b", signal.SIGTERM),
)
CLUSTER_FAULTS = (Fault(STREAM_LEADER), Fault(STREAM_FOLLOWER))


@dataclass
class Recovery:
    label: str
    part: str
    injected_at: float
    part_back_s: float | None = None
    history_ok_s: float | None = None
    first_ack_s: float | None = None
    sends_ok_s: float = 0.0
    deliveries_ok_s: float = 0.0
    worst_ack_s: float = 0.0
    disturbed_sends: int = 0

    def measure(self, ledger: Ledger, until: float) -> None:
        """Fill the ledger-based figures from the sends of [injected_at, until)."""
        t0 = self.injected_at
        first_ack: float | None = None
        for send in ledger.sends.values():
            if send.acked_at is None or send.acked_at < t0 or send.scheduled_at >= until:
                continue
            wait = send.acked_at - send.scheduled_at
            if send.scheduled_at >= t0 and (first_ack is None or send.acked_at < first_ack):
                first_ack = send.acked_at
            if wait > SLOW_SECONDS:
                self.disturbed_sends += 1
                self.sends_ok_s = max(self.sends_ok_s, send.acked_at - t0)
            self.worst_ack_s = max(self.worst_ack_s, wait)
        self.first_ack_s = None if first_ack is None else first_ack - t0
        for deliveries in ledger.deliveries.values():
            for d in deliveries:
                origin = ledger.sends.get(d.client_id)
                if origin is None or d.received_at < t0 or origin.scheduled_at >= until:
                    continue
                if d.received_at - origin.scheduled_at > SLOW_SECONDS:
                    self.deliveries_ok_s = max(self.deliveries_ok_s, d.received_at - t0)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def recovery_table(recoveries: list[Recovery]) -> str:
    """A Markdown table, seconds from the fault."""
    header = (
        "| fault | part back | first ack | sends ok | deliveries ok | history ok "
        "| worst ack | sends delayed |"
    )
    rows = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in recoveries:
        rows.append(
            f"| {r.label} | {_fmt(r.part_back_s)} | {_fmt(r.first_ack_s)} | "
            f"{_fmt(r.sends_ok_s)} | {_fmt(r.deliveries_ok_s)} | {_fmt(r.history_ok_s)} | "
            f"{_fmt(r.worst_ack_s)} | {r.disturbed_sends} |"
        )
    return "\n".join(rows)
