"""Chat records as the gateways store them in JetStream, parsed and validated.

A record is the JSON payload of one message on ``chat.room.<room_id>``:

- ``{"kind": "message", "room", "sender", "body", "sent_at", "to"?, "client_id"}``
- ``{"kind": "edit", "room", "target_seq", "sender", "body", "sent_at"}``
- ``{"kind": "delete", "room", "target_seq", "sender", "sent_at"}``

``sender`` is ``{"id", "username", "display_name", "avatar_url"}``. A record without
``kind`` is a message. Anything else is an :class:`InvalidRecord`: it is acknowledged
and counted, never stored (a record that can never be valid must not block the stream).

Everything that ends up in MongoDB is checked here first: ids are ObjectId strings,
strings have length limits, and ``body`` holds only plain JSON whose keys cannot be
read as MongoDB operators (``$...``) or paths (``a.b``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import orjson

from roomcast.common.subjects import ROOM_SUBJECT_PREFIX, is_object_id

# Larger than any record a gateway publishes (its frame limit is far below), smaller
# than nats-server's default 1 MB max_payload; a bigger payload is not a chat record.
MAX_RECORD_BYTES = 256 * 1024
# Profile strings come from auth's token claims; these bounds are generous on purpose
# (a stricter rule here would drop messages auth considers valid).
MAX_NAME_CHARS = 256
MAX_URL_CHARS = 2048
MAX_CLIENT_ID_CHARS = 128
# ISO-8601 timestamps are ~32 characters; anything much longer is not one.
MAX_TIMESTAMP_CHARS = 64
# Nesting allowed inside ``body`` (text bodies are flat; attachments may nest a bit).
MAX_BODY_DEPTH = 4
_BODY_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


class InvalidRecord(ValueError):
    """A stream payload that is not a valid chat record. ``reason`` is a short,
    bounded label (used as a metric label)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Sender:
    id: str
    username: str
    display_name: str
    avatar_url: str | None

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "avatar_url": self.avatar_url,
        }


@dataclass(frozen=True, slots=True)
class ChatMessage:
    seq: int
    room_id: str
    sender: Sender
    body: dict[str, Any]
    sent_at: str
    to: str | None
    client_id: str | None


@dataclass(frozen=True, slots=True)
class EditRecord:
    seq: int
    room_id: str
    target_seq: int
    sender: Sender
    body: dict[str, Any]
    sent_at: str


@dataclass(frozen=True, slots=True)
class DeleteRecord:
    seq: int
    room_id: str
    target_seq: int
    sender: Sender
    sent_at: str


Record = ChatMessage | EditRecord | DeleteRecord
Change = EditRecord | DeleteRecord


def room_of_subject(subject: str) -> str:
    """The room id of ``chat.room.<room_id>``; InvalidRecord for any other subject."""
    if not subject.startswith(ROOM_SUBJECT_PREFIX):
        raise InvalidRecord("bad_subject", subject[:80])
    room_id = subject[len(ROOM_SUBJECT_PREFIX) :]
    if not is_object_id(room_id):
        raise InvalidRecord("bad_subject", subject[:80])
    return room_id


def parse_record(seq: int, subject: str, data: bytes) -> Record:
    """Parse the payload stored at stream sequence ``seq`` on ``subject``."""
    room_id = room_of_subject(subject)
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidRecord("too_large", f"{len(data)} bytes")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord("malformed_json", str(exc)[:80]) from exc
    if not isinstance(raw, dict):
        raise InvalidRecord("not_an_object")
    claimed_room = raw.get("room", room_id)
    if claimed_room != room_id:
        raise InvalidRecord("room_mismatch")
    kind = raw.get("kind", "message")
    sender = _sender(raw.get("sender"))
    sent_at = _timestamp(raw.get("sent_at"))
    if kind == "message":
        to = raw.get("to")
        if to is not None and not is_object_id(to):
            raise InvalidRecord("bad_field", "to")
        client_id = raw.get("client_id")
        if client_id is not None and not _short_str(client_id, MAX_CLIENT_ID_CHARS):
            raise InvalidRecord("bad_field", "client_id")
        return ChatMessage(
            seq=seq,
            room_id=room_id,
            sender=sender,
            body=_body(raw.get("body")),
            sent_at=sent_at,
            to=to,
            client_id=client_id,
        )
    if kind == "edit":
        return EditRecord(
            seq=seq,
            room_id=room_id,
            target_seq=_target(raw.get("target_seq"), seq),
            sender=sender,
            body=_body(raw.get("body")),
            sent_at=sent_at,
        )
    if kind == "delete":
        return DeleteRecord(
            seq=seq,
            room_id=room_id,
            target_seq=_target(raw.get("target_seq"), seq),
            sender=sender,
            sent_at=sent_at,
        )
    raise InvalidRecord("unknown_kind")


def _short_str(value: object, max_chars: int, *, allow_empty: bool = False) -> bool:
    return (
        isinstance(value, str)
        and (allow_empty or len(value) > 0)
        and len(value) <= max_chars
        and "\x00" not in value
    )


def _sender(value: object) -> Sender:
    if not isinstance(value, dict):
        raise InvalidRecord("bad_field", "sender")
    user_id = value.get("id")
    username = value.get("username")
    if not is_object_id(user_id) or not _short_str(username, MAX_NAME_CHARS):
        raise InvalidRecord("bad_field", "sender")
    display_name = value.get("display_name")
    if display_name is None:
        display_name = username
    if not _short_str(display_name, MAX_NAME_CHARS, allow_empty=True):
        raise InvalidRecord("bad_field", "sender.display_name")
    avatar_url = value.get("avatar_url")
    if avatar_url is not None and not _short_str(avatar_url, MAX_URL_CHARS, allow_empty=True):
        raise InvalidRecord("bad_field", "sender.avatar_url")
    assert isinstance(user_id, str)
    assert isinstance(username, str)
    assert isinstance(display_name, str)
    return Sender(id=user_id, username=username, display_name=display_name, avatar_url=avatar_url)


def _timestamp(value: object) -> str:
    """An ISO-8601 timestamp with a time zone, kept as the gateway wrote it so
    history shows exactly what live delivery showed."""
    if not _short_str(value, MAX_TIMESTAMP_CHARS):
        raise InvalidRecord("bad_field", "sent_at")
    assert isinstance(value, str)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRecord("bad_field", "sent_at") from exc
    if parsed.tzinfo is None:
        raise InvalidRecord("bad_field", "sent_at without a time zone")
    return value


def _target(value: object, own_seq: int) -> int:
    # An edit or delete always follows the message it changes in the stream.
    if type(value) is not int or not 1 <= value < own_seq:
        raise InvalidRecord("bad_field", "target_seq")
    return value


def _body(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRecord("bad_field", "body")
    body_type = value.get("type")
    if not _short_str(body_type, 32):
        raise InvalidRecord("bad_field", "body.type")
    if body_type == "text" and not isinstance(value.get("content"), str):
        raise InvalidRecord("bad_field", "body.content")
    _check_plain_json(value, depth=1)
    return value


def _check_plain_json(value: object, *, depth: int) -> None:
    """Only JSON whose object keys are plain identifiers, at most MAX_BODY_DEPTH deep."""
    if depth > MAX_BODY_DEPTH:
        raise InvalidRecord("bad_field", "body too deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or _BODY_KEY.fullmatch(key) is None:
                raise InvalidRecord("bad_field", "body key")
            _check_plain_json(item, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_plain_json(item, depth=depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise InvalidRecord("bad_field", "body string")
    elif isinstance(value, int) and not isinstance(value, bool):
        # BSON integers are signed 64-bit; JSON allows more (orjson reads up to u64).
        if not -(2**63) <= value < 2**63:
            raise InvalidRecord("bad_field", "body integer out of range")
    elif value is not None and not isinstance(value, bool | float):
        raise InvalidRecord("bad_field", "body value")
