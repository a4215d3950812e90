"""The service's own view of stored rooms and memberships (independent of protobuf)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roomcast.rooms.policy import Role, Visibility


@dataclass(frozen=True, slots=True)
class RoomRecord:
    id: str
    name: str
    topic: str
    visibility: Visibility
    owner_id: str
    invite_code: str
    member_count: int
    created_at_ms: int
    updated_at_ms: int
    direct_user_ids: tuple[str, ...] = ()
    slow_mode_seconds: int = 0
    retention_days: int = 0

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RoomRecord:
        return cls(
            id=str(doc["_id"]),
            name=str(doc.get("name", "")),
            topic=str(doc.get("topic", "")),
            visibility=Visibility(doc["visibility"]),
            owner_id=str(doc.get("owner_id", "")),
            invite_code=str(doc.get("invite_code", "")),
            member_count=int(doc.get("member_count", 0)),
            created_at_ms=int(doc.get("created_at_ms", 0)),
            updated_at_ms=int(doc.get("updated_at_ms", 0)),
            direct_user_ids=tuple(str(u) for u in doc.get("direct_user_ids", ())),
            slow_mode_seconds=int(doc.get("slow_mode_seconds", 0)),
            retention_days=int(doc.get("retention_days", 0)),
        )

    def public_fields(self) -> dict[str, Any]:
        """What any member may see (no invite code): the ``room`` of ``room_updated``."""
        return {
            "id": self.id,
            "name": self.name,
            "topic": self.topic,
            "visibility": self.visibility.value,
            "owner_id": self.owner_id,
            "member_count": self.member_count,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "slow_mode_seconds": self.slow_mode_seconds,
            "retention_days": self.retention_days,
        }


@dataclass(frozen=True, slots=True)
class MemberRecord:
    room_id: str
    user_id: str
    role: Role
    joined_at_ms: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> MemberRecord:
        return cls(
            room_id=str(doc["room_id"]),
            user_id=str(doc["user_id"]),
            role=Role(doc["role"]),
            joined_at_ms=int(doc.get("joined_at_ms", 0)),
        )
