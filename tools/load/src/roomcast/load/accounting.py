"""Delivery accounting from ``seq``/``prev``: pure data structures, no I/O.

Every message a room's members see carries ``seq`` (its position in the stream) and
``prev`` (the previous position in the same room). Senders learn each message's ``seq``
from their ``ack``. From these alone the load tool decides, for every member socket
and room, exactly which acknowledged messages it got:

* **expected**: acked seqs ``s`` of the room with ``start < s <= horizon``, where
  ``start`` is the ``seq`` of the member's first ``subscribed`` (the room's head then)
  and ``horizon`` is unbounded for a member still connected at the end (everything
  acked must arrive), or its last seq for a member that gave up reconnecting.
* **delivered**: distinct expected seqs the member received (``message`` or ``skip``).
* **lost**: expected - delivered (an acked seq never delivered to a member subscribed
  since before it).
* **duplicated**: deliveries of a seq the member already had.
* **out of order**: other deliveries with ``seq <= last`` (the highest seq the member
  held) or ``prev != last`` (a broken chain).
* **unacked delivered**: delivered seqs that no sender's ack announced (a send whose
  ack was lost, or another client's message): reported, never counted as loss.

Memory stays proportional to the distinct messages of a room, not to deliveries: a
worker keeps one :class:`RoomLog` per room (the increasing seqs any of its members
saw) and each :class:`MemberLog` keeps runs of indexes into it, plus the rare
deliveries that arrive behind the room's head (``extras``). :func:`reconcile` then
counts with prefix sums and binary search.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Lost seqs listed per member in the report (the counts are always exact).
MAX_EXAMPLES = 10


class RoomLog:
    """The distinct seqs seen by any member in one process, for one room, increasing.

    Indexes into ``seqs`` are stable: a seq is only ever appended above the maximum.
    """

    __slots__ = ("room", "seqs")

    def __init__(self, room: str) -> None:
        self.room = room
        self.seqs: array[int] = array("q")

    def index_of(self, seq: int) -> int:
        i = bisect.bisect_left(self.seqs, seq)
        return i if i < len(self.seqs) and self.seqs[i] == seq else -1


class MemberLog:
    """What one member socket (one logical client, across reconnects) got in one room."""

    __slots__ = (
        "abandoned",
        "delivered",
        "duplicated",
        "extras",
        "key",
        "last",
        "out_of_order",
        "pos",
        "resume_sizes",
        "resumes",
        "room",
        "runs",
        "skips",
        "start",
        "truncated_resumes",
    )

    def __init__(self, room: RoomLog, key: str) -> None:
        self.room = room
        self.key = key
        self.start: int | None = None  # seq of the first ``subscribed``
        self.last = 0  # highest seq held (the chain position)
        self.pos = -1  # index in room.seqs of the highest canonical seq delivered
        self.runs: list[list[int]] = []  # disjoint increasing [first, last] index runs
        self.extras: set[int] = set()  # seqs delivered behind the room's head
        self.delivered = 0  # every delivery, duplicates included
        self.duplicated = 0
        self.out_of_order = 0
        self.skips = 0
        self.resumes = 0
        self.resume_sizes: list[int] = []
        self.truncated_resumes = 0
        self.abandoned = False

    # --- events ----------------------------------------------------------------------

    def subscribed(self, seq: int) -> None:
        """The first ``subscribed`` fixes the window start; later ones (resumes with
        ``since``) continue the same window."""
        if self.start is None:
            self.start = seq
            if seq > self.last:
                self.last = seq

    def resumed(self, size: int, *, truncated: bool = False) -> None:
        self.resumes += 1
        self.resume_sizes.append(size)
        if truncated:
            self.truncated_resumes += 1

    def deliver(self, seq: int, prev: int, *, skip: bool = False) -> None:
        """One ``message`` (or ``skip``) frame for this member."""
        self.delivered += 1
        if skip:
            self.skips += 1
        seqs = self.room.seqs
        n = len(seqs)
        pos = self.pos
        nxt = pos + 1
        if nxt < n and seqs[nxt] == seq:
            idx = nxt
        elif n == 0 or seq > seqs[n - 1]:
            seqs.append(seq)
            idx = n
        else:
            idx = self.room.index_of(seq)
        if idx > pos:
            runs = self.runs
            if runs and runs[-1][1] == pos and idx == nxt:
                runs[-1][1] = idx
            else:
                runs.append([idx, idx])
            self.pos = idx
        elif (idx >= 0 and self._in_runs(idx)) or seq in self.extras:
            self.duplicated += 1
            return
        else:
            # Behind this member's position in the room log (a seq other members of
            # this process already saw, or one older than the log's head).
            self.extras.add(seq)
        last = self.last
        if seq <= last or prev != last:
            self.out_of_order += 1
        if seq > last:
            self.last = seq

    def _in_runs(self, idx: int) -> bool:
        runs = self.runs
        i = bisect.bisect_right(runs, [idx, 1 << 62]) - 1
        return i >= 0 and runs[i][0] <= idx <= runs[i][1]

    def delivered_seqs(self) -> list[int]:
        """Every distinct seq delivered (for tests and examples; O(deliveries))."""
        seqs = self.room.seqs
        out = [seqs[i] for a, b in self.runs for i in range(a, b + 1)]
        out.extend(self.extras)
        return sorted(out)

    def export(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "room": self.room.room,
            "start": self.start,
            "last": self.last,
            "runs": self.runs,
            "extras": sorted(self.extras),
            "delivered": self.delivered,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "skips": self.skips,
            "resumes": self.resumes,
            "resume_sizes": self.resume_sizes,
            "truncated_resumes": self.truncated_resumes,
            "abandoned": self.abandoned,
        }


@dataclass
class SendLog:
    """A sender process's view: sends and acks, keyed by client_id."""

    scheduled: int = 0
    sent: int = 0  # first transmissions
    resent: int = 0  # retransmissions of an unacked client_id (after a reconnect)
    acked: int = 0  # distinct client_ids acked
    duplicate_acks: int = 0  # acks flagged duplicate=true by the gateway
    dedupe_failures: int = 0  # one client_id acked with two different seqs
    unknown_acks: int = 0  # acks for a client_id this process never sent
    errors: dict[str, int] = field(default_factory=dict)
    acks: dict[str, int] = field(default_factory=dict)  # client_id -> seq
    acked_by_room: dict[str, list[int]] = field(default_factory=dict)

    def on_schedule(self) -> None:
        self.scheduled += 1

    def on_sent(self, *, resend: bool = False) -> None:
        if resend:
            self.resent += 1
        else:
            self.sent += 1

    def on_ack(self, room: str, client_id: str, seq: int, *, duplicate: bool = False) -> bool:
        """Record the ack of a pending send; returns False if this client_id was already
        acked (then only a different seq is recorded, as a dedupe failure: the message
        would exist twice)."""
        if duplicate:
            self.duplicate_acks += 1
        known = self.acks.get(client_id)
        if known is not None:
            if known != seq:
                self.dedupe_failures += 1
            return False
        self.acks[client_id] = seq
        self.acked += 1
        self.acked_by_room.setdefault(room, []).append(seq)
        return True

    def on_late_ack(self, client_id: str, seq: int, *, duplicate: bool = False) -> None:
        """An ack for a client_id no longer pending (acked before, then retransmitted)."""
        if duplicate:
            self.duplicate_acks += 1
        known = self.acks.get(client_id)
        if known is None:
            self.unknown_acks += 1
        elif known != seq:
            self.dedupe_failures += 1

    def on_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def export(self) -> dict[str, Any]:
        return {
            "scheduled": self.scheduled,
            "sent": self.sent,
            "resent": self.resent,
            "acked": self.acked,
            "duplicate_acks": self.duplicate_acks,
            "dedupe_failures": self.dedupe_failures,
            "unknown_acks": self.unknown_acks,
            "errors": dict(self.errors),
            "acked_by_room": {r: list(s) for r, s in self.acked_by_room.items()},
        }


# --- reconciliation ------------------------------------------------------------------


@dataclass
class MemberResult:
    key: str
    room: str
    expected: int
    delivered: int  # distinct expected seqs received
    lost: int
    duplicated: int
    out_of_order: int
    unacked_delivered: int
    resumes: int
    abandoned: bool
    lost_examples: list[int]


@dataclass
class RoomResult:
    room: str
    members: int = 0
    acked: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unacked_delivered: int = 0
    seq_conflicts: int = 0  # one seq acked to two different sends
    lost_examples: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Accounting:
    """The whole run's delivery accounting."""

    rooms: dict[str, RoomResult]
    members: list[MemberResult]
    sends: dict[str, Any]
    resume_sizes: list[int] = field(default_factory=list)
    truncated_resumes: int = 0

    def totals(self) -> dict[str, Any]:
        keys = (
            "expected",
            "delivered",
            "lost",
            "duplicated",
            "out_of_order",
            "unacked_delivered",
            "seq_conflicts",
        )
        out: dict[str, Any] = {k: sum(getattr(r, k) for r in self.rooms.values()) for k in keys}
        out["rooms"] = len(self.rooms)
        out["members"] = len(self.members)
        out["members_with_loss"] = sum(1 for m in self.members if m.lost)
        out["abandoned_members"] = sum(1 for m in self.members if m.abandoned)
        out["resumes"] = len(self.resume_sizes)
        out["resumed_messages"] = sum(self.resume_sizes)
        out["max_resume"] = max(self.resume_sizes, default=0)
        out["truncated_resumes"] = self.truncated_resumes
        out.update(self.sends)
        return out


def merge_sends(
    exports: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Sum the senders' counters; collect every acked seq by room (unsorted)."""
    totals: dict[str, Any] = {
        "scheduled": 0,
        "sent": 0,
        "resent": 0,
        "acked": 0,
        "duplicate_acks": 0,
        "dedupe_failures": 0,
        "unknown_acks": 0,
        "errors": {},
    }
    acked: dict[str, list[int]] = {}
    for e in exports:
        for k in (
            "scheduled",
            "sent",
            "resent",
            "acked",
            "duplicate_acks",
            "dedupe_failures",
            "unknown_acks",
        ):
            totals[k] += int(e[k])
        for code, n in e["errors"].items():
            totals["errors"][code] = totals["errors"].get(code, 0) + int(n)
        for room, seqs in e["acked_by_room"].items():
            acked.setdefault(room, []).extend(seqs)
    totals["unacked"] = totals["sent"] - totals["acked"]
    totals["unsent"] = totals["scheduled"] - totals["sent"]
    return totals, acked


def _member_result(
    m: Mapping[str, Any],
    canonical: Sequence[int],
    in_acked_prefix: Sequence[int],
    acked: Sequence[int],
    acked_set: set[int],
) -> MemberResult:
    start = m["start"]
    runs: list[list[int]] = m["runs"]
    extras: list[int] = m["extras"]
    if start is None:
        # Never subscribed: nothing was expected of it.
        return MemberResult(
            key=m["key"],
            room=m["room"],
            expected=0,
            delivered=0,
            lost=0,
            duplicated=m["duplicated"],
            out_of_order=m["out_of_order"],
            unacked_delivered=0,
            resumes=m["resumes"],
            abandoned=m["abandoned"],
            lost_examples=[],
        )
    horizon = m["last"] if m["abandoned"] else None

    def in_window(s: int) -> bool:
        return s > start and (horizon is None or s <= horizon)

    # Expected: acked seqs in (start, horizon].
    lo = bisect.bisect_right(acked, start)
    hi = len(acked) if horizon is None else bisect.bisect_right(acked, horizon)
    expected = max(0, hi - lo)
    # Canonical index window of (start, horizon].
    c_lo = bisect.bisect_right(canonical, start)
    c_hi = len(canonical) if horizon is None else bisect.bisect_right(canonical, horizon)
    got = 0
    distinct = 0
    for a, b in runs:
        distinct += b - a + 1
        a2, b2 = max(a, c_lo), min(b + 1, c_hi)
        if a2 < b2:
            got += in_acked_prefix[b2] - in_acked_prefix[a2]
    for s in extras:
        distinct += 1
        if s in acked_set and in_window(s):
            got += 1
    acked_delivered_any = sum(in_acked_prefix[b + 1] - in_acked_prefix[a] for a, b in runs) + sum(
        1 for s in extras if s in acked_set
    )
    lost = expected - got
    examples: list[int] = []
    if lost:
        have = set(extras)
        for a, b in runs:
            have.update(canonical[a : b + 1])
        for s in acked[lo:hi]:
            if s not in have:
                examples.append(s)
                if len(examples) >= MAX_EXAMPLES:
                    break
    return MemberResult(
        key=m["key"],
        room=m["room"],
        expected=expected,
        delivered=got,
        lost=lost,
        duplicated=m["duplicated"],
        out_of_order=m["out_of_order"],
        unacked_delivered=distinct - acked_delivered_any,
        resumes=m["resumes"],
        abandoned=m["abandoned"],
        lost_examples=examples,
    )


def reconcile(
    send_exports: Iterable[Mapping[str, Any]],
    member_exports: Iterable[tuple[Sequence[int], Iterable[Mapping[str, Any]]]],
) -> Accounting:
    """Join every sender's acks with every member's deliveries.

    ``member_exports`` is one ``(room_log_seqs, member_exports)`` pair per RoomLog (per
    room per process): the members' runs index into that room log's seqs.
    """
    sends, acked_by_room = merge_sends(send_exports)
    rooms: dict[str, RoomResult] = {}
    acked_sorted: dict[str, list[int]] = {}
    acked_sets: dict[str, set[int]] = {}
    for room, seqs in acked_by_room.items():
        unique = sorted(set(seqs))
        r = rooms.setdefault(room, RoomResult(room))
        r.acked = len(unique)
        r.seq_conflicts = len(seqs) - len(unique)
        acked_sorted[room] = unique
        acked_sets[room] = set(unique)
    results: list[MemberResult] = []
    sizes: list[int] = []
    truncated = 0
    for canonical, members in member_exports:
        prefix_cache: dict[str, list[int]] = {}
        for m in members:
            room = m["room"]
            acked = acked_sorted.get(room, [])
            aset = acked_sets.get(room, set())
            prefix = prefix_cache.get(room)
            if prefix is None:
                prefix = [0] * (len(canonical) + 1)
                for i, s in enumerate(canonical):
                    prefix[i + 1] = prefix[i] + (1 if s in aset else 0)
                prefix_cache[room] = prefix
            res = _member_result(m, canonical, prefix, acked, aset)
            results.append(res)
            sizes.extend(m["resume_sizes"])
            truncated += int(m["truncated_resumes"])
            r = rooms.setdefault(room, RoomResult(room))
            r.members += 1
            r.expected += res.expected
            r.delivered += res.delivered
            r.lost += res.lost
            r.duplicated += res.duplicated
            r.out_of_order += res.out_of_order
            r.unacked_delivered += res.unacked_delivered
            if res.lost_examples and len(r.lost_examples) < MAX_EXAMPLES:
                r.lost_examples[res.key] = res.lost_examples
    return Accounting(
        rooms=rooms, members=results, sends=sends, resume_sizes=sizes, truncated_resumes=truncated
    )
