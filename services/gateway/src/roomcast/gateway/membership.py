"""Membership checks: the rooms service over gRPC, behind a short-lived cache.

Every subscribe and send asks "is this user a member of this room?". rooms answers with
the caller's token (the gateway forwards the user's own access token, so rooms applies
its own authorization). Answers are cached per (user, room):

- a "member" answer for ``ttl`` seconds, a "not a member"/"not found" answer for the
  shorter ``negative_ttl``;
- rooms' membership events (``chat.events.room.<id>``, handled in events.py) drop the
  affected entries at once, so the TTL only bounds staleness when an event is lost;
- concurrent lookups of the same key share one RPC (a reconnect storm resubscribing
  thousands of sockets costs one call per distinct key);
- a lookup that overlaps an invalidation is not cached.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
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
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc


@dataclass(frozen=True, slots=True)
class Membership:
    member: bool
    role: int  # rooms_pb2.Role value
    visibility: int  # rooms_pb2.Visibility value


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
        return Membership(bool(reply.member), int(reply.role), int(reply.visibility))

    async def close(self) -> None:
        await self.channel.close()


class MembershipCache:
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
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Membership]] = OrderedDict()
        self._by_room: dict[str, set[str]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[Membership]] = {}
        # Bumped by every invalidation; a lookup started before one is not cached.
        self._epoch = 0

    async def lookup(self, claims: AccessClaims, room_id: str) -> Membership:
        key = (claims.user_id, room_id)
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                metrics.MEMBERSHIP_LOOKUPS.labels("hit").inc()
                return entry[1]
            self._drop(key)
        metrics.MEMBERSHIP_LOOKUPS.labels("miss").inc()
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, claims.raw))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._forget(key, task))
        return await asyncio.shield(task)

    def _forget(self, key: tuple[str, str], task: asyncio.Task[Membership]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: the awaiting callers got it

    async def _fetch(self, key: tuple[str, str], token: str) -> Membership:
        epoch = self._epoch
        result = await self.client.check(token, key[1])
        if epoch == self._epoch:
            ttl = self.ttl if result.member else self.negative_ttl
            if ttl > 0:
                self._store(key, result, ttl)
        return result

    def _store(self, key: tuple[str, str], result: Membership, ttl: float) -> None:
        self._entries[key] = (self._clock() + ttl, result)
        self._entries.move_to_end(key)
        self._by_room.setdefault(key[1], set()).add(key[0])
        while len(self._entries) > self.max_entries:
            oldest, _ = self._entries.popitem(last=False)
            self._unindex(oldest)

    def _drop(self, key: tuple[str, str]) -> None:
        if self._entries.pop(key, None) is not None:
            self._unindex(key)

    def _unindex(self, key: tuple[str, str]) -> None:
        users = self._by_room.get(key[1])
        if users is not None:
            users.discard(key[0])
            if not users:
                del self._by_room[key[1]]

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
        self._epoch += 1
        self._drop((user_id, room_id))
        self._inflight.pop((user_id, room_id), None)

    def invalidate_room(self, room_id: str) -> None:
        self._epoch += 1
        for user_id in list(self._by_room.get(room_id, ())):
            self._drop((user_id, room_id))
        for key in [k for k in self._inflight if k[1] == room_id]:
            del self._inflight[key]

    def __len__(self) -> int:
        return len(self._entries)
