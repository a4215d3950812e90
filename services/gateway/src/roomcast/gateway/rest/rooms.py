"""The room rows of the public contract, served through the rooms gRPC service.

Every route verifies the caller's bearer token locally first (401 without a hop to
rooms), then calls rooms with that same token in the metadata: rooms re-verifies it
and applies its own authorization, the gateway never decides who may do what.

Ids in the path that are not ObjectIds are answered 404 exactly like a room (or
member) that does not exist: a path that can name nothing is not found. Ids in a body
are fields like any other: a malformed one is 400.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``Auth``
# alias (a closure variable) in the signatures, not a string it cannot resolve.

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from roomcast.common.errors import DependencyUnavailable, InvalidInput, NotFound
from roomcast.common.subjects import is_object_id
from roomcast.gateway.rest.auth import USER_NOT_FOUND
from roomcast.gateway.rest.deps import Caller, RestDeps, caller_dependency
from roomcast.gateway.rest.docs import errors
from roomcast.gateway.rest.models import (
    DEFAULT_PAGE_SIZE,
    MAX_CURSOR_CHARS,
    MAX_NAME_CHARS,
    MAX_PAGE_SIZE,
    ROLE_IN,
    VISIBILITY_IN,
    CreateRoomBody,
    EmptyBody,
    InviteCode,
    JoinResult,
    JoinRoomBody,
    MemberEnvelope,
    OpenDirectBody,
    Room,
    RoomEnvelope,
    SetRoleBody,
    UpdateRoomBody,
    member_json,
    room_json,
)
from roomcast.gateway.rest.notifications import unread_notifications
from roomcast.gateway.rest.upstream import (
    call_rooms,
    history_summaries,
    send,
    upstream_headers,
)
from roomcast.gateway.rest.users import ListedMemberPage, MemberNames
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

# The messages rooms gives for these, so a malformed id is indistinguishable from an
# unknown one.
ROOM_NOT_FOUND = "The room does not exist or is not visible to the caller."
MEMBER_NOT_FOUND = "The user is not a member of the room."
# The joined-rooms listing waits this long for history's unread counts, then answers
# without them (unread/last_message null): the list matters more than the badges.
SUMMARIES_TIMEOUT_SECONDS = 2.0


class ListedRoom(Room):
    unread: int | None = Field(
        default=None,
        description="scope=joined only: messages after your read position that you can "
        "see, your own excluded, capped at 1000; null when history is unavailable",
    )
    last_message: dict[str, Any] | None = Field(
        default=None,
        description="scope=joined only: the newest message you can see (a history item), "
        "or null (none, or history unavailable)",
    )
    mentions: int | None = Field(
        default=None,
        description="scope=joined only: unread messages that mention you; null when "
        "history is unavailable",
    )


class ListedRoomPage(BaseModel):
    items: list[ListedRoom]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")
    unread_notifications: int | None = Field(
        default=None,
        description="scope=joined only: the caller's unread notifications (mentions, "
        "replies, DMs; at most 999); null when the notifier is unavailable",
    )


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")]
Cursor = Annotated[
    str | None, Query(max_length=MAX_CURSOR_CHARS, description="next_cursor of the previous page")
]


def room_id_of(value: str) -> str:
    if not is_object_id(value):
        raise NotFound(ROOM_NOT_FOUND, code="room_not_found")
    return value


def member_id_of(value: str) -> str:
    if not is_object_id(value):
        raise NotFound(MEMBER_NOT_FOUND, code="member_not_found")
    return value


async def no_summaries() -> dict[str, Any]:
    return {}


def no_content() -> Response:
    return Response(status_code=204)


def create_rooms_router(deps: RestDeps) -> APIRouter:
    router = APIRouter(tags=["rooms"])
    stub = deps.rooms
    timeout = deps.rooms_timeout
    Auth = Annotated[Caller, caller_dependency(deps.verifier)]
    names = MemberNames(deps)

    @router.post(
        "/v1/rooms",
        status_code=201,
        responses=errors(400, 401, 413, 429, 503),
        summary="Create a room; the caller becomes its owner",
    )
    async def create_room(body: CreateRoomBody, caller: Auth) -> RoomEnvelope:
        request = pb.CreateRoomRequest(
            name=body.name, topic=body.topic or "", visibility=VISIBILITY_IN[body.visibility]
        )
        reply = await call_rooms(stub.CreateRoom, request, caller.token, time_limit=timeout)
        return RoomEnvelope(room=room_json(reply.room))

    @router.get(
        "/v1/rooms",
        response_model_exclude_unset=True,
        responses=errors(400, 401, 503),
        summary="Public rooms, or the rooms the caller has joined",
    )
    async def list_rooms(
        caller: Auth,
        scope: Annotated[
            Literal["public", "joined"], Query(description="public (default) or joined")
        ] = "public",
        limit: Limit = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
        q: Annotated[
            str | None,
            Query(max_length=MAX_NAME_CHARS, description="case-insensitive name prefix"),
        ] = None,
    ) -> ListedRoomPage:
        request = pb.ListRoomsRequest(
            scope=pb.LIST_SCOPE_JOINED if scope == "joined" else pb.LIST_SCOPE_PUBLIC,
            limit=limit,
            cursor=cursor or "",
            name_prefix=q or "",
        )
        reply = await call_rooms(stub.ListRooms, request, caller.token, time_limit=timeout)
        rooms = [room_json(r) for r in reply.rooms]
        if scope != "joined":
            items = [ListedRoom(**dict(room)) for room in rooms]
            return ListedRoomPage(items=items, next_cursor=reply.next_cursor or None)
        # History's badges and the notifier's count are asked at once: neither waits
        # for the other, and either one missing only nulls its own fields.
        summaries, notifications = await asyncio.gather(
            history_summaries(
                deps.http,
                deps.history_url,
                caller.token,
                [room.id for room in rooms],
                time_limit=min(deps.history_timeout, SUMMARIES_TIMEOUT_SECONDS),
            )
            if rooms
            else no_summaries(),
            unread_notifications(
                deps,
                caller.token,
                time_limit=min(deps.notifier_timeout, SUMMARIES_TIMEOUT_SECONDS),
            ),
        )
        items = []
        for room in rooms:
            summary = summaries.get(room.id) if summaries is not None else None
            if not isinstance(summary, dict):
                summary = {}
            unread = summary.get("unread")
            last_message = summary.get("last_message")
            mentions = summary.get("mentions")
            items.append(
                ListedRoom(
                    **dict(room),
                    unread=unread if isinstance(unread, int) else None,
                    last_message=last_message if isinstance(last_message, dict) else None,
                    mentions=mentions if isinstance(mentions, int) else None,
                )
            )
        return ListedRoomPage(
            items=items,
            next_cursor=reply.next_cursor or None,
            unread_notifications=notifications,
        )

    @router.get(
        "/v1/rooms/{room_id}",
        responses=errors(401, 404, 503),
        summary="A room visible to the caller",
    )
    async def get_room(room_id: str, caller: Auth) -> RoomEnvelope:
        request = pb.GetRoomRequest(room_id=room_id_of(room_id))
        reply = await call_rooms(stub.GetRoom, request, caller.token, time_limit=timeout)
        return RoomEnvelope(room=room_json(reply.room))

    @router.patch(
        "/v1/rooms/{room_id}",
        responses=errors(400, 401, 403, 404, 409, 413, 503),
        summary="Change name, topic, visibility, slow mode or retention (owner and admins)",
    )
    async def update_room(room_id: str, body: UpdateRoomBody, caller: Auth) -> RoomEnvelope:
        request = pb.UpdateRoomRequest(room_id=room_id_of(room_id))
        if body.name is not None:
            request.name = body.name
        if body.topic is not None:
            request.topic = body.topic
        if body.visibility is not None:
            request.visibility = VISIBILITY_IN[body.visibility]
        if body.slow_mode_seconds is not None:
            request.slow_mode_seconds = body.slow_mode_seconds
        if body.retention_days is not None:
            request.retention_days = body.retention_days
        reply = await call_rooms(stub.UpdateRoom, request, caller.token, time_limit=timeout)
        return RoomEnvelope(room=room_json(reply.room))

    @router.delete(
        "/v1/rooms/{room_id}",
        status_code=204,
        response_class=Response,
        responses=errors(401, 403, 404, 503),
        summary="Delete a room (its owner, or a global admin)",
    )
    async def delete_room(room_id: str, caller: Auth) -> Response:
        request = pb.DeleteRoomRequest(room_id=room_id_of(room_id))
        await call_rooms(stub.DeleteRoom, request, caller.token, time_limit=timeout)
        return no_content()

    @router.post(
        "/v1/rooms/{room_id}/join",
        responses=errors(400, 401, 404, 409, 413, 503),
        summary="Join a public room, or a private one with its invite code",
    )
    async def join_room(room_id: str, caller: Auth, body: JoinRoomBody | None = None) -> JoinResult:
        request = pb.JoinRoomRequest(
            room_id=room_id_of(room_id), invite_code=(body.invite_code if body else None) or ""
        )
        reply = await call_rooms(stub.JoinRoom, request, caller.token, time_limit=timeout)
        return JoinResult(room=room_json(reply.room), member=member_json(reply.member))

    @router.post(
        "/v1/rooms/{room_id}/leave",
        status_code=204,
        response_class=Response,
        responses=errors(400, 401, 404, 409, 413, 503),
        summary="Leave a room (the owner must hand ownership over first: 409)",
    )
    async def leave_room(room_id: str, caller: Auth, body: EmptyBody | None = None) -> Response:
        request = pb.LeaveRoomRequest(room_id=room_id_of(room_id))
        await call_rooms(stub.LeaveRoom, request, caller.token, time_limit=timeout)
        return no_content()

    @router.get(
        "/v1/rooms/{room_id}/members",
        responses=errors(400, 401, 404, 503),
        summary="Members of a room visible to the caller, with their usernames",
    )
    async def list_members(
        room_id: str, caller: Auth, limit: Limit = DEFAULT_PAGE_SIZE, cursor: Cursor = None
    ) -> ListedMemberPage:
        request = pb.ListMembersRequest(
            room_id=room_id_of(room_id), limit=limit, cursor=cursor or ""
        )
        reply = await call_rooms(stub.ListMembers, request, caller.token, time_limit=timeout)
        members = await names.name([member_json(m) for m in reply.members], caller.token)
        return ListedMemberPage(items=members, next_cursor=reply.next_cursor or None)

    @router.put(
        "/v1/rooms/{room_id}/members/{user_id}",
        responses=errors(400, 401, 403, 404, 409, 413, 503),
        summary="Set a member's role; owner hands ownership over (caller becomes admin)",
    )
    async def set_member_role(
        room_id: str, user_id: str, body: SetRoleBody, caller: Auth
    ) -> MemberEnvelope:
        request = pb.SetMemberRoleRequest(
            room_id=room_id_of(room_id), user_id=member_id_of(user_id), role=ROLE_IN[body.role]
        )
        reply = await call_rooms(stub.SetMemberRole, request, caller.token, time_limit=timeout)
        return MemberEnvelope(member=member_json(reply.member))

    @router.delete(
        "/v1/rooms/{room_id}/members/{user_id}",
        status_code=204,
        response_class=Response,
        responses=errors(400, 401, 403, 404, 409, 503),
        summary="Remove (kick) a member ranked below the caller",
    )
    async def remove_member(room_id: str, user_id: str, caller: Auth) -> Response:
        request = pb.RemoveMemberRequest(room_id=room_id_of(room_id), user_id=member_id_of(user_id))
        await call_rooms(stub.RemoveMember, request, caller.token, time_limit=timeout)
        return no_content()

    @router.post(
        "/v1/rooms/{room_id}/invite-code",
        responses=errors(400, 401, 403, 404, 409, 413, 503),
        summary="Issue a new invite code; the old one stops working at once",
    )
    async def rotate_invite_code(
        room_id: str, caller: Auth, body: EmptyBody | None = None
    ) -> InviteCode:
        request = pb.RotateInviteCodeRequest(room_id=room_id_of(room_id))
        reply = await call_rooms(stub.RotateInviteCode, request, caller.token, time_limit=timeout)
        return InviteCode(invite_code=reply.invite_code)

    @router.post(
        "/v1/dms",
        responses={
            201: {"model": RoomEnvelope, "description": "the direct room was created now"},
            **errors(400, 401, 404, 413, 429, 503),
        },
        summary="The direct room of the caller and user_id (the same room every time)",
    )
    async def open_direct_room(
        body: OpenDirectBody, caller: Auth, request: Request, response: Response
    ) -> RoomEnvelope:
        if body.user_id == caller.user_id:
            raise InvalidInput("cannot open a direct room with yourself")
        await require_user(request, body.user_id)
        rpc = pb.OpenDirectRoomRequest(user_id=body.user_id)
        reply = await call_rooms(stub.OpenDirectRoom, rpc, caller.token, time_limit=timeout)
        response.status_code = 201 if reply.created else 200
        return RoomEnvelope(room=room_json(reply.room))

    async def require_user(request: Request, user_id: str) -> None:
        """rooms does not know users: ask auth that the other user exists."""
        headers = upstream_headers(request, deps.trusted_proxies)
        headers.pop("content-type", None)
        headers.pop("authorization", None)
        status, _, _ = await send(
            deps.http,
            "auth",
            "GET",
            f"{deps.auth_url}/v1/users/{user_id}",
            headers=headers,
            time_limit=deps.auth_timeout,
        )
        if status == 404:
            raise NotFound(USER_NOT_FOUND, code="user_not_found")
        if status != 200:
            raise DependencyUnavailable(f"the auth service answered {status}")

    return router
