"""Who may read a room's history: members only, as the rooms service says.

The check is ``Rooms.CheckMembership`` over gRPC, made with the caller's own access
token in the metadata (rooms identifies the caller from it). Positive answers are
cached per (user, room) for a few seconds so that paging through a long history costs
rooms one call, not one per page; negative answers are not cached, so a user who just
joined can read at once. The price: a member removed from a room can still read its
history for up to ``ttl`` seconds.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import grpc

from roomcast.common.errors import InvalidInput, RoomcastError, Unauthenticated
from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.tokens import AccessClaims
from roomcast.history.errors import NotAMember, RoomNotFound, RoomsUnavailable
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc


class MembershipChecker:
    def __init__(
        self,
        target: str,
        *,
        ttl_seconds: float,
        timeout_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.ttl_seconds = ttl_seconds
        self.timeout_seconds = timeout_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._channel: grpc.aio.Channel | None = None
        self._stub: rooms_pb2_grpc.RoomsAsyncStub | None = None

    def _rooms(self) -> rooms_pb2_grpc.RoomsAsyncStub:
        # Created on first use, inside the running event loop grpc.aio binds to.
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.target)
            self._stub = rooms_pb2_grpc.RoomsStub(self._channel)
        return self._stub

    async def require_member(self, claims: AccessClaims, room_id: str) -> None:
        """Return if the caller is a member of the room, else raise: NotFound for an
        unknown room or a private one the caller is not in, Forbidden for a public
        room the caller has not joined, DependencyUnavailable if rooms is down."""
        key = (claims.user_id, room_id)
        now = self._clock()
        expires = self._cache.get(key)
        if expires is not None:
            if expires > now:
                return
            del self._cache[key]
        try:
            response = await self._rooms().CheckMembership(
                rooms_pb2.CheckMembershipRequest(room_id=room_id),
                metadata=bearer_metadata(claims.raw),
                timeout=self.timeout_seconds,
            )
        except grpc.aio.AioRpcError as exc:
            raise _error_for(exc) from exc
        if not response.member:
            raise NotAMember("you are not a member of this room")
        if self.ttl_seconds > 0:
            self._cache[key] = now + self.ttl_seconds
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None


def _error_for(exc: grpc.aio.AioRpcError) -> RoomcastError:
    code = exc.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return RoomNotFound("room not found")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return NotAMember("you are not a member of this room")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(exc.details() or "invalid token", code="invalid_token")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(exc.details() or "invalid request")
    return RoomsUnavailable("the rooms service is unavailable")
