"""Fan-out gap repair in isolation: the order, uniqueness and completeness of the seqs
a room's live sockets receive when core-NATS messages arrive late, twice or never."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from roomcast.gateway.realtime.fanout import Fanout, RoomChannel, Subscriber
from roomcast.gateway.realtime.stream import ChatStream, StoredMessage


def _record(seq: int) -> bytes:
    return json.dumps({"id": f"m{seq}", "room_id": "r1", "text": f"t{seq}"}).encode()


class _Stream:
    """The stream holds every message 1..head; ``read`` answers what a repair asks for."""

    request_timeout = 1.0

    def __init__(self, head: int) -> None:
        self.head = head
        self.reads: list[tuple[int, int]] = []

    async def last_seq(self, room_id: str) -> int:
        return self.head

    async def read(
        self, room_id: str, *, after: int, upto: int, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        self.reads.append((after, upto))
        seqs = list(range(after + 1, upto + 1))
        return [StoredMessage(s, _record(s), None) for s in seqs[:limit]], len(seqs) <= limit


class _Socket:
    user_id = "u1"

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.rooms: dict[str, RoomChannel] = {}

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def seqs(self) -> list[int]:
        out: list[int] = []
        for f in self.frames:
            # An unmasked server text frame: 2 header bytes, or 4 past 125 bytes.
            out.append(int(json.loads(f[2:] if f[1] < 126 else f[4:])["seq"]))
        return out


async def _room(stream: _Stream, last: int) -> tuple[Fanout, RoomChannel, _Socket]:
    fanout = Fanout(cast(Any, None), cast(ChatStream, stream), max_replay=100, max_buffered=100)
    room = RoomChannel("r1")
    room.repairing = False
    room.last = last
    sock = _Socket()
    room.live[cast(Subscriber, sock)] = sock.write
    fanout.rooms["r1"] = room
    return fanout, room, sock


async def _settle(fanout: Fanout) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while fanout._tasks and asyncio.get_running_loop().time() < deadline:
        await asyncio.gather(*list(fanout._tasks))


def _live(fanout: Fanout, room: RoomChannel, seq: int, prev: int) -> None:
    fanout._process(room, seq, prev, _record(seq), None, 0.0)


async def test_duplicates_are_relayed_once() -> None:
    fanout, room, sock = await _room(_Stream(head=2), last=0)
    for seq, prev in [(1, 0), (1, 0), (2, 1), (1, 0), (2, 1)]:
        _live(fanout, room, seq, prev)
    assert sock.seqs() == [1, 2]


async def test_missing_messages_are_read_from_the_stream_in_order() -> None:
    stream = _Stream(head=5)
    fanout, room, sock = await _room(stream, last=1)
    _live(fanout, room, 5, 4)  # 2..4 never arrived
    await _settle(fanout)
    assert sock.seqs() == [2, 3, 4, 5]
    assert stream.reads == [(1, 4)]


async def test_out_of_order_arrivals_come_out_in_order_without_duplicates() -> None:
    stream = _Stream(head=4)
    fanout, room, sock = await _room(stream, last=0)
    _live(fanout, room, 3, 2)  # early: 1 and 2 are repaired
    _live(fanout, room, 1, 0)  # late arrivals while repairing
    _live(fanout, room, 2, 1)
    _live(fanout, room, 4, 3)
    await _settle(fanout)
    assert sock.seqs() == [1, 2, 3, 4]
