"""notifier's errors; mapped to HTTP statuses by roomcast.common.httpapp."""

from __future__ import annotations

from roomcast.common.errors import (
    DependencyUnavailable,
    InvalidInput,
    RateLimited,
    Unauthenticated,
)


class InvalidBody(InvalidInput):
    """A request body or query parameter that is not what the endpoint takes."""

    code = "invalid_request"


class InvalidSubscription(InvalidInput):
    """A push subscription that is not a valid Web Push ``PushSubscription``."""

    code = "invalid_subscription"


class MissingToken(Unauthenticated):
    """No bearer token in the Authorization header."""

    code = "unauthenticated"


class InboxRateLimited(RateLimited):
    """Too many inbox requests by this user."""


class StoreUnavailable(DependencyUnavailable):
    """MongoDB cannot be reached."""


class RoomsUnavailable(DependencyUnavailable):
    """rooms (or auth, for the service account's token) cannot be reached."""
