"""Every send, ack and delivery of a chaos run, and the checks on them.

Kept apart from the clients so that the checks read plain records: a send is acked once
(an ack repeated for a resend must carry the same ``seq``), and every receiver of a room
must hold exactly the room's acked messages, each once, in ``seq`` order, with every
``prev`` naming the message before it. Times are ``time.monotonic()`` of this process.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Send:
    client_id: str
    room: str
    sender: str
    scheduled_at: float
    transmits: int = 0
    acked_at: float | None = None
    seq: int | None = None
    ack_seqs: set[int] = field(default_factory=set)  # every seq any ack named
    refused: str | None = None  # an error code after which it was not retried


@dataclass(frozen=True)
class Delivery:
    seq: int
    prev: int
    client_id: str
    received_at: float


@dataclass
class Ledger:
    sends: dict[str, Send] = field(default_factory=dict)
    # (receiver, room) -> deliveries in arrival order
    deliveries: dict[tuple[str, str], list[Delivery]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # Frames that name a room the receiver is not in, or are not JSON objects.
    unexpected: list[str] = field(default_factory=list)

    def scheduled(self, send: Send) -> None:
        self.sends[send.client_id] = send

    def acked(self, client_id: str, seq: int, at: float) -> None:
        send = self.sends.get(client_id)
        if send is None:
            self.unexpected.append(f"ack for unknown client_id {client_id}")
            return
        send.ack_seqs.add(seq)
        if send.acked_at is None:
            send.acked_at = at
            send.seq = seq

    def delivered(self, receiver: str, room: str, delivery: Delivery) -> None:
        self.deliveries[(receiver, room)].append(delivery)

    # --- views ------------------------------------------------------------------------

    def unacked(self) -> list[Send]:
        return [s for s in self.sends.values() if s.acked_at is None and s.refused is None]

    def acked_by_room(self) -> dict[str, dict[int, str]]:
        """room -> {seq: client_id} of every acked send."""
        rooms: dict[str, dict[int, str]] = defaultdict(dict)
        for send in self.sends.values():
            if send.seq is not None:
                rooms[send.room][send.seq] = send.client_id
        return rooms

    def last_seq(self, receiver: str, room: str) -> int:
        got = self.deliveries.get((receiver, room))
        return got[-1].seq if got else 0

    # --- checks -----------------------------------------------------------------------

    def send_problems(self) -> list[str]:
        problems = [
            f"{s.client_id} acked with several seqs {sorted(s.ack_seqs)}"
            for s in self.sends.values()
            if len(s.ack_seqs) > 1
        ]
        problems += [
            f"{s.client_id} refused: {s.refused}" for s in self.sends.values() if s.refused
        ]
        problems += [f"{s.client_id} never acked" for s in self.unacked()]
        seqs: dict[int, str] = {}
        for send in self.sends.values():
            if send.seq is None:
                continue
            other = seqs.setdefault(send.seq, send.client_id)
            if other != send.client_id:
                problems.append(f"seq {send.seq} acked for {other} and {send.client_id}")
        return problems + self.unexpected

    def delivery_problems(self, receivers: dict[str, list[str]]) -> list[str]:
        """``receivers``: receiver -> the rooms it subscribed to from the room's start."""
        acked = self.acked_by_room()
        problems: list[str] = []
        for receiver, rooms in receivers.items():
            for room in rooms:
                got = self.deliveries.get((receiver, room), [])
                problems += _chain_problems(receiver, room, got, acked.get(room, {}))
        return problems

    def history_problems(self, room: str, items: list[tuple[int, str]]) -> list[str]:
        """``items``: (seq, client_id) of every message history lists for the room."""
        acked = self.acked_by_room().get(room, {})
        problems: list[str] = []
        seen_seq: set[int] = set()
        seen_cid: dict[str, int] = {}
        for seq, cid in items:
            if seq in seen_seq:
                problems.append(f"history {room}: seq {seq} listed twice")
            seen_seq.add(seq)
            if cid in seen_cid:
                problems.append(f"history {room}: {cid} stored twice (seqs {seen_cid[cid]}, {seq})")
            seen_cid[cid] = seq
            if acked.get(seq) not in (None, cid):
                problems.append(f"history {room}: seq {seq} is {cid}, acked as {acked[seq]}")
        missing = sorted(set(acked) - seen_seq)
        if missing:
            problems.append(
                f"history {room}: {len(missing)} acked messages missing: {missing[:20]}"
            )
        extra = sorted(seen_seq - set(acked))
        if extra:
            problems.append(f"history {room}: {len(extra)} messages never acked: {extra[:20]}")
        return problems


def _chain_problems(
    receiver: str, room: str, got: list[Delivery], acked: dict[int, str]
) -> list[str]:
    where = f"{receiver} in {room}"
    problems: list[str] = []
    last = 0
    seen: set[int] = set()
    for d in got:
        if d.seq in seen:
            problems.append(f"{where}: seq {d.seq} delivered twice")
        elif d.seq < last:
            problems.append(f"{where}: seq {d.seq} after {last} (out of order)")
        elif d.prev != last:
            problems.append(f"{where}: seq {d.seq} has prev {d.prev}, last delivered {last}")
        if acked.get(d.seq) not in (None, d.client_id):
            problems.append(f"{where}: seq {d.seq} is {d.client_id}, acked as {acked[d.seq]}")
        seen.add(d.seq)
        last = max(last, d.seq)
    missing = sorted(set(acked) - seen)
    if missing:
        problems.append(f"{where}: {len(missing)} acked messages never delivered: {missing[:20]}")
    extra = sorted(seen - set(acked))
    if extra:
        problems.append(f"{where}: {len(extra)} delivered messages never acked: {extra[:20]}")
    return problems
