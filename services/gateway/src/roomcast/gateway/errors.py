"""The gateway's errors and their mapping to WebSocket error frames and close codes.

A handler raises one of these; the connection (the edge) turns it into an ``error``
frame (``{"type":"error","code","message","ref"?}``) and, for the errors that end the
session, a close code. The REST routes map the same classes to HTTP statuses through
``roomcast.common.errors.http_status_for``.
"""

from __future__ import annotations

import enum

from roomcast.common.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RoomcastError,
    Unauthenticated,
)
from roomcast.common.membership import RoomsErrors


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway sends (the public contract)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    RESTARTING = 1012
    TRY_AGAIN_LATER = 1013
    UNAUTHENTICATED = 4001
    FORBIDDEN = 4003
    RATE_LIMITED = 4008
    TOO_SLOW = 4009


class InvalidJson(InvalidInput):
    """The frame is not valid JSON."""

    code = "invalid_json"


class InvalidFrame(InvalidInput):
    """The frame is valid JSON but not a valid command (wrong shape or field types)."""

    code = "invalid_request"


class UnknownType(InvalidInput):
    """The frame's type is not a command the gateway knows."""

    code = "unknown_type"


class Unsupported(InvalidInput):
    """A known command this gateway does not serve yet."""

    code = "unsupported"


class BodyTooLarge(PayloadTooLarge):
    """A message body is longer than allowed."""

    code = "payload_too_large"


class NotMember(Forbidden):
    """The caller is not a member of the room."""

    code = "forbidden"


class RoomNotFound(NotFound):
    """The room does not exist or is private to its members."""

    code = "not_found"


class ClientIdReused(Conflict):
    """The client_id of a send was already used by this user for another room's message
    within the deduplication window."""

    code = "client_id_reused"


class TooManySubscriptions(InvalidInput):
    """The socket already holds the maximum number of subscriptions."""

    code = "too_many_subscriptions"


class FrameRateLimited(RateLimited):
    """Too many frames on this socket; slow down."""

    code = "rate_limited"


class TooManySockets(RateLimited):
    """The client address (unauthenticated sockets) or the user already holds its cap
    of sockets on this gateway (socketcaps.py); the socket is closed with 4008."""

    code = "too_many_sockets"


class AuthRequired(Unauthenticated):
    """The first frame must be an auth frame."""

    code = "unauthenticated"


class MissingToken(Unauthenticated):
    """The auth frame carries no token (absent or empty)."""

    code = "missing_token"


class MalformedToken(Unauthenticated):
    """The auth frame's token is not a string of a plausible length."""

    code = "invalid_token"


class SessionUserMismatch(Forbidden):
    """A re-auth frame carried another user's token."""

    code = "user_mismatch"


class Unavailable(DependencyUnavailable):
    """A dependency (NATS, rooms) is unreachable; retry."""

    code = "unavailable"


class Muted(Forbidden):
    """A moderator muted the caller in this room until a time: no send, edit, react or
    typing until then (docs/moderation.md). Reading goes on."""

    code = "muted"


class SlowModeRefused(RateLimited):
    """A send inside the room's slow-mode interval; the frame carries ``retry_after``
    (seconds). The socket stays open."""

    code = "slow_mode"


class Draining(DependencyUnavailable):
    """This gateway is restarting; reconnect to another and resume."""

    code = "gateway_restarting"


def close_code_for(error: RoomcastError) -> CloseCode | None:
    """The close code an error ends the socket with, or None if the socket stays open."""
    if isinstance(error, SessionUserMismatch):
        return CloseCode.FORBIDDEN
    if isinstance(error, Unauthenticated):
        return CloseCode.UNAUTHENTICATED
    if isinstance(error, Draining):
        return CloseCode.RESTARTING
    if isinstance(error, TooManySockets):
        return CloseCode.RATE_LIMITED
    return None


def rooms_errors() -> RoomsErrors:
    """The gateway's own error for each refusal of rooms' ``CheckMembership`` (the shared
    membership client, roomcast.common.membership, raises what this builds)."""
    return RoomsErrors(
        not_found=RoomNotFound,
        not_member=NotMember,
        unauthenticated=AuthRequired,
        invalid=InvalidFrame,
        unavailable=Unavailable,
    )


class FileNotShareable(NotFound):
    """The file of a ``file`` send is unknown, or not one the sender uploaded into
    that room."""

    code = "file_not_found"


class InvalidReplyTo(InvalidInput):
    """A send's ``reply_to`` is not a message of that room the sender may see (another
    room's message, an edit or delete record, gone from the stream, or a private message
    between two other people), or its ``to`` differs from the private parent's pair."""

    code = "invalid_reply_to"


class InvalidEmoji(InvalidInput):
    """A react/unreact frame's emoji is not storable (chatrecord.check_emoji)."""

    code = "invalid_emoji"
