"""Records to protobuf messages (and the enum mappings both ways are in validation)."""

from __future__ import annotations

from roomcast.rooms.policy import Role, Visibility, shows_invite_code
from roomcast.rooms.records import MemberRecord, RoomRecord
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

ROLE_OUT: dict[Role | None, pb.Role.ValueType] = {
    None: pb.ROLE_UNSPECIFIED,
    Role.MEMBER: pb.ROLE_MEMBER,
    Role.ADMIN: pb.ROLE_ADMIN,
    Role.OWNER: pb.ROLE_OWNER,
}
VISIBILITY_OUT: dict[Visibility, pb.Visibility.ValueType] = {
    Visibility.PUBLIC: pb.VISIBILITY_PUBLIC,
    Visibility.PRIVATE: pb.VISIBILITY_PRIVATE,
    Visibility.DIRECT: pb.VISIBILITY_DIRECT,
}


def room_message(room: RoomRecord, my_role: Role | None) -> pb.Room:
    return pb.Room(
        id=room.id,
        name=room.name,
        topic=room.topic,
        visibility=VISIBILITY_OUT[room.visibility],
        owner_id=room.owner_id,
        invite_code=room.invite_code if shows_invite_code(room.visibility, my_role) else "",
        member_count=room.member_count,
        created_at_ms=room.created_at_ms,
        updated_at_ms=room.updated_at_ms,
        my_role=ROLE_OUT[my_role],
        direct_user_ids=list(room.direct_user_ids),
        slow_mode_seconds=room.slow_mode_seconds,
        retention_days=room.retention_days,
    )


def member_message(member: MemberRecord) -> pb.Member:
    return pb.Member(
        user_id=member.user_id, role=ROLE_OUT[member.role], joined_at_ms=member.joined_at_ms
    )
