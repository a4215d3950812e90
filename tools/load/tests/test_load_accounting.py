"""The delivery accounting: exact loss, duplication and ordering counts from synthetic
events, including loss and duplication injected on purpose."""

from __future__ import annotations

import random
from typing import Any

from roomcast.load.accounting import MemberLog, RoomLog, SendLog, reconcile

ROOM = "r1"


def _senders(*acks: tuple[str, int]) -> list[dict[str, Any]]:
    log = SendLog()
    for cid, seq in acks:
        log.on_schedule()
        log.on_sent()
        log.on_ack(ROOM, cid, seq)
    return [log.export()]


def _feed(m: MemberLog, start: int, frames: list[tuple[int, int]]) -> None:
    m.subscribed(start)
    for seq, prev in frames:
        m.deliver(seq, prev)


def test_injected_loss_duplication_and_reordering_are_reported_exactly() -> None:
    # Five messages acked in room r1, at seqs 10..50 (other rooms use the gaps).
    sends = _senders(("a", 10), ("b", 20), ("c", 30), ("d", 40), ("e", 50))
    log = RoomLog(ROOM)
    perfect = MemberLog(log, "perfect")
    _feed(perfect, 0, [(10, 0), (20, 10), (30, 20), (40, 30), (50, 40)])
    # Loses 30: the chain breaks at 40 (prev 30 != last 20).
    lossy = MemberLog(log, "lossy")
    _feed(lossy, 0, [(10, 0), (20, 10), (40, 30), (50, 40)])
    # 20 twice and 10 again at the end: two duplicates, nothing lost.
    dup = MemberLog(log, "dup")
    _feed(dup, 0, [(10, 0), (20, 10), (20, 10), (30, 20), (40, 30), (50, 40), (10, 0)])
    # 30 before 20: both out of order (a chain break, then a late one), nothing lost.
    swapped = MemberLog(log, "swapped")
    _feed(swapped, 0, [(10, 0), (30, 20), (20, 10), (40, 30), (50, 40)])
    # Subscribed when the room's head was 20: only 30, 40, 50 are expected; it loses 50.
    late = MemberLog(log, "late")
    _feed(late, 20, [(30, 20), (40, 30)])
    # Gave up (abandoned) after 30: nothing after its last seq is expected.
    gone = MemberLog(log, "gone")
    _feed(gone, 0, [(10, 0), (20, 10), (30, 20)])
    gone.abandoned = True
    # Another process's room log, where members saw a different set first.
    other_log = RoomLog(ROOM)
    elsewhere = MemberLog(other_log, "elsewhere")
    _feed(elsewhere, 0, [(20, 10), (40, 30), (45, 40), (50, 45)])  # lost 10, 30; 45 unacked

    acc = reconcile(
        sends,
        [
            (list(log.seqs), [m.export() for m in (perfect, lossy, dup, swapped, late, gone)]),
            (list(other_log.seqs), [elsewhere.export()]),
        ],
    )
    by_key = {m.key: m for m in acc.members}
    expect = {
        # key: (expected, delivered, lost, duplicated, out_of_order, unacked_delivered)
        "perfect": (5, 5, 0, 0, 0, 0),
        "lossy": (5, 4, 1, 0, 1, 0),
        "dup": (5, 5, 0, 2, 0, 0),
        "swapped": (5, 5, 0, 0, 2, 0),
        "late": (3, 2, 1, 0, 0, 0),
        "gone": (3, 3, 0, 0, 0, 0),
        "elsewhere": (5, 3, 2, 0, 2, 1),
    }
    for key, want in expect.items():
        m = by_key[key]
        got = (m.expected, m.delivered, m.lost, m.duplicated, m.out_of_order, m.unacked_delivered)
        assert got == want, key
    assert by_key["lossy"].lost_examples == [30]
    assert by_key["late"].lost_examples == [50]
    assert by_key["elsewhere"].lost_examples == [10, 30]
    totals = acc.totals()
    assert totals["lost"] == 4
    assert totals["duplicated"] == 2
    assert totals["out_of_order"] == 5
    assert totals["expected"] == 31
    assert totals["members_with_loss"] == 3
    assert totals["abandoned_members"] == 1
    assert totals["acked"] == 5
    assert totals["unacked"] == 0
    room = acc.rooms[ROOM]
    assert (room.members, room.acked, room.lost, room.duplicated) == (7, 5, 4, 2)
    assert set(room.lost_examples) == {"lossy", "late", "elsewhere"}


def test_a_member_with_nothing_lost_has_an_exact_delivered_set() -> None:
    log = RoomLog(ROOM)
    a, b = MemberLog(log, "a"), MemberLog(log, "b")
    _feed(a, 0, [(1, 0), (3, 1), (7, 3)])
    _feed(b, 0, [(3, 1), (1, 0), (7, 3), (7, 3)])
    assert a.delivered_seqs() == [1, 3, 7]
    assert b.delivered_seqs() == [1, 3, 7]
    assert (b.delivered, b.duplicated) == (4, 1)


def test_skips_advance_the_chain_and_count_as_delivered() -> None:
    sends = _senders(("a", 1), ("b", 2), ("c", 3))
    log = RoomLog(ROOM)
    m = MemberLog(log, "m")
    m.subscribed(0)
    m.deliver(1, 0)
    m.deliver(2, 1, skip=True)  # a private message for someone else
    m.deliver(3, 2)
    acc = reconcile(sends, [(list(log.seqs), [m.export()])])
    assert (acc.members[0].lost, acc.members[0].out_of_order, m.skips) == (0, 0, 1)


def test_acks_sends_and_dedupe_failures() -> None:
    log = SendLog()
    for _ in range(4):
        log.on_schedule()
        log.on_sent()
    log.on_sent(resend=True)
    assert log.on_ack(ROOM, "x", 10)
    assert log.on_ack(ROOM, "y", 11)
    assert not log.on_ack(ROOM, "x", 10, duplicate=True)  # a retry: same seq
    assert not log.on_ack(ROOM, "y", 12)  # same client_id, another seq: twice stored
    log.on_late_ack("zzz", 13)
    log.on_error("rate_limited")
    e = log.export()
    assert (e["scheduled"], e["sent"], e["resent"], e["acked"]) == (4, 4, 1, 2)
    assert (e["duplicate_acks"], e["dedupe_failures"], e["unknown_acks"]) == (1, 1, 1)
    assert e["errors"] == {"rate_limited": 1}
    assert e["acked_by_room"] == {ROOM: [10, 11]}
    acc = reconcile([e, e], [])  # the same seqs acked by two senders: conflicts
    assert acc.rooms[ROOM].seq_conflicts == 2
    assert acc.totals()["unacked"] == 4


def test_resumes_are_counted_with_their_sizes() -> None:
    log = RoomLog(ROOM)
    m = MemberLog(log, "m")
    m.subscribed(0)
    m.resumed(3)
    m.resumed(0)
    m.resumed(1000, truncated=True)
    acc = reconcile([], [(list(log.seqs), [m.export()])])
    t = acc.totals()
    assert (t["resumes"], t["resumed_messages"], t["max_resume"], t["truncated_resumes"]) == (
        3,
        1003,
        1000,
        1,
    )


# --- randomized: against a naive set-based reference -----------------------------------


def _reference(
    acked: set[int], start: int, frames: list[tuple[int, int]], abandoned: bool
) -> tuple[int, int, int, int, int]:
    seen: set[int] = set()
    last = start
    dups = ooo = 0
    for seq, prev in frames:
        if seq in seen:
            dups += 1
            continue
        seen.add(seq)
        if seq <= last or prev != last:
            ooo += 1
        last = max(last, seq)
    horizon = last if abandoned else float("inf")
    expected = {s for s in acked if start < s <= horizon}
    got = expected & seen
    return len(expected), len(got), len(expected - seen), dups, ooo


def test_random_streams_match_a_naive_reference() -> None:
    rng = random.Random(42)
    seen_faults = [0, 0, 0, 0]  # lost, duplicated, out of order, unacked delivered
    for _ in range(40):
        chain = sorted(rng.sample(range(1, 400), 60))
        prevs = dict(zip(chain, [0, *chain[:-1]], strict=True))
        acked = set(rng.sample(chain, 50))  # some delivered seqs were never acked
        sends = _senders(*((f"c{s}", s) for s in sorted(acked)))
        logs = [RoomLog(ROOM) for _ in range(2)]
        members = []
        for k in range(8):
            start = rng.choice([0, 0, *chain[:20]])
            frames = [(s, prevs[s]) for s in chain if s > start]
            frames = [f for f in frames if rng.random() > 0.1]  # drop 10 %
            for _ in range(rng.randint(0, 4)):  # duplicate some
                if frames:
                    frames.insert(rng.randrange(len(frames) + 1), rng.choice(frames))
            for _ in range(rng.randint(0, 3)):  # swap neighbours
                if len(frames) > 2:
                    i = rng.randrange(len(frames) - 1)
                    frames[i], frames[i + 1] = frames[i + 1], frames[i]
            abandoned = rng.random() < 0.2
            m = MemberLog(logs[k % 2], f"m{k}")
            _feed(m, start, frames)
            m.abandoned = abandoned
            members.append((m, start, frames, abandoned))
        acc = reconcile(
            sends,
            [(list(log.seqs), [m.export() for m, *_ in members if m.room is log]) for log in logs],
        )
        by_key = {r.key: r for r in acc.members}
        for m, start, frames, abandoned in members:
            r = by_key[m.key]
            want = _reference(acked, start, frames, abandoned)
            assert (r.expected, r.delivered, r.lost, r.duplicated, r.out_of_order) == want
            for i, n in enumerate((r.lost, r.duplicated, r.out_of_order, r.unacked_delivered)):
                seen_faults[i] += n
    assert all(seen_faults), seen_faults  # the generator did inject every kind of fault
