"""Typed values the SDK hands out: WebSocket items, acks, stats, REST rows.

WebSocket frames are parsed into slotted dataclasses (not frozen: a frozen dataclass
costs ~5x more to build, and one is built per received frame; treat them as read-only).
REST rows are TypedDicts: they are the gateway's JSON as-is, so a field the server adds
later is still there, just not typed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

# --------------------------------------------------------------------- WebSocket


@dataclass(slots=True)
class Sender:
    """Who sent a message (a public profile)."""

    id: str
    username: str
    display_name: str | None = None
    avatar_url: str | None = None

    @classmethod
    def from_wire(cls, raw: Any) -> Sender:
        if not isinstance(raw, dict):
            return cls(id=str(raw), username="")
        get = raw.get
        return cls(
            str(get("id", "")), str(get("username", "")), get("display_name"), get("avatar_url")
        )


@dataclass(slots=True)
class Message:
    """A chat message in a room. ``prev`` is the previous message's ``seq`` in the same room."""

    room: str
    id: str
    seq: int
    prev: int
    sender: Sender
    body: dict[str, Any]
    sent_at: str | int | float | None
    to: str | None = None
    #: True when it was delivered by a resume (re-subscribe with ``since``), not live.
    replayed: bool = False
    #: The ``seq`` of the message this one replies to (its thread), if any.
    reply_to: int | None = None
    #: Ids of the room members it mentions (``@username`` resolved when sent).
    mentions: list[str] = field(default_factory=list)

    @property
    def content(self) -> str | None:
        """The text of a ``{"type":"text","content"}`` body, else None."""
        value = self.body.get("content")
        return value if isinstance(value, str) else None


@dataclass(slots=True)
class Event:
    """A room event (``member_joined``, ``member_left``, ``room_updated``, ...)."""

    room: str
    event: str
    data: dict[str, Any]


@dataclass(slots=True)
class Change:
    """An edit or a delete of the message ``target_seq``. It occupies its own ``seq`` in
    the room (``prev`` chains through it like a message); ``body`` is None for a delete."""

    kind: str  # "edit" or "delete"
    room: str
    seq: int
    prev: int
    target_seq: int
    sender: Sender
    body: dict[str, Any] | None
    at: str | int | float | None
    replayed: bool = False


@dataclass(slots=True)
class Reaction:
    """A reaction added (``op`` "add") or removed ("remove") on message ``target_seq``.
    It occupies its own ``seq`` in the room's chain, like a change."""

    room: str
    seq: int
    prev: int
    target_seq: int
    sender: Sender
    emoji: str
    op: str
    at: str | int | float | None
    replayed: bool = False


@dataclass(slots=True)
class ReadReceipt:
    """``user`` has read ``room`` up to ``seq``."""

    room: str
    user: dict[str, Any]
    seq: int


@dataclass(slots=True)
class Typing:
    """Someone is typing in a room; ``data`` is the whole frame."""

    room: str
    data: dict[str, Any]


@dataclass(slots=True)
class Presence:
    """A presence update or answer; ``data`` is the whole frame."""

    room: str | None
    data: dict[str, Any]


@dataclass(slots=True)
class ErrorFrame:
    """An ``error`` frame that did not answer a pending request of this SDK."""

    code: str
    message: str
    ref: str | None = None


@dataclass(slots=True)
class Subscribed:
    """A room subscription is active. ``seq`` is the room's head at that moment.

    ``resumed`` marks automatic re-subscriptions after a reconnect (only those appear in
    the item stream); ``truncated`` means the server could not replay everything since
    ``since``: messages were lost for this client and must be fetched from history.
    """

    room: str
    seq: int
    since: int | None = None
    truncated: bool = False
    resumed: bool = False


@dataclass(slots=True)
class Unsubscribed:
    """A subscription ended; ``reason`` is set when the server ended it (kicked, deleted)."""

    room: str
    reason: str | None = None


@dataclass(slots=True)
class Ack:
    """The gateway stored a sent message: its ``id`` and ``seq``; ``duplicate`` on a retry."""

    client_id: str
    id: str
    seq: int
    duplicate: bool = False


@dataclass(slots=True)
class Gap:
    """A message's ``prev`` did not match the last ``seq`` this client held for the room."""

    room: str
    expected_prev: int
    prev: int
    seq: int


#: What ``async for item in socket`` yields.
Item = (
    Message
    | Change
    | Reaction
    | ReadReceipt
    | Event
    | Typing
    | Presence
    | ErrorFrame
    | Subscribed
    | Unsubscribed
)


@dataclass(slots=True)
class SocketStats:
    """Counters of one ``RoomcastSocket`` (monotonic; read them any time)."""

    connects: int = 0  # successful auth+ready, the first one included
    reconnects: int = 0  # successful auth+ready after the first
    reauths: int = 0  # tokens renewed on the live socket (auth -> ready again)
    connect_failures: int = 0  # attempts that never reached ready
    messages: int = 0  # message frames delivered (replayed ones included)
    resumed_messages: int = 0  # delivered by a resume, i.e. missed while away
    skips: int = 0  # skip frames (private messages for someone else)
    gaps: int = 0  # prev != last seq held
    duplicates: int = 0  # seq <= last seq held: dropped
    truncated_resumes: int = 0  # the server could not replay everything
    sent: int = 0  # send() calls
    acks: int = 0
    duplicate_acks: int = 0  # acks with duplicate=true (a retry hit the dedupe window)
    retried_sends: int = 0  # send frames transmitted again after a reconnect
    confirmed_by_resume: int = 0  # unacked sends found stored in their room: not re-sent
    unconfirmed_sends: int = 0  # sends failed with SendUnconfirmed (see docs/client.md)
    rejected: int = 0  # requests answered with an error frame
    read_pauses: int = 0  # times the item buffer was full and reading stopped
    close_codes: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (close codes keyed by str)."""
        out: dict[str, Any] = {
            name: getattr(self, name) for name in self.__slots__ if name != "close_codes"
        }
        out["close_codes"] = {str(code): n for code, n in sorted(self.close_codes.items())}
        return out


# -------------------------------------------------------------------------- REST


class User(TypedDict):
    id: str
    username: str
    display_name: NotRequired[str | None]
    avatar_url: NotRequired[str | None]
    email: NotRequired[str | None]


class TokenPair(TypedDict):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    user: NotRequired[User]


Visibility = Literal["public", "private"]


class Room(TypedDict):
    id: str
    name: str
    visibility: str
    topic: NotRequired[str | None]
    owner_id: NotRequired[str]
    invite_code: NotRequired[str | None]
    member_count: NotRequired[int]
    my_role: NotRequired[str | None]
    #: Room policy (docs/moderation.md): 0 = off.
    slow_mode_seconds: NotRequired[int]
    retention_days: NotRequired[int]


class Ban(TypedDict):
    user_id: str
    actor_id: str
    created_at: str


class Mute(TypedDict):
    user_id: str
    #: When the mute ends (ISO 8601).
    until: str


class AuditEntry(TypedDict):
    id: str
    #: ``ban``, ``unban``, ``mute``, ``unmute``, ``kick``, ``role_changed``,
    #: ``room_updated``, ``invite_rotated`` or ``message_deleted``.
    action: str
    actor_id: str
    target_user_id: str | None
    at: str
    details: dict[str, str]


class AuditPage(TypedDict):
    #: Newest first.
    items: list[AuditEntry]
    next_cursor: str | None


class Member(TypedDict):
    user_id: str
    role: str
    joined_at: NotRequired[str]
    #: In members listings: the member's names (``None`` when the gateway could not
    #: ask auth).
    username: NotRequired[str | None]
    display_name: NotRequired[str | None]


class RoomPage(TypedDict):
    items: list[Room]
    next_cursor: str | None
    # scope=joined only: the caller's unread notifications (at most 999); None when the
    # notifier is unavailable.
    unread_notifications: NotRequired[int | None]


class HistoryPage(TypedDict):
    #: Message rows, newest first (same fields as a ``message`` frame).
    items: list[dict[str, Any]]
    next_before: int | None


NotificationKind = Literal["dm", "mention", "reply"]


class NotificationSender(TypedDict):
    id: str
    username: str
    display_name: NotRequired[str | None]
    avatar_url: NotRequired[str | None]


class Notification(TypedDict):
    """One inbox row (docs/notifications.md): ``id`` is ``"<seq>:<user>"``."""

    id: str
    kind: NotificationKind
    room: str
    #: The message's stream sequence: what ``mark_notifications_read(up_to)`` takes.
    seq: int
    sender: NotificationSender
    #: The message's first 140 characters.
    preview: str
    #: When the message was sent (ISO 8601).
    sent_at: str
    #: A private message (``to``) addressed to the caller.
    private: bool
    read: bool


class NotificationPage(TypedDict):
    #: Newest first.
    items: list[Notification]
    #: Pass to ``notifications(cursor=...)`` for older ones; None on the last page.
    next_cursor: str | None
    #: Notifications after the read position, capped at 999.
    unread: int


class InboxState(TypedDict):
    read_up_to: int
    unread: int


class PushKeys(TypedDict):
    p256dh: str
    auth: str


class PushSubscriptionJSON(TypedDict):
    """A browser's ``PushSubscription.toJSON()``."""

    endpoint: str
    expirationTime: NotRequired[int | None]
    keys: PushKeys


class PushRegistration(TypedDict):
    id: str
    endpoint: str
