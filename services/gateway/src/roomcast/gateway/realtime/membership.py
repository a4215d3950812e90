"""Membership checks: the rooms service over gRPC, behind a short-lived cache.

Every subscribe and send asks "is this user a member of this room?". rooms answers with
the caller's token (the gateway forwards the user's own access token, so rooms applies
its own authorization). Answers are cached per (user, room):

- a "member" answer for ``ttl`` seconds, a "not a member"/"not found" answer for the
  shorter ``negative_ttl``;
- rooms' membership events (``chat.events.room.<id>``, handled in events.py) drop the
  affected entries at once; a NATS reconnect drops them all (events may have been
  missed); live subscriptions are re-checked then, and periodically once their answer
  is older than ``ttl`` (revalidation.py), so a missed kick ends access within a bound;
- concurrent lookups of the same key share one RPC (a reconnect storm resubscribing
  thousands of sockets costs one call per distinct key);
- a lookup overtaken by an invalidation is neither cached nor used: it is asked again
  (roomcache.py), so a subscribe in flight during a kick does not admit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.errors import (
    AuthRequired,
    InvalidFrame,
    NotMember,
    RoomNotFound,
    Unavailable,
)
from roomcast.gateway.realtime.roomcache import RoomAnswerCache
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc


@dataclass(frozen=True, slots=True)
class Membership:
    member: bool
    role: int  # rooms_pb2.Role value
    visibility: int  # rooms_pb2.Visibility value
    # Moderation (docs/moderation.md): the mute's end (epoch ms, 0 = none) and the
    # room's slow mode, cached with the answer (as roomcast.common.membership does).
    muted_until_ms: int = 0
    slow_mode_seconds: int = 0


# A room that does not exist, or is private and the caller is not in it.
NOT_FOUND = Membership(member=False, role=0, visibility=0)


class RoomsClient:
    """The gateway's gRPC client of the rooms service."""

    def __init__(self, target: str, *, timeout: float) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = rooms_pb2_grpc.RoomsStub(self.channel)
        self.timeout = timeout

    async def check(self, token: str, room_id: str) -> Membership:
        try:
            reply = await self.stub.CheckMembership(
                rooms_pb2.CheckMembershipRequest(room_id=room_id),
                metadata=bearer_metadata(token),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return NOT_FOUND
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise AuthRequired("token rejected by the rooms service") from exc
            if code == grpc.StatusCode.PERMISSION_DENIED:
                return Membership(member=False, role=0, visibility=rooms_pb2.VISIBILITY_UNSPECIFIED)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidFrame(exc.details() or "invalid room id") from exc
            raise Unavailable("membership check unavailable, retry") from exc
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
            reply = await self.stub.CheckMembership(
                rooms_pb2.CheckMembershipRequest(room_id=room_id, user_id=user_id),
                metadata=bearer_metadata(token),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            # The asker was a member a moment ago (cached): these mean that changed.
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise RoomNotFound("room not found") from exc
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise NotMember("not a member of this room") from exc
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise AuthRequired("token rejected by the rooms service") from exc
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidFrame(exc.details() or "invalid id") from exc
            raise Unavailable("membership check unavailable, retry") from exc
        return bool(reply.member)

    async def close(self) -> None:
        await self.channel.close()


class MembershipCache:
    """The caller's own membership per (user, room), cached (see roomcache.py)."""

    def __init__(
        self,
        client: RoomsClient,
        *,
        ttl: float,
        negative_ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._cache: RoomAnswerCache[Membership] = RoomAnswerCache(
            lambda _user_id, room_id, token: client.check(token, room_id),
            ttl_for=lambda answer: ttl if answer.member else negative_ttl,
            max_entries=max_entries,
            observe=lambda outcome: metrics.MEMBERSHIP_LOOKUPS.labels(outcome).inc(),
            clock=clock,
        )

    async def lookup(self, claims: AccessClaims, room_id: str) -> Membership:
        return await self._cache.get(claims.user_id, room_id, claims.raw)

    def fresh(self, user_id: str, room_id: str) -> bool:
        """Is the user's answer for the room cached and within its maximum age?"""
        return self._cache.fresh(user_id, room_id)

    async def require_member(self, claims: AccessClaims, room_id: str) -> Membership:
        """The caller's membership, or raise: not_found (no such room, or private) or
        forbidden (a public room the caller has not joined)."""
        result = await self.lookup(claims, room_id)
        if result.member:
            return result
        if result is NOT_FOUND:
            raise RoomNotFound("room not found")
        raise NotMember("not a member of this room")

    def invalidate(self, user_id: str, room_id: str) -> None:
        self._cache.invalidate(user_id, room_id)

    def invalidate_room(self, room_id: str) -> None:
        self._cache.invalidate_room(room_id)

    def invalidate_all(self) -> None:
        self._cache.invalidate_all()

    def __len__(self) -> int:
        return len(self._cache)
