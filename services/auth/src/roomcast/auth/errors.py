"""The errors the auth service raises on purpose, each with its public ``code``."""

from __future__ import annotations

from roomcast.common.errors import (
    Conflict,
    DependencyUnavailable,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
)


class ConfigurationError(Exception):
    """The service cannot start with this configuration (printed, then exit non-zero)."""


class InvalidCredentials(Unauthenticated):
    """Invalid username or password."""

    code = "invalid_credentials"


class MissingToken(Unauthenticated):
    """A bearer access token is required."""

    code = "missing_token"


class InvalidRefreshToken(Unauthenticated):
    """The refresh token is unknown or its session has ended."""

    code = "invalid_refresh_token"


class RefreshTokenExpired(Unauthenticated):
    """The refresh token has expired; log in again."""

    code = "refresh_token_expired"


class RefreshTokenReused(Unauthenticated):
    """The refresh token was already used; its whole session has been revoked."""

    code = "refresh_token_reused"


class UnknownUser(Unauthenticated):
    """The token's user no longer exists."""

    code = "invalid_token"


class UsernameTaken(Conflict):
    """This username is already taken."""

    code = "username_taken"


class EmailTaken(Conflict):
    """This email address is already registered."""

    code = "email_taken"


class UserNotFound(NotFound):
    """No such user."""

    code = "user_not_found"


class InvalidProfile(InvalidInput):
    """A profile field has an invalid value."""


class TooManyAttempts(RateLimited):
    """Too many attempts; retry later."""


class Overloaded(DependencyUnavailable):
    """The service is busy hashing passwords; retry shortly."""

    code = "overloaded"
