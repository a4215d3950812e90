"""Membership checks: the rooms service over gRPC, behind a short-lived cache.

Every subscribe and send at a gateway, and every history read, asks "is this user a
member of this room?". rooms answers with the caller's token (the caller's own access
token is forwarded, so rooms applies its own authorization). Answers are cached per
(user, room) by :class:`~roomcast.common.roomcache.RoomAnswerCache`:

- a "member" answer for ``ttl`` seconds, a "not a member"/"not found" answer for the
  shorter ``negative_ttl`` (0: not cached, so a user who just joined is let in at once);
- rooms' membership events drop the affected entries at once (a service that follows
  them calls :meth:`MembershipCache.invalidate` / ``invalidate_room``); after a NATS
  reconnect, ``invalidate_all`` (events may have been missed);
- concurrent lookups of the same key share one RPC (a reconnect storm resubscribing
  thousands of sockets costs one call per distinct key);
- a lookup overtaken by an invalidation is neither cached nor used: it is asked again,
  so a subscribe in flight during a kick does not admit.

Errors stay each service's own (typed in its errors.py, mapped at its edge): the
service hands the client a :class:`RoomsErrors` that builds them.

API::

    Membership(member, role, visibility); NOT_FOUND
    RoomsErrors(not_found=, not_member=, unauthenticated=, invalid=, unavailable=)
        each a callable message -> RoomcastError (an error class fits); the default
        builds the roomcast.common.errors classes
    RoomsClient(target, *, timeout, errors=RoomsErrors(), max_in_flight=32,
                max_queue_seconds=30.0)
        at most max_in_flight RPCs at once, the rest wait for a slot (up to
        max_queue_seconds, then unavailable) before their deadline starts;
        .channel (created on first use, inside the running loop), .stub
        await .check(token, room_id) -> Membership
        await .check_other(token, room_id, user_id) -> bool   (asked by a member)
        await .filter_members(token, room_id, user_ids) -> {user_id: Membership} | None
            (one FilterMembers, at most MAX_FILTER_IDS ids; None: the asker refused);
        .filter_supported
        await .close()
    MembershipCache(client, *, ttl, negative_ttl, max_entries, observe=None, member_grace=0,
                    clock=time.monotonic)
        await .lookup(claims, room_id, allow_stale=True) -> Membership
        await .lookup_room(room_id, asker, user_ids) -> {user_id: Membership | None}
        .cached(claims, room_id) -> Membership | None   (a hit, without an await)
        await .require_member(claims, room_id) -> Membership  (or raise not_found /
            not_member)
        .fresh(user_id, room_id); .invalidate(user_id, room_id);
        .invalidate_room(room_id); .invalidate_all(); len()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc

from roomcast.common.errors import (
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    RoomcastError,
    Unauthenticated,
)
from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.roomcache import RoomAnswerCache
from roomcast.common.tokens import AccessClaims
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc

MakeError = Callable[[str], RoomcastError]

# CheckMembership calls a client keeps in flight at once; the rest wait for a slot
# before their deadline starts. rooms answers each with one MongoDB point read, and a
# burst beyond what the database serves concurrently only queues there with every
# deadline running: 2,000 sockets subscribing at connect time sent ~3,000 distinct
# checks at once and most timed out together (then were retried, adding load). 32 keeps
# rooms' share of MongoDB busy (its pool holds 100) while each call's deadline measures
# rooms' answer, not the burst ahead of it.
DEFAULT_MAX_IN_FLIGHT = 32
# User ids in one FilterMembers call: rooms' bound (its validation.MAX_FILTER_IDS),
# which keeps one request, its $in query and its answer small; callers chunk.
MAX_FILTER_IDS = 1000
# How long a call may wait for a slot: a connect-time burst of a few thousand distinct
# checks drains well within it at the few milliseconds each costs; longer means rooms
# is not keeping up and the caller gets "unavailable, retry" instead of waiting on.
DEFAULT_MAX_QUEUE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Membership:
    member: bool
    role: int  # rooms_pb2.Role value
    visibility: int  # rooms_pb2.Visibility value
    # Moderation (docs/moderation.md): the member's mute end (epoch ms, 0 = none; a
    # past value means it ended) and the room's slow mode, cached with the answer so
    # a send is checked without another call.
    muted_until_ms: int = 0
    slow_mode_seconds: int = 0


# A room that does not exist, or is private and the caller is not in it.
NOT_FOUND = Membership(member=False, role=0, visibility=0)


@dataclass(frozen=True, slots=True)
class RoomsErrors:
    """The service's error for each answer of rooms that is not a membership, built
    from the message the client proposes (rooms' own detail where it has one)."""

    # No such room, or a private one the caller is not in.
    not_found: MakeError = field(default=NotFound)
    # A public room the caller (or the asked-about user) has not joined.
    not_member: MakeError = field(default=Forbidden)
    # rooms refused the token.
    unauthenticated: MakeError = field(default=Unauthenticated)
    # rooms refused an id as malformed.
    invalid: MakeError = field(default=InvalidInput)
    # rooms unreachable, too slow, or the membership changing under the lookup.
    unavailable: MakeError = field(default=DependencyUnavailable)


class RoomsClient:
    """A gRPC client of rooms' ``CheckMembership``."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        errors: RoomsErrors | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_queue_seconds: float = DEFAULT_MAX_QUEUE_SECONDS,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.errors = errors or RoomsErrors()
        self.max_queue_seconds = max_queue_seconds
        self._slots = asyncio.Semaphore(max_in_flight)
        self._channel: grpc.aio.Channel | None = None
        self._stub: rooms_pb2_grpc.RoomsAsyncStub | None = None
        # False once rooms answered FilterMembers with UNIMPLEMENTED (see filter_members).
        self.filter_supported = True

    @property
    def channel(self) -> grpc.aio.Channel:
        # Created on first use, inside the running event loop grpc.aio binds to.
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        return self._channel

    @property
    def stub(self) -> rooms_pb2_grpc.RoomsAsyncStub:
        if self._stub is None:
            self._stub = rooms_pb2_grpc.RoomsStub(self.channel)
        return self._stub

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of ``max_in_flight`` slots (see DEFAULT_MAX_IN_FLIGHT)."""
        try:
            async with asyncio.timeout(self.max_queue_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise self.errors.unavailable("membership check unavailable, retry") from None
        try:
            yield
        finally:
            self._slots.release()

    async def check(self, token: str, room_id: str) -> Membership:
        """The caller's own membership; NOT_FOUND for an unknown or hidden room."""
        try:
            async with self._slot():
                reply = await self.stub.CheckMembership(
                    rooms_pb2.CheckMembershipRequest(room_id=room_id),
                    metadata=bearer_metadata(token),
                    timeout=self.timeout,
                )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return NOT_FOUND
            if code == grpc.StatusCode.PERMISSION_DENIED:
                return Membership(member=False, role=0, visibility=rooms_pb2.VISIBILITY_UNSPECIFIED)
            raise self._error(exc, invalid="invalid room id") from exc
        return Membership(
            bool(reply.member),
            int(reply.role),
            int(reply.visibility),
            muted_until_ms=int(reply.muted_until_ms),
            slow_mode_seconds=int(reply.slow_mode_seconds),
        )

    async def check_other(self, token: str, room_id: str, user_id: str) -> bool:
        """Is ``user_id`` a member? Asked by a member (rooms answers members only)."""
        try:
            async with self._slot():
                reply = await self.stub.CheckMembership(
                    rooms_pb2.CheckMembershipRequest(room_id=room_id, user_id=user_id),
                    metadata=bearer_metadata(token),
                    timeout=self.timeout,
                )
        except grpc.aio.AioRpcError as exc:
            # The asker was a member a moment ago (cached): these mean that changed.
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise self.errors.not_found("room not found") from exc
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise self.errors.not_member("not a member of this room") from exc
            raise self._error(exc, invalid="invalid id") from exc
        return bool(reply.member)

    async def filter_members(
        self, token: str, room_id: str, user_ids: list[str]
    ) -> dict[str, Membership] | None:
        """Every asked user's membership, from one ``FilterMembers`` call (at most
        MAX_FILTER_IDS ids) asked by the token's user; None when rooms refuses that
        user (not a member, or the room is gone or hidden). rooms without the RPC (an
        older version during a rolling upgrade) clears :attr:`filter_supported` and
        raises unavailable: the caller falls back to :meth:`check` per user."""
        try:
            async with self._slot():
                reply = await self.stub.FilterMembers(
                    rooms_pb2.FilterMembersRequest(room_id=room_id, user_ids=user_ids),
                    metadata=bearer_metadata(token),
                    timeout=self.timeout,
                )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                return None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                self.filter_supported = False
            raise self._error(exc, invalid="invalid id") from exc
        visibility = int(reply.visibility)
        # A non-member's answer, as check() would give it to that user: a hidden room
        # is "not found", a public one "not a member".
        outsider = (
            Membership(member=False, role=0, visibility=visibility)
            if visibility == rooms_pb2.VISIBILITY_PUBLIC
            else NOT_FOUND
        )
        answers = dict.fromkeys(user_ids, outsider)
        for found in reply.members:
            answers[found.user_id] = Membership(
                True,
                int(found.role),
                visibility,
                muted_until_ms=int(found.muted_until_ms),
                slow_mode_seconds=int(reply.slow_mode_seconds),
            )
        return answers

    def _error(self, exc: grpc.aio.AioRpcError, *, invalid: str) -> RoomcastError:
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return self.errors.unauthenticated(exc.details() or "token rejected by rooms")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return self.errors.invalid(exc.details() or invalid)
        return self.errors.unavailable("membership check unavailable, retry")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None


class MembershipCache:
    """The caller's own membership per (user, room), cached (see roomcache.py)."""

    def __init__(
        self,
        client: RoomsClient,
        *,
        ttl: float,
        negative_ttl: float,
        max_entries: int,
        observe: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        member_grace: float = 0.0,
    ) -> None:
        self.client = client
        self._errors = client.errors
        # member_grace: how long after its TTL a "member" answer is still served while
        # a sweep refreshes it (roomcache.py); refusals never get one.
        self._cache: RoomAnswerCache[Membership] = RoomAnswerCache(
            lambda _user_id, room_id, token: client.check(token, room_id),
            ttl_for=lambda answer: ttl if answer.member else negative_ttl,
            max_entries=max_entries,
            observe=observe,
            clock=clock,
            overtaken=client.errors.unavailable,
            grace_for=(lambda answer: member_grace if answer.member else 0.0)
            if member_grace > 0
            else None,
        )

    async def lookup(
        self, claims: AccessClaims, room_id: str, *, allow_stale: bool = True
    ) -> Membership:
        """``allow_stale=False``: a revalidation, which must not take a member answer
        in its grace for the fresh one it is there to fetch."""
        return await self._cache.get(claims.user_id, room_id, claims.raw, allow_stale=allow_stale)

    async def lookup_room(
        self, room_id: str, asker: AccessClaims, user_ids: list[str]
    ) -> dict[str, Membership | None]:
        """Many users' memberships of one room from one FilterMembers call (at most
        MAX_FILTER_IDS) asked with ``asker``'s token, stored like :meth:`lookup`'s.
        The result names the users decided: an answer, or None when an invalidation
        overtook it (ask later). When rooms refuses the asker only the asker is
        decided (not a member); ask again for the others with another user's token.
        Raises the client's errors (rooms unavailable, the asker's token refused)."""

        async def fetch(ids: list[str]) -> dict[str, Membership]:
            answers = await self.client.filter_members(asker.raw, room_id, ids)
            if answers is None:
                return {asker.user_id: NOT_FOUND}
            return answers

        return await self._cache.get_room(room_id, user_ids, fetch)

    def cached(self, claims: AccessClaims, room_id: str) -> Membership | None:
        """The cached answer (member or not) without an await; None on a miss, where
        :meth:`lookup` would ask rooms. For a hot path that awaits only on a miss."""
        return self._cache.peek(claims.user_id, room_id)

    def fresh(self, user_id: str, room_id: str) -> bool:
        """Is the user's answer for the room cached and within its maximum age?"""
        return self._cache.fresh(user_id, room_id)

    async def require_member(self, claims: AccessClaims, room_id: str) -> Membership:
        """The caller's membership, or raise: not_found (no such room, or private) or
        not_member (a public room the caller has not joined)."""
        result = await self.lookup(claims, room_id)
        if result.member:
            return result
        if result is NOT_FOUND:
            raise self._errors.not_found("room not found")
        raise self._errors.not_member("not a member of this room")

    def invalidate(self, user_id: str, room_id: str) -> None:
        self._cache.invalidate(user_id, room_id)

    def invalidate_room(self, room_id: str) -> None:
        self._cache.invalidate_room(room_id)

    def invalidate_all(self) -> None:
        self._cache.invalidate_all()

    def __len__(self) -> int:
        return len(self._cache)
