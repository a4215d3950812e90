"""The senders' timetable (roomcast.load.worker.first_dues): sending ends on time even
when a rate's interval is longer than the run."""

from __future__ import annotations

import random

from roomcast.load.worker import first_dues

SECOND_US = 1_000_000


def test_no_first_turn_after_the_end_of_sending() -> None:
    # 30 s of sending; senders at 1/s, one a minute (chat-mix's inbox reads) and one
    # every 10 minutes (its reactions at a tenth of the rates).
    intervals = [SECOND_US] * 50 + [60 * SECOND_US] * 50 + [600 * SECOND_US] * 50
    t0, end = 1_000 * SECOND_US, 1_030 * SECOND_US
    heap = first_dues(intervals, t0, end, random.Random(1))
    assert heap
    assert max(due for due, _ in heap) < end
    senders = {i for _, i in heap}
    assert set(range(50)) <= senders  # every 1/s sender starts within its first second
    assert 0 < len(senders & set(range(50, 100))) < 50  # about half the 1/min ones
    assert min(due for due, _ in heap) >= t0
    assert heap[0][0] == min(due for due, _ in heap)  # a heap: the earliest first
