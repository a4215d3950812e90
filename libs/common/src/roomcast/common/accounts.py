"""The account models of the public contract: the request and response bodies of
registration, login, refresh and profiles, and the username rule.

They live here, not in the auth service, because two services speak them: auth serves
them and the gateway declares its relayed auth routes with the same models (one source
of truth for the OpenAPI document and for refusing malformed bodies at the edge).

Every input model is strict (a JSON object, array or number where a string belongs is a
400, never a query) and forbids unknown fields.

API: ``StrictInput`` (base of every input), ``RegisterRequest``, ``LoginRequest``,
``RefreshRequest``, ``ProfilePatch``; ``PublicUser``, ``PrivateUser``, ``UserEnvelope``,
``TokenPair``; the field types ``Username``, ``Password``, ``DisplayName``,
``AvatarUrl``; ``USERNAME_PATTERN`` and the length limits; ``is_valid_username``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

# Usernames: ASCII letters, digits and ``_ . -``; unique case-insensitively. 3..32 keeps
# them readable in a chat line and safe in URLs, logs and subjects.
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"
# bcrypt's own input limit is 72 bytes; passwords are pre-hashed (see passwords.py), so
# the limit is ours: long enough for any passphrase or manager, short enough that a
# request cannot make us hash megabytes.
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1024
# A display name fits in a chat line.
DISPLAY_NAME_MAX_LENGTH = 64
# Avatar URLs are stored and echoed in every token and message; 512 covers CDN URLs.
AVATAR_URL_MAX_LENGTH = 512
# RFC 5321's practical limit on an address.
EMAIL_MAX_LENGTH = 254
# An opaque refresh token is 43 characters; anything much longer is not one of ours.
REFRESH_TOKEN_MAX_LENGTH = 256

_USERNAME_RE = re.compile(USERNAME_PATTERN)
# Zero-width (non-)joiners are "format" characters that emoji sequences and several
# scripts need; every other control, format (bidi overrides, zero-width spaces),
# surrogate, private-use or unassigned character is refused in a display name.
_ALLOWED_FORMAT_CHARS = frozenset("\u200c\u200d")


def _is_refused_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "C" and ch not in _ALLOWED_FORMAT_CHARS


def _clean_display_name(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if not 1 <= len(value) <= DISPLAY_NAME_MAX_LENGTH:
        raise ValueError(f"must be 1 to {DISPLAY_NAME_MAX_LENGTH} characters")
    if any(_is_refused_char(ch) for ch in value):
        raise ValueError("must not contain control or invisible formatting characters")
    return value


def _check_avatar_url(value: str) -> str:
    if len(value) > AVATAR_URL_MAX_LENGTH:
        raise ValueError(f"must be at most {AVATAR_URL_MAX_LENGTH} characters")
    if not value.isascii() or any(ch.isspace() or ord(ch) < 0x20 or ch == "\x7f" for ch in value):
        raise ValueError("must be an ASCII URL without spaces")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ValueError("must be a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials")
    return value


Username = Annotated[str, Field(pattern=USERNAME_PATTERN, min_length=3, max_length=32)]
Password = Annotated[
    str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH, repr=False)
]
DisplayName = Annotated[
    str, Field(max_length=DISPLAY_NAME_MAX_LENGTH * 4), AfterValidator(_clean_display_name)
]
AvatarUrl = Annotated[
    str, Field(max_length=AVATAR_URL_MAX_LENGTH), AfterValidator(_check_avatar_url)
]


class StrictInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RegisterRequest(StrictInput):
    username: Username
    password: Password
    email: Annotated[EmailStr, Field(max_length=EMAIL_MAX_LENGTH)] | None = None
    display_name: DisplayName | None = None


class LoginRequest(StrictInput):
    username: Username
    # Only the upper bound at login: a later policy change must not lock anyone out.
    password: Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_LENGTH, repr=False)]


class RefreshRequest(StrictInput):
    refresh_token: Annotated[str, Field(min_length=1, max_length=REFRESH_TOKEN_MAX_LENGTH)]


class ProfilePatch(StrictInput):
    """Fields present are changed; ``avatar_url: null`` removes the avatar."""

    display_name: DisplayName | None = None
    avatar_url: AvatarUrl | None = None


class PublicUser(BaseModel):
    id: str
    username: str
    display_name: str
    avatar_url: str | None
    created_at: datetime


class PrivateUser(PublicUser):
    email: str | None


class UserEnvelope(BaseModel):
    user: PrivateUser


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth token type, not a secret)
    expires_in: int
    user: PrivateUser


def is_valid_username(value: str) -> bool:
    return _USERNAME_RE.fullmatch(value) is not None
