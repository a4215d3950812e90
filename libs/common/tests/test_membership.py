"""The shared membership client and its cache against the real rooms gRPC server (on a
free port, backed by a real SecantusDB database and a real nats-server): who is let in,
what each refusal becomes, how long answers are reused, and what one RPC serves."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import pytest
from prometheus_client import REGISTRY

from roomcast.common.errors import (
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    RoomcastError,
    Unauthenticated,
)
from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.membership import (
    NOT_FOUND,
    MembershipCache,
    RoomsClient,
    RoomsErrors,
)
from roomcast.common.mongo import connect_mongo
from roomcast.common.natsconn import connect_nats
from roomcast.common.tokens import AccessClaims, TokenVerifier
from roomcast.rooms.server import RunningRooms, start_server
from roomcast.rooms.settings import Settings as RoomsSettings
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc as pb_grpc
from roomcast.testing.processes import free_port

IssueToken = Callable[..., str]
# Generous for one RPC on a loaded 2-core machine; a refused connection fails faster.
RPC_TIMEOUT_SECONDS = 5.0
# Long enough that nothing expires during a test unless the test's clock says so.
TTL_SECONDS = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Person:
    token: str
    claims: AccessClaims


@dataclass
class RoomsUnderTest:
    running: RunningRooms
    stub: pb_grpc.RoomsAsyncStub
    target: str
    issue_token: IssueToken
    verifier: TokenVerifier

    async def person(self) -> Person:
        token = self.issue_token(user_id=uuid.uuid4().hex[:24])
        return Person(token, await self.verifier.verify(token))

    async def create(
        self, owner: Person, visibility: pb.Visibility.ValueType = pb.VISIBILITY_PUBLIC
    ) -> pb.Room:
        reply = await self.stub.CreateRoom(
            pb.CreateRoomRequest(name="room", visibility=visibility),
            metadata=bearer_metadata(owner.token),
        )
        return reply.room

    async def join(self, person: Person, room: pb.Room) -> None:
        await self.stub.JoinRoom(
            pb.JoinRoomRequest(room_id=room.id, invite_code=room.invite_code),
            metadata=bearer_metadata(person.token),
        )

    async def leave(self, person: Person, room: pb.Room) -> None:
        await self.stub.LeaveRoom(
            pb.LeaveRoomRequest(room_id=room.id), metadata=bearer_metadata(person.token)
        )


def checks_served(method: str = "CheckMembership") -> float:
    """Calls of ``method`` the rooms server has answered (any status)."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name != "roomcast_rooms_grpc_requests":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["method"] == method:
                total += sample.value
    return total


@pytest.fixture
async def rooms(
    mongo_url: str,
    mongo_db_name: str,
    nats_url: str,
    verifier: TokenVerifier,
    issue_token: IssueToken,
) -> AsyncIterator[RoomsUnderTest]:
    settings = RoomsSettings(
        mongo_url=mongo_url, mongo_db=mongo_db_name, nats_url=nats_url, host="127.0.0.1"
    )
    mongo = connect_mongo(mongo_url, timeout_ms=settings.mongo_timeout_ms, app_name="common-test")
    nc = await connect_nats(nats_url, name="common-test")
    running = await start_server(
        settings, verifier=verifier, mongo_client=mongo, nats_client=nc, port=0
    )
    target = f"127.0.0.1:{running.port}"
    channel = grpc.aio.insecure_channel(target)
    try:
        yield RoomsUnderTest(running, pb_grpc.RoomsStub(channel), target, issue_token, verifier)
    finally:
        await channel.close()
        await running.stop(1.0)
        await nc.close()
        await mongo.close()


@pytest.fixture
async def client(rooms: RoomsUnderTest) -> AsyncIterator[RoomsClient]:
    c = RoomsClient(rooms.target, timeout=RPC_TIMEOUT_SECONDS)
    yield c
    await c.close()


def cache_of(
    client: RoomsClient,
    *,
    negative_ttl: float = 0.0,
    max_entries: int = 100,
    clock: Callable[[], float] | None = None,
) -> MembershipCache:
    return MembershipCache(
        client,
        ttl=TTL_SECONDS,
        negative_ttl=negative_ttl,
        max_entries=max_entries,
        clock=clock or FakeClock(),
    )


async def test_a_member_is_admitted_with_role_and_visibility_and_the_answer_is_reused(
    rooms: RoomsUnderTest, client: RoomsClient
) -> None:
    owner = await rooms.person()
    room = await rooms.create(owner)
    cache = cache_of(client)
    before = checks_served()
    first = await cache.require_member(owner.claims, room.id)
    assert (first.member, first.role, first.visibility) == (
        True,
        pb.ROLE_OWNER,
        pb.VISIBILITY_PUBLIC,
    )
    for _ in range(5):
        assert await cache.require_member(owner.claims, room.id) == first
    assert checks_served() - before == 1


async def test_outsiders_are_refused_as_not_member_or_not_found(
    rooms: RoomsUnderTest, client: RoomsClient
) -> None:
    owner, outsider = await rooms.person(), await rooms.person()
    public = await rooms.create(owner)
    private = await rooms.create(owner, pb.VISIBILITY_PRIVATE)
    cache = cache_of(client)
    with pytest.raises(Forbidden):
        await cache.require_member(outsider.claims, public.id)
    with pytest.raises(NotFound):
        await cache.require_member(outsider.claims, private.id)
    with pytest.raises(NotFound):
        await cache.require_member(outsider.claims, "0" * 24)  # no such room
    assert await cache.lookup(outsider.claims, private.id) is NOT_FOUND


async def test_without_a_negative_ttl_a_user_who_just_joined_is_admitted_at_once(
    rooms: RoomsUnderTest, client: RoomsClient
) -> None:
    owner, newcomer = await rooms.person(), await rooms.person()
    room = await rooms.create(owner)
    cache = cache_of(client, negative_ttl=0)
    with pytest.raises(Forbidden):
        await cache.require_member(newcomer.claims, room.id)
    await rooms.join(newcomer, room)
    assert (await cache.require_member(newcomer.claims, room.id)).role == pb.ROLE_MEMBER


async def test_a_negative_answer_is_kept_for_its_ttl_or_until_invalidated(
    rooms: RoomsUnderTest, client: RoomsClient
) -> None:
    owner, newcomer = await rooms.person(), await rooms.person()
    room = await rooms.create(owner)
    clock = FakeClock()
    cache = cache_of(client, negative_ttl=2.0, clock=clock)
    with pytest.raises(Forbidden):
        await cache.require_member(newcomer.claims, room.id)
    await rooms.join(newcomer, room)
    with pytest.raises(Forbidden):  # the refusal is still cached
        await cache.require_member(newcomer.claims, room.id)
    clock.now += 2.0
    assert (await cache.lookup(newcomer.claims, room.id)).member

    other = await rooms.create(owner)
    with pytest.raises(Forbidden):
        await cache.require_member(newcomer.claims, other.id)
    await rooms.join(newcomer, other)
    cache.invalidate(newcomer.claims.user_id, other.id)  # what a member_added event does
    assert (await cache.lookup(newcomer.claims, other.id)).member


@pytest.mark.parametrize(
    "invalidate",
    [
        lambda cache, user, room: cache.invalidate(user, room),
        lambda cache, user, room: cache.invalidate_room(room),
        lambda cache, user, room: cache.invalidate_all(),
    ],
    ids=["user", "room", "all"],
)
async def test_a_member_who_left_is_refused_once_invalidated(
    rooms: RoomsUnderTest,
    client: RoomsClient,
    invalidate: Callable[[MembershipCache, str, str], None],
) -> None:
    owner, member = await rooms.person(), await rooms.person()
    room = await rooms.create(owner)
    await rooms.join(member, room)
    cache = cache_of(client)
    assert (await cache.lookup(member.claims, room.id)).member
    await rooms.leave(member, room)
    assert cache.fresh(member.claims.user_id, room.id)
    invalidate(cache, member.claims.user_id, room.id)
    assert not cache.fresh(member.claims.user_id, room.id)
    with pytest.raises(Forbidden):
        await cache.require_member(member.claims, room.id)


async def test_a_member_answer_is_reused_until_its_ttl_then_asked_again(
    rooms: RoomsUnderTest, client: RoomsClient
) -> None:
    owner, member = await rooms.person(), await rooms.person()
    room = await rooms.create(owner)
    await rooms.join(member, room)
    clock = FakeClock()
    cache = cache_of(client, clock=clock)
    await cache.require_member(member.claims, room.id)
    await rooms.leave(member, room)
    clock.now += TTL_SECONDS - 1
    assert (await cache.lookup(member.claims, room.id)).member  # the price of the cache
    clock.now += 1
    assert not cache.fresh(member.claims.user_id, room.id)
    with pytest.raises(Forbidden):
        await cache.require_member(member.claims, room.id)


async def test_concurrent_lookups_of_one_key_cost_one_rpc(
    rooms: RoomsUnderTest, client: RoomsClient
) -> None:
    owner = await rooms.person()
    room = await rooms.create(owner)
    cache = cache_of(client)
    before = checks_served()
    answers = await asyncio.gather(*(cache.lookup(owner.claims, room.id) for _ in range(20)))
    assert all(a.member for a in answers)
    assert checks_served() - before == 1


# The gateway's default rooms deadline (rooms_timeout_seconds).
GATEWAY_TIMEOUT_SECONDS = 3.0


async def test_a_burst_of_distinct_checks_is_answered_within_the_deadline(
    rooms: RoomsUnderTest,
) -> None:
    # What a gateway sees when thousands of sockets subscribe at connect time: 1,500
    # distinct (user, room) checks at once. Sent all together, they queued in rooms and
    # MongoDB with every deadline running and most ended DEADLINE_EXCEEDED; each call's
    # deadline must cover rooms answering it, not the burst ahead of it.
    owner = await rooms.person()
    public = [await rooms.create(owner) for _ in range(10)]
    people = [await rooms.person() for _ in range(150)]
    burst = RoomsClient(rooms.target, timeout=GATEWAY_TIMEOUT_SECONDS)
    try:
        answers = await asyncio.gather(
            *(burst.check(p.token, room.id) for p in people for room in public),
            return_exceptions=True,
        )
    finally:
        await burst.close()
    failed = [a for a in answers if isinstance(a, BaseException)]
    assert not failed, f"{len(failed)} of {len(answers)} checks failed, e.g. {failed[0]!r}"
    assert all(
        not a.member and a.visibility == pb.VISIBILITY_PUBLIC
        for a in answers
        if not isinstance(a, BaseException)
    )


async def test_a_call_that_waits_too_long_for_a_slot_is_unavailable(
    rooms: RoomsUnderTest,
) -> None:
    owner = await rooms.person()
    room = await rooms.create(owner)
    # One slot, and no time to wait for it: the second of two concurrent calls is
    # refused as unavailable (retry) instead of queueing behind the first.
    narrow = RoomsClient(
        rooms.target, timeout=RPC_TIMEOUT_SECONDS, max_in_flight=1, max_queue_seconds=0.0
    )
    try:
        answers = await asyncio.gather(
            narrow.check(owner.token, room.id),
            narrow.check(owner.token, room.id),
            return_exceptions=True,
        )
    finally:
        await narrow.close()
    assert not isinstance(answers[0], BaseException)
    assert answers[0].member
    assert isinstance(answers[1], DependencyUnavailable)


async def test_past_max_entries_the_least_recently_stored_answer_is_dropped(
    rooms: RoomsUnderTest, client: RoomsClient
) -> None:
    owner = await rooms.person()
    first, second, third = [await rooms.create(owner) for _ in range(3)]
    cache = cache_of(client, max_entries=2)
    for room in (first, second, first, third):  # a hit does not keep `first`
        await cache.lookup(owner.claims, room.id)
    assert len(cache) == 2
    assert not cache.fresh(owner.claims.user_id, first.id)
    assert cache.fresh(owner.claims.user_id, second.id)
    assert cache.fresh(owner.claims.user_id, third.id)
    cache.invalidate_room(second.id)  # the index by room followed the eviction
    assert len(cache) == 1


async def test_a_member_asks_whether_another_user_is_a_member(
    rooms: RoomsUnderTest, client: RoomsClient
) -> None:
    owner, member, outsider = [await rooms.person() for _ in range(3)]
    room = await rooms.create(owner, pb.VISIBILITY_PRIVATE)
    await rooms.join(member, room)
    assert await client.check_other(owner.token, room.id, member.claims.user_id) is True
    assert await client.check_other(owner.token, room.id, outsider.claims.user_id) is False
    with pytest.raises(NotFound):  # an outsider learns nothing about a private room
        await client.check_other(outsider.token, room.id, member.claims.user_id)
    public = await rooms.create(owner)
    with pytest.raises(Forbidden):  # nor about the members of a public one
        await client.check_other(outsider.token, public.id, owner.claims.user_id)


class ServiceError(RoomcastError):
    """A service's own error, built by its RoomsErrors."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message, code=kind)


SERVICE_ERRORS = RoomsErrors(
    not_found=lambda m: ServiceError("not_found", m),
    not_member=lambda m: ServiceError("not_member", m),
    unauthenticated=lambda m: ServiceError("unauthenticated", m),
    invalid=lambda m: ServiceError("invalid", m),
    unavailable=lambda m: ServiceError("unavailable", m),
)


async def test_each_refusal_becomes_the_services_own_error(rooms: RoomsUnderTest) -> None:
    owner, outsider = await rooms.person(), await rooms.person()
    public = await rooms.create(owner)
    private = await rooms.create(owner, pb.VISIBILITY_PRIVATE)
    client = RoomsClient(rooms.target, timeout=RPC_TIMEOUT_SECONDS, errors=SERVICE_ERRORS)
    cache = cache_of(client)
    try:
        cases: list[tuple[str, AccessClaims, str]] = [
            ("not_found", outsider.claims, private.id),
            ("not_member", outsider.claims, public.id),
            ("invalid", owner.claims, "not-a-room-id"),
        ]
        for kind, claims, room_id in cases:
            with pytest.raises(ServiceError) as caught:
                await cache.require_member(claims, room_id)
            assert caught.value.code == kind
        forged = dataclasses.replace(owner.claims, raw=owner.token[:-4] + "AAAA")
        with pytest.raises(ServiceError) as caught:
            await cache.require_member(forged, public.id)
        assert caught.value.code == "unauthenticated"
    finally:
        await client.close()


async def test_default_errors_are_the_common_classes(rooms: RoomsUnderTest) -> None:
    owner = await rooms.person()
    room = await rooms.create(owner)
    client = RoomsClient(rooms.target, timeout=RPC_TIMEOUT_SECONDS)
    try:
        with pytest.raises(InvalidInput):
            await client.check(owner.token, "not-a-room-id")
        with pytest.raises(Unauthenticated):
            await client.check("not.a.token", room.id)
    finally:
        await client.close()


async def test_rooms_unreachable_is_unavailable_and_not_cached(
    rooms: RoomsUnderTest,
) -> None:
    owner = await rooms.person()
    room = await rooms.create(owner)
    down = RoomsClient(f"127.0.0.1:{free_port()}", timeout=RPC_TIMEOUT_SECONDS)
    cache = cache_of(down)
    try:
        with pytest.raises(DependencyUnavailable):
            await cache.require_member(owner.claims, room.id)
        assert len(cache) == 0
    finally:
        await down.close()
    # The same cache type against the live server answers: nothing stale was kept.
    up = RoomsClient(rooms.target, timeout=RPC_TIMEOUT_SECONDS)
    try:
        assert (await cache_of(up).lookup(owner.claims, room.id)).member
    finally:
        await up.close()


async def test_one_filter_call_answers_a_room_and_fills_the_cache(
    rooms: RoomsUnderTest, client: RoomsClient
) -> None:
    owner = await rooms.person()
    room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
    members = [await rooms.person() for _ in range(4)]
    left = await rooms.person()
    for person in (*members, left):
        await rooms.join(person, room)
    await rooms.leave(left, room)
    cache = cache_of(client)
    everyone = [owner, *members, left]
    before = (checks_served(), checks_served("FilterMembers"))

    decided = await cache.lookup_room(
        room.id, members[0].claims, [p.claims.user_id for p in everyone]
    )

    assert set(decided) == {p.claims.user_id for p in everyone}
    for person in everyone:
        answer = decided[person.claims.user_id]
        assert answer is not None
        assert answer.member == (person is not left)
    assert decided[owner.claims.user_id] == dataclasses.replace(
        decided[owner.claims.user_id],
        member=True,
        role=pb.ROLE_OWNER,
        visibility=pb.VISIBILITY_PRIVATE,
    )
    assert decided[left.claims.user_id] is NOT_FOUND
    # The members' own lookups are answered from the cache the call filled.
    for person in (owner, *members):
        assert (await cache.require_member(person.claims, room.id)).member
    assert (checks_served(), checks_served("FilterMembers")) == (before[0], before[1] + 1)

    # A refused asker (no longer a member) decides only about itself.
    refused = await cache.lookup_room(
        room.id, left.claims, [left.claims.user_id, owner.claims.user_id]
    )
    assert refused == {left.claims.user_id: NOT_FOUND}
