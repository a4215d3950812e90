"""The rooms service's domain errors and their single mapping to gRPC status codes.

Every error an RPC can end with is one of these classes (or a PyMongo "server
unreachable" error); :func:`grpc_status_for` is the only place that turns them into a
gRPC status, and the server interceptor is the only caller.
"""

from __future__ import annotations

import grpc

from roomcast.common.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    RoomcastError,
    Unauthenticated,
)
from roomcast.common.mongo import UNAVAILABLE_ERRORS


class InvalidArgument(InvalidInput):
    """A request field is missing, malformed or out of range."""

    code = "invalid_argument"


class NotAuthenticated(Unauthenticated):
    """No valid access token in the ``authorization`` metadata."""

    code = "unauthenticated"


class RoomNotFound(NotFound):
    """The room does not exist or is not visible to the caller."""

    code = "room_not_found"


class MemberNotFound(NotFound):
    """The user is not a member of the room."""

    code = "member_not_found"


class InsufficientRole(Forbidden):
    """The caller's role in the room does not allow this."""

    code = "insufficient_role"


class ReadOnlyCaller(Forbidden):
    """A service-reader account (the notifier's) asked for something other than a read."""

    code = "read_only"


class Banned(Forbidden):
    """The user is banned from the room: no join, with or without an invite code."""

    code = "banned"


class OwnerMustTransfer(PreconditionFailed):
    """The owner cannot leave; transfer ownership or delete the room first."""

    code = "owner_must_transfer"


class DirectRoomFixed(PreconditionFailed):
    """A direct room always has exactly its two members; it cannot be changed."""

    code = "direct_room_fixed"


class ConcurrentChange(PreconditionFailed):
    """The membership changed while the request was being applied; retry."""

    code = "concurrent_change"


class TooManyRequests(RateLimited):
    """Too many rooms created; retry later."""

    code = "rate_limited"


class StoreUnavailable(DependencyUnavailable):
    """MongoDB is unreachable."""

    code = "mongodb_unavailable"


# Most specific first is not needed: the lookup walks each error's class hierarchy.
_STATUS: dict[type[RoomcastError], grpc.StatusCode] = {
    ConcurrentChange: grpc.StatusCode.ABORTED,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    PayloadTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DependencyUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def grpc_status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The gRPC status and public message for a known failure, None for a bug.

    The message is ``"<code>: <text>"`` so callers (the gateways) can map a status
    back to a specific error code without parsing free text.
    """
    if isinstance(exc, UNAVAILABLE_ERRORS):
        exc = StoreUnavailable("MongoDB is unavailable")
    if not isinstance(exc, RoomcastError):
        return None
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status, f"{exc.code}: {exc.message}"
    return None
