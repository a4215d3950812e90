"""Who a record may notify, as rooms says: a DM room's two members, a room's members.

rooms identifies every caller by an access token and has no service identities, so
the notifier logs in to auth as a service account (a user listed in auth's
``ROOMCAST_AUTH_SERVICE_READER_USERNAMES``: the read-only service role, which sees
every room and its members and may change nothing) and
calls ``GetRoom`` and ``ListMembers`` with that token. Answers are cached: a room's
kind never changes into or out of "direct" (a DM room's members are fixed), so it is
kept until evicted; member lists for ``members_cache_seconds``.

Any failure to reach auth or rooms raises :class:`RoomsUnavailable`: the consumer
retries the batch, unacknowledged, until it can decide correctly. So does a login whose
token lacks the service-reader role (the account registered but not yet listed in
auth's setting): rooms would answer "not found" for every DM and private room, and the
notifier would acknowledge those records having notified nobody.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import grpc
import httpx

from roomcast.common.errors import RoomcastError
from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.tokens import TokenVerifier
from roomcast.notifier.errors import RoomsUnavailable
from roomcast.notifier.settings import Settings
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc

log = logging.getLogger(__name__)

# A token is renewed this long before it expires, so no call carries one that expires
# on the way (access tokens live 15 minutes by default).
TOKEN_RENEW_MARGIN_SECONDS = 60.0
# Members per ListMembers page: rooms' maximum page size.
MEMBERS_PAGE = 100


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """What the notifier needs of a room: whether it is a DM room and its two members."""

    exists: bool
    direct_user_ids: tuple[str, ...] = ()

    @property
    def is_direct(self) -> bool:
        return bool(self.direct_user_ids)


class ServiceSession:
    """The service account's access token, logged in on first use and renewed before
    it expires; refused unless it carries the service-reader role."""

    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, verifier: TokenVerifier
    ) -> None:
        self._settings = settings
        self._http = http
        self._verifier = verifier
        self._token = ""
        self._renew_at = 0.0

    def invalidate(self) -> None:
        self._renew_at = 0.0

    async def token(self) -> str:
        if self._token and time.monotonic() < self._renew_at:
            return self._token
        body = {
            "username": self._settings.service_username,
            "password": self._settings.service_password.get_secret_value(),
        }
        base = self._settings.auth_url.rstrip("/")
        try:
            response = await self._http.post(f"{base}/v1/auth/login", json=body)
            if response.status_code == 401 and self._settings.service_register:
                log.info("registering the service account %s", self._settings.service_username)
                await self._http.post(f"{base}/v1/auth/register", json=body)
                response = await self._http.post(f"{base}/v1/auth/login", json=body)
        except httpx.HTTPError as exc:
            raise RoomsUnavailable(f"auth is unreachable: {exc}") from exc
        if response.status_code != 200:
            raise RoomsUnavailable(f"the service account cannot log in ({response.status_code})")
        payload = response.json()
        token = str(payload["access_token"])
        try:
            claims = await self._verifier.verify(token)
        except RoomcastError as exc:
            raise RoomsUnavailable(f"the service account's token does not verify: {exc}") from exc
        if not claims.is_service_reader:
            raise RoomsUnavailable(
                f"the service account {self._settings.service_username!r} lacks the "
                "service-reader role: list it in ROOMCAST_AUTH_SERVICE_READER_USERNAMES"
            )
        self._token = token
        lifetime = float(payload.get("expires_in", 300))
        self._renew_at = time.monotonic() + max(1.0, lifetime - TOKEN_RENEW_MARGIN_SECONDS)
        return self._token


class RoomDirectory:
    def __init__(self, settings: Settings, session: ServiceSession) -> None:
        self._settings = settings
        self._session = session
        self._rooms: OrderedDict[str, RoomInfo] = OrderedDict()
        self._members: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()
        self._channel: grpc.aio.Channel | None = None
        self._stub: rooms_pb2_grpc.RoomsAsyncStub | None = None

    def _rooms_stub(self) -> rooms_pb2_grpc.RoomsAsyncStub:
        # Created on first use, inside the running event loop grpc.aio binds to.
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self._settings.rooms_target)
            self._stub = rooms_pb2_grpc.RoomsStub(self._channel)
        return self._stub

    async def room(self, room_id: str) -> RoomInfo:
        cached = self._rooms.get(room_id)
        if cached is not None:
            self._rooms.move_to_end(room_id)
            return cached
        try:
            response = await self._call_get_room(room_id)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                # Deleted since the message was sent: nobody is notified. Not cached,
                # an id is never reused, so there is nothing to remember.
                return RoomInfo(exists=False)
            raise RoomsUnavailable(f"rooms GetRoom failed: {exc.code().name}") from exc
        info = RoomInfo(exists=True, direct_user_ids=tuple(response.room.direct_user_ids))
        self._rooms[room_id] = info
        while len(self._rooms) > self._settings.rooms_cache_entries:
            self._rooms.popitem(last=False)
        return info

    async def members(self, room_id: str) -> frozenset[str]:
        """The room's members (at most ``max_members_listed`` of them)."""
        now = time.monotonic()
        cached = self._members.get(room_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found: set[str] = set()
        cursor = ""
        try:
            while len(found) < self._settings.max_members_listed:
                page = await self._call_list_members(room_id, cursor)
                found.update(m.user_id for m in page.members)
                cursor = page.next_cursor
                if not cursor:
                    break
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return frozenset()
            raise RoomsUnavailable(f"rooms ListMembers failed: {exc.code().name}") from exc
        members = frozenset(found)
        if self._settings.members_cache_seconds > 0:
            self._members[room_id] = (now + self._settings.members_cache_seconds, members)
            self._members.move_to_end(room_id)
            while len(self._members) > self._settings.rooms_cache_entries:
                self._members.popitem(last=False)
        return members

    async def _call_get_room(self, room_id: str) -> rooms_pb2.GetRoomResponse:
        request = rooms_pb2.GetRoomRequest(room_id=room_id)
        for attempt in range(2):
            try:
                return await self._rooms_stub().GetRoom(
                    request,
                    metadata=bearer_metadata(await self._session.token()),
                    timeout=self._settings.rooms_timeout_seconds,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED or attempt:
                    raise
                self._session.invalidate()  # revoked or expired early: log in again
        raise AssertionError("unreachable")

    async def _call_list_members(self, room_id: str, cursor: str) -> rooms_pb2.ListMembersResponse:
        request = rooms_pb2.ListMembersRequest(room_id=room_id, limit=MEMBERS_PAGE, cursor=cursor)
        for attempt in range(2):
            try:
                return await self._rooms_stub().ListMembers(
                    request,
                    metadata=bearer_metadata(await self._session.token()),
                    timeout=self._settings.rooms_timeout_seconds,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED or attempt:
                    raise
                self._session.invalidate()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None
