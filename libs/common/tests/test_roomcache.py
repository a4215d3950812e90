"""The shared room answer cache's rules, in-process with a scripted fetch: lookups overtaken
by an invalidation of their user and room (or of the room, or of everything) are asked
again and never stored; invalidations elsewhere do not disturb them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from roomcast.common.errors import DependencyUnavailable
from roomcast.common.roomcache import MAX_LOOKUP_ATTEMPTS, RoomAnswerCache

ROOM, OTHER_ROOM = "r1", "r2"
ALICE, BOB = "alice", "bob"


class ScriptedRooms:
    """Answers ``truth`` as it is when asked, released only when the test says so."""

    def __init__(self) -> None:
        self.truth: dict[tuple[str, str], bool] = {}
        self.calls: list[tuple[str, str]] = []
        self.gates: list[asyncio.Event] = []
        self._called = asyncio.Event()

    async def fetch(self, user_id: str, room_id: str, _token: str) -> bool:
        answer = self.truth.get((user_id, room_id), False)  # decided now...
        self.calls.append((user_id, room_id))
        gate = asyncio.Event()
        self.gates.append(gate)
        self._called.set()
        await gate.wait()  # ...delivered later
        return answer

    async def called(self, n: int) -> None:
        """Wait until rooms has been asked ``n`` times."""
        while len(self.gates) < n:
            self._called.clear()
            await self._called.wait()

    async def release(self, n: int) -> None:
        """Wait for the n-th call, then let it answer."""
        await self.called(n)
        self.gates[n - 1].set()


def cache_of(rooms: ScriptedRooms) -> RoomAnswerCache[bool]:
    return RoomAnswerCache(rooms.fetch, ttl_for=lambda _a: 60.0, max_entries=100)


@pytest.mark.parametrize(
    "invalidate",
    [
        lambda c: c.invalidate(BOB, ROOM),
        lambda c: c.invalidate_room(ROOM),
        lambda c: c.invalidate_all(),
    ],
    ids=["user", "room", "all"],
)
async def test_an_answer_overtaken_by_an_invalidation_is_asked_again(
    invalidate: Callable[[RoomAnswerCache[bool]], None],
) -> None:
    rooms = ScriptedRooms()
    rooms.truth[(BOB, ROOM)] = True
    cache = cache_of(rooms)
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.called(1)
    rooms.truth[(BOB, ROOM)] = False  # the kick, written while "member" is in flight
    invalidate(cache)
    await rooms.release(1)
    await rooms.release(2)
    assert await lookup is False
    assert rooms.calls == [(BOB, ROOM), (BOB, ROOM)]
    assert len(cache) == 1  # only the fresh answer is stored
    assert await cache.get(BOB, ROOM, "t") is False


async def test_an_invalidation_arriving_after_the_answer_but_before_the_caller_resumes() -> None:
    rooms = ScriptedRooms()
    rooms.truth[(BOB, ROOM)] = True
    cache = cache_of(rooms)
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.called(1)
    rooms.gates[0].set()
    rooms.truth[(BOB, ROOM)] = False
    # One loop step: the fetch finishes and stores; the caller has not resumed yet.
    await asyncio.sleep(0)
    assert cache.fresh(BOB, ROOM)
    assert not lookup.done()
    cache.invalidate(BOB, ROOM)
    await rooms.release(2)
    assert await lookup is False


async def test_invalidations_of_others_do_not_overtake_a_lookup() -> None:
    rooms = ScriptedRooms()
    rooms.truth[(BOB, ROOM)] = True
    cache = cache_of(rooms)
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.called(1)
    cache.invalidate(ALICE, ROOM)  # another user of the room
    cache.invalidate_room(OTHER_ROOM)  # another room
    await rooms.release(1)
    assert await lookup is True
    assert rooms.calls == [(BOB, ROOM)]
    assert cache.fresh(BOB, ROOM)


async def test_concurrent_lookups_share_one_call_and_all_see_the_overtake() -> None:
    rooms = ScriptedRooms()
    rooms.truth[(BOB, ROOM)] = True
    cache = cache_of(rooms)
    lookups = [asyncio.ensure_future(cache.get(BOB, ROOM, "t")) for _ in range(5)]
    await rooms.called(1)
    assert rooms.calls == [(BOB, ROOM)]
    rooms.truth[(BOB, ROOM)] = False
    cache.invalidate(BOB, ROOM)
    await rooms.release(1)
    await rooms.release(2)
    assert await asyncio.gather(*lookups) == [False] * 5
    assert rooms.calls == [(BOB, ROOM)] * 2


async def test_a_membership_in_constant_flux_is_unavailable_not_stale() -> None:
    rooms = ScriptedRooms()
    rooms.truth[(BOB, ROOM)] = True
    cache = cache_of(rooms)
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    for n in range(1, MAX_LOOKUP_ATTEMPTS + 1):
        await rooms.called(n)
        cache.invalidate(BOB, ROOM)
        await rooms.release(n)
    with pytest.raises(DependencyUnavailable):
        await lookup
    assert len(cache) == 0


async def test_the_overtaken_error_is_the_services_own() -> None:
    class Busy(DependencyUnavailable):
        code = "busy"

    rooms = ScriptedRooms()
    cache = RoomAnswerCache(rooms.fetch, ttl_for=lambda _a: 60.0, max_entries=100, overtaken=Busy)
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    for n in range(1, MAX_LOOKUP_ATTEMPTS + 1):
        await rooms.called(n)
        cache.invalidate_room(ROOM)
        await rooms.release(n)
    with pytest.raises(Busy):
        await lookup


async def test_observe_counts_hits_misses_and_overtaken_lookups() -> None:
    rooms = ScriptedRooms()
    seen: list[str] = []
    cache = RoomAnswerCache(
        rooms.fetch, ttl_for=lambda _a: 60.0, max_entries=100, observe=seen.append
    )
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.called(1)
    cache.invalidate(BOB, ROOM)
    await rooms.release(1)
    await rooms.release(2)
    await lookup
    await cache.get(BOB, ROOM, "t")
    assert seen == ["miss", "overtaken", "hit"]


async def test_an_answer_with_no_ttl_is_used_once_and_not_stored() -> None:
    rooms = ScriptedRooms()
    rooms.truth[(BOB, ROOM)] = False
    cache = RoomAnswerCache(
        rooms.fetch, ttl_for=lambda member: 60.0 if member else 0.0, max_entries=100
    )
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.release(1)
    assert await lookup is False
    assert len(cache) == 0


async def test_peek_answers_only_what_get_would_answer_without_asking() -> None:
    rooms = ScriptedRooms()
    rooms.truth[(BOB, ROOM)] = True
    now = [0.0]
    seen: list[str] = []
    cache = RoomAnswerCache(
        rooms.fetch,
        ttl_for=lambda _a: 60.0,
        max_entries=100,
        observe=seen.append,
        clock=lambda: now[0],
    )
    assert cache.peek(BOB, ROOM) is None  # never asked: the caller must await get()
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.called(1)
    assert cache.peek(BOB, ROOM) is None  # asked, not answered yet
    await rooms.release(1)
    assert await lookup is True
    assert cache.peek(BOB, ROOM) is True
    assert cache.peek(ALICE, ROOM) is None
    assert seen == ["miss", "hit"]  # a peek that answers counts as a hit
    cache.invalidate(BOB, ROOM)  # a kick: the cached answer is gone at once
    assert cache.peek(BOB, ROOM) is None
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.release(2)
    await lookup
    now[0] = 61.0  # past its TTL
    assert cache.peek(BOB, ROOM) is None
    assert len(rooms.calls) == 2  # peek never asked rooms


@pytest.mark.parametrize(
    ("invalidate", "overtaken"),
    [
        (lambda c: c.invalidate(BOB, ROOM), {BOB}),
        (lambda c: c.invalidate_room(ROOM), {ALICE, BOB}),
        (lambda c: c.invalidate_all(), {ALICE, BOB}),
        (lambda c: c.invalidate_room(OTHER_ROOM), set()),
    ],
    ids=["user", "room", "all", "other-room"],
)
async def test_a_batch_answer_overtaken_for_a_user_is_neither_used_nor_stored(
    invalidate: Callable[[RoomAnswerCache[bool]], None], overtaken: set[str]
) -> None:
    """One call about many users of a room (the revalidation sweep): an invalidation
    while it is in flight makes the answers of the users it names stale."""
    cache = cache_of(ScriptedRooms())
    gate = asyncio.Event()
    asked = asyncio.Event()

    async def fetch_room(user_ids: list[str]) -> dict[str, bool]:
        asked.set()
        await gate.wait()
        return dict.fromkeys(user_ids, True)

    batch = asyncio.ensure_future(cache.get_room(ROOM, [ALICE, BOB], fetch_room))
    await asked.wait()
    invalidate(cache)
    gate.set()
    decided = await batch
    assert decided == {u: None if u in overtaken else True for u in (ALICE, BOB)}
    assert {u for u in (ALICE, BOB) if cache.fresh(u, ROOM)} == {ALICE, BOB} - overtaken


async def test_a_member_answer_is_served_stale_in_its_grace_but_never_a_refusal() -> None:
    """Past its TTL a "member" answer is still served (counted "stale") for its grace,
    while fresh() already says it is due for the revalidation sweep; after the grace
    rooms is asked again. A refusal gets no grace, and an invalidation ends the grace."""
    rooms = ScriptedRooms()
    rooms.truth[(BOB, ROOM)] = True
    now = [0.0]
    seen: list[str] = []
    cache = RoomAnswerCache(
        rooms.fetch,
        ttl_for=lambda member: 30.0 if member else 2.0,
        max_entries=100,
        observe=seen.append,
        clock=lambda: now[0],
        grace_for=lambda member: 8.0 if member else 0.0,
    )
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.release(1)
    assert await lookup is True
    now[0] = 35.0  # past the TTL, within the grace
    assert not cache.fresh(BOB, ROOM)  # the sweep re-asks it...
    assert cache.peek(BOB, ROOM) is True  # ...while sends keep their answer
    assert await cache.get(BOB, ROOM, "t") is True
    assert len(rooms.calls) == 1
    assert seen == ["miss", "stale", "stale"]
    cache.invalidate(BOB, ROOM)  # an event: no grace for a dropped answer
    assert cache.peek(BOB, ROOM) is None
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.release(2)
    assert await lookup is True
    now[0] = 35.0 + 30.0 + 8.0  # past TTL and grace
    assert cache.peek(BOB, ROOM) is None
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.release(3)
    await lookup
    # A refusal: 2 s of TTL, then asked again at once.
    lookup = asyncio.ensure_future(cache.get(ALICE, ROOM, "t"))
    await rooms.release(4)
    assert await lookup is False
    now[0] += 2.5
    assert cache.peek(ALICE, ROOM) is None


async def test_a_revalidation_does_not_take_an_answer_in_its_grace() -> None:
    rooms = ScriptedRooms()
    rooms.truth[(BOB, ROOM)] = True
    now = [0.0]
    cache = RoomAnswerCache(
        rooms.fetch,
        ttl_for=lambda _member: 30.0,
        max_entries=100,
        clock=lambda: now[0],
        grace_for=lambda _member: 8.0,
    )
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t"))
    await rooms.release(1)
    await lookup
    now[0] = 31.0
    rooms.truth[(BOB, ROOM)] = False  # removed, the event lost
    assert await cache.get(BOB, ROOM, "t") is True  # a send within the grace
    lookup = asyncio.ensure_future(cache.get(BOB, ROOM, "t", allow_stale=False))
    await rooms.release(2)
    assert await lookup is False  # the sweep's re-check asks rooms
