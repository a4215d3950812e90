"""The REST edge's JSON: request bodies (strict, unknown fields refused) and responses,
and the conversion of rooms' protobuf messages to them.

Limits mirror what rooms enforces (roomcast.rooms.validation), so a body the gateway
accepts is refused by rooms only for reasons the schema cannot express (a name that
is blank after trimming, control characters).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

# Room names: what fits a sidebar entry and a notification title (rooms: 64).
MAX_NAME_CHARS = 64
# Topics: one or two sentences (rooms: 256).
MAX_TOPIC_CHARS = 256
# Invite codes we issue are 12 characters; rooms refuses more than 64.
MAX_INVITE_CODE_CHARS = 64
# Cursors are ~18 characters; rooms refuses more than 64.
MAX_CURSOR_CHARS = 64
# Page sizes: 50 fills a screen, 100 bounds one response (rooms and history agree).
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# Sequences are int64 in history's store.
MAX_SEQ = 2**63 - 1
# Room policy bounds (rooms: roomcast.rooms.validation; docs/moderation.md): slow mode
# up to 6 hours (longer is a mute), retention up to 10 years; 0 turns either off.
MAX_SLOW_MODE_SECONDS = 6 * 3600
MAX_RETENTION_DAYS = 3650

VisibilityIn = Literal["public", "private"]
VisibilityOut = Literal["public", "private", "direct"]
RoleName = Literal["member", "admin", "owner"]
ObjectIdStr = Annotated[str, Field(pattern=r"^[0-9a-f]{24}$", min_length=24, max_length=24)]
RoomName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
Topic = Annotated[str, Field(max_length=MAX_TOPIC_CHARS)]

VISIBILITY_IN: dict[str, pb.Visibility.ValueType] = {
    "public": pb.VISIBILITY_PUBLIC,
    "private": pb.VISIBILITY_PRIVATE,
}
ROLE_IN: dict[str, pb.Role.ValueType] = {
    "member": pb.ROLE_MEMBER,
    "admin": pb.ROLE_ADMIN,
    "owner": pb.ROLE_OWNER,
}
_VISIBILITY_OUT: dict[int, VisibilityOut] = {
    pb.VISIBILITY_PUBLIC: "public",
    pb.VISIBILITY_PRIVATE: "private",
    pb.VISIBILITY_DIRECT: "direct",
}
_ROLE_OUT: dict[int, RoleName] = {
    pb.ROLE_MEMBER: "member",
    pb.ROLE_ADMIN: "admin",
    pb.ROLE_OWNER: "owner",
}


class StrictBody(BaseModel):
    """Every request body: a JSON object of exactly the declared fields and types (an
    object or number where a string belongs is a 400, never passed on)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _omit_null_from_schema(schema: dict[str, Any]) -> None:
    """``X | None = None`` fields are documented as ``X``: null is refused (below)."""
    for prop in schema.get("properties", {}).values():
        variants = prop.get("anyOf")
        if isinstance(variants, list):
            rest = [v for v in variants if v != {"type": "null"}]
            if len(rest) == 1:
                del prop["anyOf"]
                prop.update(rest[0])


class NoNulls(StrictBody):
    """Optional fields may be omitted but not sent as null."""

    model_config = ConfigDict(json_schema_extra=_omit_null_from_schema)

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        for name in sorted(self.model_fields_set):
            if getattr(self, name) is None:
                raise ValueError(f"{name} must not be null (omit it to leave it unchanged)")
        return self


# ------------------------------------------------------------------------- bodies


class CreateRoomBody(NoNulls):
    name: RoomName
    visibility: VisibilityIn
    topic: Topic | None = None


class UpdateRoomBody(NoNulls):
    """Fields present are changed; an empty object changes nothing."""

    name: RoomName | None = None
    topic: Topic | None = None
    visibility: VisibilityIn | None = None
    slow_mode_seconds: Annotated[int, Field(ge=0, le=MAX_SLOW_MODE_SECONDS)] | None = None
    retention_days: Annotated[int, Field(ge=0, le=MAX_RETENTION_DAYS)] | None = None


class JoinRoomBody(NoNulls):
    invite_code: Annotated[str, Field(max_length=MAX_INVITE_CODE_CHARS)] | None = None


class EmptyBody(StrictBody):
    """No fields: the body may be absent or ``{}``."""


class SetRoleBody(StrictBody):
    role: RoleName


class OpenDirectBody(StrictBody):
    user_id: ObjectIdStr


# ---------------------------------------------------------------------- responses


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case, stable: branch on it")
    message: str = Field(description="for humans; may change")


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


class Room(BaseModel):
    id: str
    name: str
    topic: str
    visibility: VisibilityOut
    owner_id: str | None = Field(description="null for direct rooms (they have no owner)")
    member_count: int
    created_at: dt.datetime
    updated_at: dt.datetime
    my_role: RoleName | None = Field(description="the caller's role; null when not a member")
    invite_code: str | None = Field(description="only for the room's owner and admins")
    direct_user_ids: list[str] | None = Field(description="the two members of a direct room")
    slow_mode_seconds: int = Field(
        default=0, description="one message per this many seconds per member (0: off)"
    )
    retention_days: int = Field(
        default=0, description="messages older than this many days leave history (0: never)"
    )


class Member(BaseModel):
    user_id: str
    role: RoleName
    joined_at: dt.datetime


class RoomEnvelope(BaseModel):
    room: Room


class MemberEnvelope(BaseModel):
    member: Member


class JoinResult(BaseModel):
    room: Room
    member: Member


class RoomPage(BaseModel):
    items: list[Room]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")


class MemberPage(BaseModel):
    items: list[Member]
    next_cursor: str | None


class InviteCode(BaseModel):
    invite_code: str


class MessagePage(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="messages newest first: {id, seq, room, sender, body, sent_at, to?, "
        "edited_at?} or a tombstone {id, seq, room, sender, sent_at, deleted, deleted_at}"
    )
    next_before: int | None = Field(description="pass as before for older messages")


class Jwks(BaseModel):
    keys: list[dict[str, Any]]


# --------------------------------------------------------------------- conversion


def _time(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def room_json(room: pb.Room) -> Room:
    visibility = _VISIBILITY_OUT.get(room.visibility, "public")
    return Room(
        id=room.id,
        name=room.name,
        topic=room.topic,
        visibility=visibility,
        owner_id=room.owner_id or None,
        member_count=room.member_count,
        created_at=_time(room.created_at_ms),
        updated_at=_time(room.updated_at_ms),
        my_role=_ROLE_OUT.get(room.my_role),
        invite_code=room.invite_code or None,
        direct_user_ids=list(room.direct_user_ids) if visibility == "direct" else None,
        slow_mode_seconds=room.slow_mode_seconds,
        retention_days=room.retention_days,
    )


def member_json(member: pb.Member) -> Member:
    return Member(
        user_id=member.user_id,
        role=_ROLE_OUT.get(member.role, "member"),
        joined_at=_time(member.joined_at_ms),
    )
