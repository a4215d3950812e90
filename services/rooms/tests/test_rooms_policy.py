"""Unit tests of the pure parts: role rules, prefix ranges, cursors."""

from __future__ import annotations

import pytest

from roomcast.rooms.errors import (
    DirectRoomFixed,
    InsufficientRole,
    InvalidArgument,
    OwnerMustTransfer,
)
from roomcast.rooms.listing import prefix_range
from roomcast.rooms.policy import (
    Role,
    RoleChange,
    Visibility,
    can_see,
    check_delete,
    check_leave,
    check_remove,
    check_set_role,
    require_not_direct,
    shows_invite_code,
)
from roomcast.rooms.store import direct_key
from roomcast.rooms.validation import (
    JOINED_ROOMS,
    PUBLIC_ROOMS,
    decode_cursor,
    encode_cursor,
    name_key,
)

OW, A, M = Role.OWNER, Role.ADMIN, Role.MEMBER


@pytest.mark.parametrize(
    ("actor", "target", "new", "outcome"),
    [
        (OW, A, M, RoleChange.SET),
        (OW, M, A, RoleChange.SET),
        (OW, M, M, RoleChange.NONE),
        (OW, A, A, RoleChange.NONE),
        (OW, M, OW, RoleChange.TRANSFER),
        (OW, A, OW, RoleChange.TRANSFER),
        (A, M, M, RoleChange.NONE),
        (A, M, A, InsufficientRole),  # only strictly below the actor's own role
        (A, M, OW, InsufficientRole),
        (A, A, M, InsufficientRole),  # not another admin
        (A, OW, M, InsufficientRole),
        (M, M, A, InsufficientRole),
        (None, M, A, InsufficientRole),
    ],
)
def test_set_role_rules(
    actor: Role | None, target: Role, new: Role, outcome: RoleChange | type[Exception]
) -> None:
    if isinstance(outcome, RoleChange):
        assert check_set_role(actor, target, new) is outcome
    else:
        with pytest.raises(outcome):
            check_set_role(actor, target, new)


@pytest.mark.parametrize(
    ("actor", "target", "allowed"),
    [
        (OW, A, True),
        (OW, M, True),
        (A, M, True),
        (A, A, False),
        (A, OW, False),
        (M, M, False),
        (None, M, False),
    ],
)
def test_remove_rules(actor: Role | None, target: Role, allowed: bool) -> None:
    if allowed:
        check_remove(actor, target)
    else:
        with pytest.raises(InsufficientRole):
            check_remove(actor, target)


def test_delete_leave_visibility_and_codes() -> None:
    check_delete(OW, global_admin=False)
    check_delete(None, global_admin=True)
    for role in (A, M, None):
        with pytest.raises(InsufficientRole):
            check_delete(role, global_admin=False)
    with pytest.raises(OwnerMustTransfer):
        check_leave(OW)
    check_leave(A)
    with pytest.raises(DirectRoomFixed):
        require_not_direct(Visibility.DIRECT)
    assert can_see(Visibility.PUBLIC, None, global_admin=False)
    assert not can_see(Visibility.PRIVATE, None, global_admin=False)
    assert not can_see(Visibility.DIRECT, None, global_admin=False)
    assert can_see(Visibility.PRIVATE, None, global_admin=True)
    assert can_see(Visibility.DIRECT, M, global_admin=False)
    assert [shows_invite_code(Visibility.PRIVATE, r) for r in (OW, A, M, None)] == [
        True,
        True,
        False,
        False,
    ]
    assert not shows_invite_code(Visibility.DIRECT, OW)


@pytest.mark.parametrize("prefix", ["a", "dev", "z\U0010ffff", "\ud7ff", "é"])
def test_prefix_range_matches_exactly_the_prefixed_strings(prefix: str) -> None:
    bounds = prefix_range(prefix)
    candidates = [prefix, prefix + "a", prefix + "\U0010ffff", prefix[:-1], prefix[:-1] + "\uffff"]
    for s in candidates:
        inside = bounds["$gte"] <= s and ("$lt" not in bounds or s < bounds["$lt"])
        assert inside == s.startswith(prefix), (prefix, s)
    assert "\ud800" not in bounds.get("$lt", "")


def test_prefix_range_of_the_largest_code_point_is_open_ended() -> None:
    assert prefix_range("\U0010ffff") == {"$gte": "\U0010ffff"}


def test_cursor_round_trip_and_kind_check() -> None:
    oid = "0123456789abcdef01234567"
    cursor = encode_cursor(PUBLIC_ROOMS, oid)
    assert decode_cursor(PUBLIC_ROOMS, cursor) == oid
    assert decode_cursor(PUBLIC_ROOMS, "") is None
    with pytest.raises(InvalidArgument):
        decode_cursor(JOINED_ROOMS, cursor)


def test_direct_key_is_order_independent_and_names_normalize() -> None:
    assert direct_key("b" * 24, "a" * 24) == direct_key("a" * 24, "b" * 24)
    assert name_key("Straße \uff21\uff22\uff23") == "strasse abc"


def test_every_known_failure_maps_to_a_specific_status() -> None:
    import grpc
    from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError

    from roomcast.common.errors import Conflict, DependencyUnavailable, RateLimited, Unauthenticated
    from roomcast.rooms.errors import (
        ConcurrentChange,
        MemberNotFound,
        NotAuthenticated,
        RoomNotFound,
        TooManyRequests,
        grpc_status_for,
    )

    cases = {
        InvalidArgument("x"): grpc.StatusCode.INVALID_ARGUMENT,
        NotAuthenticated(): grpc.StatusCode.UNAUTHENTICATED,
        Unauthenticated("expired", code="token_expired"): grpc.StatusCode.UNAUTHENTICATED,
        RoomNotFound(): grpc.StatusCode.NOT_FOUND,
        MemberNotFound(): grpc.StatusCode.NOT_FOUND,
        InsufficientRole(): grpc.StatusCode.PERMISSION_DENIED,
        Conflict(): grpc.StatusCode.ALREADY_EXISTS,
        OwnerMustTransfer(): grpc.StatusCode.FAILED_PRECONDITION,
        DirectRoomFixed(): grpc.StatusCode.FAILED_PRECONDITION,
        ConcurrentChange(): grpc.StatusCode.ABORTED,
        TooManyRequests(retry_after=1): grpc.StatusCode.RESOURCE_EXHAUSTED,
        RateLimited(): grpc.StatusCode.RESOURCE_EXHAUSTED,
        DependencyUnavailable("jwks"): grpc.StatusCode.UNAVAILABLE,
        ServerSelectionTimeoutError("down"): grpc.StatusCode.UNAVAILABLE,
        AutoReconnect("reset"): grpc.StatusCode.UNAVAILABLE,
    }
    for exc, status in cases.items():
        mapped = grpc_status_for(exc)
        assert mapped is not None, exc
        assert mapped[0] == status, exc
    assert grpc_status_for(RoomNotFound())[1].startswith("room_not_found: ")  # type: ignore[index]
    # A bug is not a known failure: the interceptor answers INTERNAL and logs it.
    assert grpc_status_for(KeyError("x")) is None
    assert grpc_status_for(OperationFailure("bad query")) is None
