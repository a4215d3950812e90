"""Parsing and validation of request fields. Everything a request carries goes through
here before it reaches a query, a subject or a policy decision."""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from roomcast.common.subjects import is_object_id
from roomcast.rooms.errors import InvalidArgument
from roomcast.rooms.policy import Role, Visibility
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

# Room names: what fits a sidebar entry and a notification title.
MAX_NAME_CHARS = 64
# Topics: one or two sentences shown under the room name.
MAX_TOPIC_CHARS = 256
# Prefix searches longer than any name cannot match anything.
MAX_PREFIX_CHARS = MAX_NAME_CHARS
# Invite codes we issue are 12 characters; anything much longer is not one of ours.
MAX_INVITE_CODE_CHARS = 64
# Our cursors are ~18 characters; this bounds the decode work on garbage.
MAX_CURSOR_CHARS = 64
# Page sizes: 50 by default fills a screen; 100 bounds one response (and one query).
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# Slow mode: at most one message per 6 hours. Longer intervals stop being a pace and
# become a mute, which has its own tool with an end time; 0 turns slow mode off.
MAX_SLOW_MODE_SECONDS = 6 * 3600
# Retention: 0 keeps messages forever; otherwise 1 day (the unit the purge works in:
# it runs every few minutes, docs/moderation.md) to 10 years.
MAX_RETENTION_DAYS = 3650
# A mute ends at most 366 days ahead: longer is a ban, and an end date beyond a year
# is almost always a typo (milliseconds given as seconds or the reverse).
MAX_MUTE_MS = 366 * 24 * 3600 * 1000
# User ids in one FilterMembers call: a gateway's sweep asks about every stale
# subscriber of a room at once; 1,000 ids (~25 kB) keep the request, the MongoDB $in
# query and its answer small and fast, and larger rooms are asked in chunks.
MAX_FILTER_IDS = 1000

_VISIBILITY_IN = {
    pb.VISIBILITY_PUBLIC: Visibility.PUBLIC,
    pb.VISIBILITY_PRIVATE: Visibility.PRIVATE,
}
_ROLE_IN = {pb.ROLE_MEMBER: Role.MEMBER, pb.ROLE_ADMIN: Role.ADMIN, pb.ROLE_OWNER: Role.OWNER}
# Unicode categories refused in names and topics: control characters, and the line and
# paragraph separators that would break single-line rendering and log lines.
_FORBIDDEN_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}


def parse_id(value: str, field: str) -> str:
    if not is_object_id(value):
        raise InvalidArgument(f"{field} must be 24 lowercase hex characters")
    return value


def parse_user_ids(values: Sequence[str]) -> list[str]:
    """Distinct, well-formed user ids, at most MAX_FILTER_IDS (checked before any
    query: no id reaches MongoDB unvalidated)."""
    if len(values) > MAX_FILTER_IDS:
        raise InvalidArgument(f"at most {MAX_FILTER_IDS} user_ids per call")
    return list(dict.fromkeys(parse_id(value, "user_ids") for value in values))


def _check_text(value: str, field: str, max_chars: int) -> str:
    if len(value) > max_chars:
        raise InvalidArgument(f"{field} must be at most {max_chars} characters")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        raise InvalidArgument(f"{field} must not contain control characters")
    return value


def parse_name(value: str) -> str:
    # Bound the work before stripping: a megabyte of spaces is not a 1-character name.
    if len(value) > MAX_NAME_CHARS * 4:
        raise InvalidArgument(f"name must be at most {MAX_NAME_CHARS} characters")
    name = _check_text(value.strip(), "name", MAX_NAME_CHARS)
    if not name:
        raise InvalidArgument("name must not be empty")
    return name


def parse_topic(value: str) -> str:
    if len(value) > MAX_TOPIC_CHARS * 4:
        raise InvalidArgument(f"topic must be at most {MAX_TOPIC_CHARS} characters")
    return _check_text(value.strip(), "topic", MAX_TOPIC_CHARS)


def name_key(text: str) -> str:
    """The normalized form names are searched by: compatibility-normalized, casefolded."""
    return unicodedata.normalize("NFKC", text).casefold()


def parse_name_prefix(value: str) -> str:
    return name_key(_check_text(value, "name_prefix", MAX_PREFIX_CHARS))


def parse_visibility(value: int, *, allow_unspecified: bool) -> Visibility | None:
    if value == pb.VISIBILITY_UNSPECIFIED and allow_unspecified:
        return None
    visibility = _VISIBILITY_IN.get(pb.Visibility.ValueType(value))
    if visibility is None:
        raise InvalidArgument("visibility must be VISIBILITY_PUBLIC or VISIBILITY_PRIVATE")
    return visibility


def parse_role(value: int) -> Role:
    role = _ROLE_IN.get(pb.Role.ValueType(value))
    if role is None:
        raise InvalidArgument("role must be ROLE_MEMBER, ROLE_ADMIN or ROLE_OWNER")
    return role


def parse_limit(value: int) -> int:
    if value < 0:
        raise InvalidArgument("limit must not be negative")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def parse_slow_mode(value: int) -> int:
    if not 0 <= value <= MAX_SLOW_MODE_SECONDS:
        raise InvalidArgument(f"slow_mode_seconds must be from 0 (off) to {MAX_SLOW_MODE_SECONDS}")
    return value


def parse_retention(value: int) -> int:
    if not 0 <= value <= MAX_RETENTION_DAYS:
        raise InvalidArgument(f"retention_days must be from 0 (forever) to {MAX_RETENTION_DAYS}")
    return value


def parse_mute_until(value: int, now_ms: int) -> int:
    """A mute's end: in the future, at most :data:`MAX_MUTE_MS` ahead."""
    if value <= now_ms:
        raise InvalidArgument("until_ms must be in the future")
    if value > now_ms + MAX_MUTE_MS:
        raise InvalidArgument("until_ms must be at most 366 days ahead (use a ban)")
    return value


def parse_seq(value: int) -> int:
    if value <= 0:
        raise InvalidArgument("seq must be a positive stream sequence")
    return value


def parse_invite_code(value: str) -> str:
    if len(value) > MAX_INVITE_CODE_CHARS:
        raise InvalidArgument(f"invite_code must be at most {MAX_INVITE_CODE_CHARS} characters")
    return value


@dataclass(frozen=True, slots=True)
class CursorKind:
    """Cursors are opaque to clients: base64url of a one-byte kind plus a 12-byte id,
    so a cursor of one listing is refused by another."""

    tag: bytes


PUBLIC_ROOMS = CursorKind(b"p")
JOINED_ROOMS = CursorKind(b"j")
MEMBERS = CursorKind(b"m")
BANS = CursorKind(b"b")
AUDIT = CursorKind(b"a")


def encode_cursor(kind: CursorKind, object_id: str) -> str:
    raw = kind.tag + bytes.fromhex(object_id)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(kind: CursorKind, value: str) -> str | None:
    """The id inside a cursor of ``kind``; None for an empty cursor."""
    if not value:
        return None
    if len(value) > MAX_CURSOR_CHARS or not value.isascii():
        raise InvalidArgument("cursor is malformed")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument("cursor is malformed") from exc
    if len(raw) != 13 or raw[:1] != kind.tag:
        raise InvalidArgument("cursor is malformed")
    return raw[1:].hex()
