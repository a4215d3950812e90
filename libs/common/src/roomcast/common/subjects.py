"""NATS subjects and identifiers shared by the services.

| subject                         | who publishes | what                                        |
|---------------------------------|---------------|---------------------------------------------|
| ``chat.room.<room_id>``         | gateway       | chat records, stored in JetStream ``CHAT``  |
| ``live.room.<room_id>``         | nats-server   | RePublish of the above, with sequences      |
| ``chat.events.room.<room_id>``  | rooms         | membership and room events (core NATS)      |
| ``chat.events.user.<user_id>``  | auth          | session events: logout, revoked tokens      |
| ``ephemeral.room.<room_id>``    | gateway       | typing and presence changes (core NATS)     |
| ``presence.query.<room_id>``    | gateway       | scatter-gather presence requests            |

Room and user ids are 24 lowercase hex characters (MongoDB ObjectIds rendered as
strings), checked with :func:`is_object_id` before they go into a subject or a query,
so no id can carry a subject wildcard (``*``, ``>``) or a token separator (``.``).
"""

from __future__ import annotations

import enum
import re

STREAM_NAME = "CHAT"
ROOM_SUBJECT_PREFIX = "chat.room."
LIVE_SUBJECT_PREFIX = "live.room."
ROOM_EVENTS_PREFIX = "chat.events.room."
USER_EVENTS_PREFIX = "chat.events.user."
EPHEMERAL_PREFIX = "ephemeral.room."
PRESENCE_QUERY_PREFIX = "presence.query."

_OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


def is_object_id(value: object) -> bool:
    return isinstance(value, str) and _OBJECT_ID.fullmatch(value) is not None


def room_subject(room_id: str) -> str:
    return ROOM_SUBJECT_PREFIX + room_id


def live_subject(room_id: str) -> str:
    return LIVE_SUBJECT_PREFIX + room_id


def room_events_subject(room_id: str) -> str:
    return ROOM_EVENTS_PREFIX + room_id


def user_events_subject(user_id: str) -> str:
    return USER_EVENTS_PREFIX + user_id


def ephemeral_subject(room_id: str) -> str:
    return EPHEMERAL_PREFIX + room_id


def presence_query_subject(room_id: str) -> str:
    return PRESENCE_QUERY_PREFIX + room_id


def room_id_from_subject(subject: str) -> str:
    """The last token of a per-room subject."""
    return subject.rsplit(".", 1)[-1]


class RoomEvent(enum.StrEnum):
    """``type`` of the events rooms publishes on ``chat.events.room.<room_id>``
    (schema: docs/events.md)."""

    MEMBER_JOINED = "member_joined"
    MEMBER_LEFT = "member_left"
    MEMBER_REMOVED = "member_removed"
    ROLE_CHANGED = "role_changed"
    ROOM_UPDATED = "room_updated"
    ROOM_DELETED = "room_deleted"
    # A member's mute began or ended (``muted_until_ms``): caches of the user's
    # membership answer are dropped (docs/moderation.md).
    MEMBER_MUTED = "member_muted"
    MEMBER_UNMUTED = "member_unmuted"


# ``type`` of the event auth publishes on ``chat.events.user.<user_id>``.
SESSION_REVOKED = "session_revoked"
