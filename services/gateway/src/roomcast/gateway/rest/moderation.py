"""The moderation rows of the public contract (docs/moderation.md), served through the
rooms gRPC service: bans, mutes and the audit log. Slow mode and retention are room
settings (``PATCH /v1/rooms/{id}``, rooms.py).

As in rooms.py, the caller's token is verified here first and forwarded; rooms decides
who may do what. A path id that is not an ObjectId is answered 404 like an unknown one.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``Auth``
# alias (a closure variable) in the signatures, not a string it cannot resolve.

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from roomcast.common.errors import InvalidInput
from roomcast.gateway.rest.deps import Caller, RestDeps, caller_dependency
from roomcast.gateway.rest.docs import errors
from roomcast.gateway.rest.models import MAX_CURSOR_CHARS, MAX_PAGE_SIZE, EmptyBody, StrictBody
from roomcast.gateway.rest.rooms import member_id_of, no_content, room_id_of
from roomcast.gateway.rest.upstream import call_rooms
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

# rooms refuses a mute ending more than 366 days ahead (a longer one is a ban).
MAX_MUTE_DAYS = 366
# "2030-01-01T12:00:00.123456+05:30" is 32 characters; more is not a time.
MAX_TIME_CHARS = 40


def _time(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


class MuteBody(StrictBody):
    until: str = Field(
        max_length=MAX_TIME_CHARS,
        description="when the mute ends: RFC 3339 with a time zone, in the future, at most "
        f"{MAX_MUTE_DAYS} days ahead",
        examples=["2030-01-01T12:00:00Z"],
    )

    def until_ms(self) -> int:
        try:
            when = dt.datetime.fromisoformat(self.until)
        except ValueError:
            raise InvalidInput("until: an RFC 3339 time", code="invalid_request") from None
        if when.tzinfo is None:
            raise InvalidInput("until: give a time zone (Z or +hh:mm)", code="invalid_request")
        return int(when.timestamp() * 1000)


class Ban(BaseModel):
    user_id: str
    actor_id: str = Field(description="who banned them")
    created_at: dt.datetime


class BanEnvelope(BaseModel):
    ban: Ban


class BanPage(BaseModel):
    items: list[Ban]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")


class Mute(BaseModel):
    user_id: str
    until: dt.datetime


class MuteEnvelope(BaseModel):
    mute: Mute


class AuditEntry(BaseModel):
    id: str
    action: str = Field(
        description="ban, unban, mute, unmute, kick, role_changed, room_updated, "
        "invite_rotated or message_deleted"
    )
    actor_id: str
    target_user_id: str | None = Field(description="the user acted on; null for the room")
    at: dt.datetime
    details: dict[str, str] = Field(
        description="per action: role/previous_role, the changed settings, until_ms, seq"
    )


class AuditPage(BaseModel):
    items: list[AuditEntry] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")]
Cursor = Annotated[
    str | None, Query(max_length=MAX_CURSOR_CHARS, description="next_cursor of the previous page")
]


def ban_json(ban: pb.Ban) -> Ban:
    return Ban(user_id=ban.user_id, actor_id=ban.actor_id, created_at=_time(ban.created_at_ms))


def audit_json(entry: pb.AuditEntry) -> AuditEntry:
    return AuditEntry(
        id=entry.id,
        action=entry.action,
        actor_id=entry.actor_id,
        target_user_id=entry.target_user_id or None,
        at=_time(entry.at_ms),
        details=dict(entry.details),
    )


def create_moderation_router(deps: RestDeps) -> APIRouter:
    router = APIRouter(tags=["moderation"])
    stub = deps.rooms
    timeout = deps.rooms_timeout
    Auth = Annotated[Caller, caller_dependency(deps.verifier)]

    @router.put(
        "/v1/rooms/{room_id}/bans/{user_id}",
        responses=errors(400, 401, 403, 404, 409, 413, 503),
        summary="Ban a user (owner and admins): removed at once, cannot join again",
    )
    async def ban(
        room_id: str, user_id: str, caller: Auth, body: EmptyBody | None = None
    ) -> BanEnvelope:
        request = pb.BanMemberRequest(room_id=room_id_of(room_id), user_id=member_id_of(user_id))
        reply = await call_rooms(stub.BanMember, request, caller.token, time_limit=timeout)
        return BanEnvelope(ban=ban_json(reply.ban))

    @router.delete(
        "/v1/rooms/{room_id}/bans/{user_id}",
        status_code=204,
        response_class=Response,
        responses=errors(401, 403, 404, 503),
        summary="Lift a ban (owner and admins); the user may join again",
    )
    async def unban(room_id: str, user_id: str, caller: Auth) -> Response:
        request = pb.UnbanMemberRequest(room_id=room_id_of(room_id), user_id=member_id_of(user_id))
        await call_rooms(stub.UnbanMember, request, caller.token, time_limit=timeout)
        return no_content()

    @router.get(
        "/v1/rooms/{room_id}/bans",
        responses=errors(400, 401, 403, 404, 503),
        summary="The room's bans, by user id (owner and admins)",
    )
    async def list_bans(
        room_id: str, caller: Auth, limit: Limit = 50, cursor: Cursor = None
    ) -> BanPage:
        request = pb.ListBansRequest(room_id=room_id_of(room_id), limit=limit, cursor=cursor or "")
        reply = await call_rooms(stub.ListBans, request, caller.token, time_limit=timeout)
        return BanPage(
            items=[ban_json(b) for b in reply.bans], next_cursor=reply.next_cursor or None
        )

    @router.put(
        "/v1/rooms/{room_id}/mutes/{user_id}",
        responses=errors(400, 401, 403, 404, 409, 413, 503),
        summary="Mute a user until a time (owner and admins): they read but cannot send, "
        "edit, react or type",
    )
    async def mute(room_id: str, user_id: str, body: MuteBody, caller: Auth) -> MuteEnvelope:
        until_ms = body.until_ms()
        request = pb.MuteMemberRequest(
            room_id=room_id_of(room_id), user_id=member_id_of(user_id), until_ms=until_ms
        )
        reply = await call_rooms(stub.MuteMember, request, caller.token, time_limit=timeout)
        return MuteEnvelope(mute=Mute(user_id=user_id, until=_time(reply.muted_until_ms)))

    @router.delete(
        "/v1/rooms/{room_id}/mutes/{user_id}",
        status_code=204,
        response_class=Response,
        responses=errors(401, 403, 404, 503),
        summary="End a mute (owner and admins)",
    )
    async def unmute(room_id: str, user_id: str, caller: Auth) -> Response:
        request = pb.UnmuteMemberRequest(room_id=room_id_of(room_id), user_id=member_id_of(user_id))
        await call_rooms(stub.UnmuteMember, request, caller.token, time_limit=timeout)
        return no_content()

    @router.get(
        "/v1/rooms/{room_id}/audit",
        responses=errors(400, 401, 403, 404, 503),
        summary="Who did what to the room and its members, newest first (owner, admins)",
    )
    async def audit(
        room_id: str, caller: Auth, limit: Limit = 50, cursor: Cursor = None
    ) -> AuditPage:
        request = pb.ListAuditLogRequest(
            room_id=room_id_of(room_id), limit=limit, cursor=cursor or ""
        )
        reply = await call_rooms(stub.ListAuditLog, request, caller.token, time_limit=timeout)
        return AuditPage(
            items=[audit_json(e) for e in reply.entries], next_cursor=reply.next_cursor or None
        )

    return router
