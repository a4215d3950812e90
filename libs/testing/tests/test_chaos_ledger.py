"""The chaos ledger's checks catch each way the promise can break (so a green chaos run
means something), and the recovery figures read the right sends."""

from __future__ import annotations

from roomcast.testing.chaos.faults import Recovery, recovery_table
from roomcast.testing.chaos.ledger import Delivery, Ledger, Send


def ledger_with(acks: list[tuple[str, int, float]]) -> Ledger:
    """Sends c1..cn to room r, scheduled at 0, acked with (client_id, seq, at)."""
    ledger = Ledger()
    for cid, seq, at in acks:
        ledger.scheduled(Send(cid, "r", "alice", 0.0))
        ledger.acked(cid, seq, at)
    return ledger


def deliver(ledger: Ledger, who: str, chain: list[tuple[int, int, str]]) -> None:
    for seq, prev, cid in chain:
        ledger.delivered(who, "r", Delivery(seq, prev, cid, 0.1))


GOOD = [(3, 0, "c1"), (7, 3, "c2"), (9, 7, "c3")]


def good_ledger() -> Ledger:
    return ledger_with([("c1", 3, 0.1), ("c2", 7, 0.1), ("c3", 9, 0.1)])


def test_a_complete_run_has_no_problems() -> None:
    ledger = good_ledger()
    deliver(ledger, "bob", GOOD)
    deliver(ledger, "carol", GOOD)
    assert ledger.send_problems() == []
    assert ledger.delivery_problems({"bob": ["r"], "carol": ["r"]}) == []
    assert ledger.history_problems("r", [(9, "c3"), (7, "c2"), (3, "c1")]) == []


def test_each_broken_delivery_is_reported() -> None:
    ledger = good_ledger()
    deliver(ledger, "dup", [*GOOD, (9, 7, "c3")])
    deliver(ledger, "gap", [(3, 0, "c1"), (9, 7, "c3")])
    deliver(ledger, "order", [(3, 0, "c1"), (9, 7, "c3"), (7, 3, "c2")])
    deliver(ledger, "extra", [*GOOD, (11, 9, "c9")])
    problems = ledger.delivery_problems({n: ["r"] for n in ("dup", "gap", "order", "extra")})
    text = "\n".join(problems)
    assert "dup in r: seq 9 delivered twice" in text
    assert "gap in r: seq 9 has prev 7, last delivered 3" in text
    assert "gap in r: 1 acked messages never delivered: [7]" in text
    assert "order in r: seq 7 after 9 (out of order)" in text
    assert "extra in r: 1 delivered messages never acked: [11]" in text


def test_history_lost_or_stored_twice_is_reported() -> None:
    ledger = good_ledger()
    text = "\n".join(ledger.history_problems("r", [(9, "c3"), (8, "c2"), (7, "c2")]))
    assert "history r: c2 stored twice (seqs 8, 7)" in text
    assert "history r: 1 acked messages missing: [3]" in text
    assert "history r: 1 messages never acked: [8]" in text


def test_unacked_refused_and_reacked_differently_are_reported() -> None:
    ledger = good_ledger()
    ledger.acked("c1", 4, 0.2)  # a resend acked with another seq: stored twice
    ledger.scheduled(Send("c4", "r", "alice", 0.0))
    ledger.scheduled(Send("c5", "r", "alice", 0.0, refused="forbidden"))
    text = "\n".join(ledger.send_problems())
    assert "c1 acked with several seqs [3, 4]" in text
    assert "c4 never acked" in text
    assert "c5 refused: forbidden" in text


def test_recovery_reads_the_sends_disturbed_by_the_fault() -> None:
    ledger = Ledger()
    # Fault at t=10: one send waits 4 s (acked at 13), later ones are prompt.
    for cid, scheduled, acked in [("a", 5.0, 5.1), ("b", 9.0, 13.0), ("c", 11.0, 13.2)]:
        ledger.scheduled(Send(cid, "r", "alice", scheduled))
        ledger.acked(cid, int(scheduled), acked)
    ledger.delivered("bob", "r", Delivery(9, 5, "b", 13.5))
    recovery = Recovery("kill -9 nats", "nats", 10.0)
    recovery.measure(ledger, until=20.0)
    assert recovery.disturbed_sends == 2  # b (4 s) and c (2.2 s)
    assert round(recovery.sends_ok_s, 1) == 3.2
    assert round(recovery.deliveries_ok_s, 1) == 3.5
    assert round(recovery.first_ack_s or 0, 1) == 3.2
    assert round(recovery.worst_ack_s, 1) == 4.0
    assert "| kill -9 nats | - | 3.2 | 3.2 | 3.5 | - | 4.0 | 2 |" in recovery_table([recovery])
