"""Private-message recipients: "is user X a member of this room?", asked by a member.

A send with ``to`` is stored only if the recipient is a member of the room. rooms'
``CheckMembership`` with ``user_id`` answers it for members (with the sender's own
token, so rooms applies its own authorization). Answers are cached per (recipient,
room) like the caller's own membership (membership.py): "member" for the membership
TTL, "not a member" for the short negative TTL, concurrent identical lookups share one
RPC, rooms' events drop entries at once (events.py calls :meth:`invalidate`), and a
lookup that overlaps an invalidation is not cached. It is a separate cache on purpose:
an answer about X given to a member must never answer X's own subscribe (a private
room's existence would leak to a non-member).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

import grpc

from roomcast.common.errors import NotFound
from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.tokens import AccessClaims
from roomcast.gateway.errors import AuthRequired, InvalidFrame, NotMember, RoomNotFound, Unavailable
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc


class RecipientNotMember(NotFound):
    """A private message's recipient is not a member of the room."""

    code = "recipient_not_member"


class RecipientCache:
    def __init__(
        self,
        stub: rooms_pb2_grpc.RoomsAsyncStub,
        *,
        timeout: float,
        ttl: float,
        negative_ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stub = stub
        self.timeout = timeout
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, bool]] = OrderedDict()
        self._by_room: dict[str, set[str]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[bool]] = {}
        self._epoch = 0  # bumped by every invalidation

    async def require_member(self, claims: AccessClaims, room_id: str, user_id: str) -> None:
        """Raise unless ``user_id`` is a member of the room (the sender ``claims`` is)."""
        if user_id == claims.user_id:
            return
        if not await self.is_member(claims, room_id, user_id):
            raise RecipientNotMember("the recipient is not a member of this room")

    async def is_member(self, claims: AccessClaims, room_id: str, user_id: str) -> bool:
        key = (user_id, room_id)
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                return entry[1]
            self._drop(key)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, claims.raw))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._forget(key, task))
        return await asyncio.shield(task)

    def _forget(self, key: tuple[str, str], task: asyncio.Task[bool]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved by the awaiting callers

    async def _fetch(self, key: tuple[str, str], token: str) -> bool:
        epoch = self._epoch
        user_id, room_id = key
        try:
            reply = await self.stub.CheckMembership(
                rooms_pb2.CheckMembershipRequest(room_id=room_id, user_id=user_id),
                metadata=bearer_metadata(token),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            # The sender was a member a moment ago (cached): these mean that changed.
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
        member = bool(reply.member)
        ttl = self.ttl if member else self.negative_ttl
        if epoch == self._epoch and ttl > 0:
            self._entries[key] = (self._clock() + ttl, member)
            self._entries.move_to_end(key)
            self._by_room.setdefault(room_id, set()).add(user_id)
            while len(self._entries) > self.max_entries:
                oldest, _ = self._entries.popitem(last=False)
                self._unindex(oldest)
        return member

    def _drop(self, key: tuple[str, str]) -> None:
        if self._entries.pop(key, None) is not None:
            self._unindex(key)

    def _unindex(self, key: tuple[str, str]) -> None:
        users = self._by_room.get(key[1])
        if users is not None:
            users.discard(key[0])
            if not users:
                del self._by_room[key[1]]

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
