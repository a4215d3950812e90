"""The stored chat record: written by the gateways, read by history, defined once here.

A record is the JSON payload of one message on ``chat.room.<room_id>`` in the ``CHAT``
stream:

- ``{"room", "sender", "body", "sent_at", "to"?, "reply_to"?, "mentions"?, "client_id",
  "kind": "message"}``
- ``{"room", "target_seq", "sender", "body", "edited_at", "sent_at", "client_id",
  "kind": "edit"}``
- ``{"room", "target_seq", "sender", "deleted_at", "sent_at", "client_id",
  "kind": "delete"}``
- ``{"room", "target_seq", "sender", "emoji", "op": "add"|"remove", "sent_at",
  "client_id", "kind": "reaction"}``

``sender`` is ``{"id", "username", "display_name", "avatar_url"}``; a record without
``kind`` is a message. The gateway encodes with :func:`encode_message` /
:func:`encode_change` and history decodes with :func:`decode_record`, so one set of
rules decides what is a record: whatever the gateway acknowledges, history can store,
and anything else is an :class:`InvalidRecord`. A later kind (reaction, reply, file)
adds a dataclass, an encoder and one entry in ``_DECODERS`` (the reaction did).

Text rule (docs/protocol.md): a text body is any non-blank sequence of Unicode scalar
values of at most :data:`MAX_TEXT_CHARS` code points, except U+0000. NUL is refused
because C-string consumers (terminals, logs, native clients, some drivers) truncate at
it, so it cannot be shown the way it was sent; lone surrogates (``\\ud800`` unpaired)
are not Unicode text at all and cannot be encoded as UTF-8 for anybody. Both are refused
at the gateway with an error frame, never acknowledged. Everything else (RTL marks,
combining marks, emoji, other control characters) is stored and returned exactly.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from roomcast.common.subjects import ROOM_SUBJECT_PREFIX, is_object_id

# Larger than any record a gateway publishes (MAX_TEXT_CHARS of the widest JSON escape
# is ~96 KB), smaller than nats-server's default 1 MB max_payload.
MAX_RECORD_BYTES = 256 * 1024
# Ceiling of a text body in code points. The gateway's max_body_chars (default 4000)
# may be configured up to this, never above: history refuses longer texts.
MAX_TEXT_CHARS = 16_000
# Profile strings come from auth's token claims; these bounds are generous on purpose
# (auth's own limits are far below) and both sides apply the same ones.
MAX_NAME_CHARS = 256
MAX_URL_CHARS = 2048
# ISO-8601 timestamps are ~24-32 characters; anything much longer is not one.
MAX_TIMESTAMP_CHARS = 64
# Nesting allowed inside ``body`` (text bodies are flat; attachments may nest a bit).
MAX_BODY_DEPTH = 4
# Mentions one message may carry: more than anyone types in one message; a message that
# names more people than this is a broadcast, which rooms have other means for, and a
# bound keeps one record from fanning out to thousands of notifications.
MAX_MENTIONS = 50
# A reaction's emoji in code points: an emoji with skin tone and ZWJ sequence is up to
# ~10; 32 leaves room for short text reactions (":+1:", "lol") without becoming a message.
MAX_EMOJI_CHARS = 32
# client_id: chosen by the client to deduplicate retries; short and plain so it can sit
# in a NATS header (Nats-Msg-Id) and in logs.
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BODY_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")

KIND_MESSAGE: Final = "message"
KIND_EDIT: Final = "edit"
KIND_DELETE: Final = "delete"
KIND_REACTION: Final = "reaction"
ReactionOp = Literal["add", "remove"]
ChangeKind = Literal["edit", "delete"]

# The Nats-Msg-Id namespace letter of each kind but the message (whose id stays
# ``<sender>:<client_id>``, the format of every send stored before namespaces existed, so
# a send retried across a deploy is still deduplicated). A client_id has no ':', so
# ``<sender>:e:<id>`` can never equal any send's id.
_MSG_ID_NAMESPACE = {KIND_EDIT: "e", KIND_DELETE: "d", KIND_REACTION: "r"}


# Every ``InvalidRecord.reason`` (a bounded metric label): services export each with a
# zero count from the start, so an alert sees the first occurrence as an increase.
INVALID_RECORD_REASONS: Final = (
    "bad_field",
    "bad_subject",
    "malformed_json",
    "not_an_object",
    "room_mismatch",
    "too_large",
    "unknown_kind",
)


class InvalidRecord(ValueError):
    """A payload that is not a valid chat record. ``reason`` is a short, bounded label
    (used as a metric label); ``detail`` says which field."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InvalidText(InvalidRecord):
    """A text body that breaks the text rule (``bad_field``); ``detail`` is fit to show
    to the client who sent it, ``too_long`` tells a length error from the others."""

    def __init__(self, detail: str, *, too_long: bool = False) -> None:
        super().__init__("bad_field", detail)
        self.too_long = too_long


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
    # The seq of the message of the same room this one replies to (checked by history
    # against the stored parent), and the user ids the text mentions.
    reply_to: int | None = None
    mentions: tuple[str, ...] = ()


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


@dataclass(frozen=True, slots=True)
class ReactionRecord:
    """One user adding or removing one emoji on message ``target_seq``. Exactly once
    per (user, message, emoji): history keeps the state of that triple set by the
    newest record, so a retried or redelivered reaction changes nothing."""

    seq: int
    room_id: str
    target_seq: int
    sender: Sender
    emoji: str
    op: ReactionOp
    sent_at: str


Record = ChatMessage | EditRecord | DeleteRecord | ReactionRecord
Change = EditRecord | DeleteRecord


# --- rules shared by both sides -------------------------------------------------------


def check_text(content: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    """``content`` if it is a storable text body, else :class:`InvalidText`.

    Lone surrogates never reach here from JSON (orjson refuses them when decoding) and
    the encoders refuse them too, so this costs two linear scans at most."""
    if not isinstance(content, str) or not content.strip():
        raise InvalidText("body.content must be a non-empty string")
    if len(content) > min(max_chars, MAX_TEXT_CHARS):
        raise InvalidText(f"body.content exceeds {max_chars} characters", too_long=True)
    if "\x00" in content:
        raise InvalidText("body.content must not contain U+0000 (NUL)")
    return content


def check_emoji(value: object) -> str:
    """``value`` if it is a storable reaction: 1-MAX_EMOJI_CHARS code points, an emoji
    (ZWJ sequences, skin tones and variation selectors included) or short text, without
    surrounding blanks and without control characters (C0/C1, line and paragraph
    separators) or lone surrogates; else InvalidRecord ``bad_field`` with a detail fit
    for the client."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_EMOJI_CHARS:
        raise InvalidRecord("bad_field", f"emoji must be 1-{MAX_EMOJI_CHARS} characters")
    if value != value.strip():
        raise InvalidRecord("bad_field", "emoji must not start or end with blanks")
    for char in value:
        if unicodedata.category(char) in _REFUSED_EMOJI_CATEGORIES:
            raise InvalidRecord("bad_field", "emoji must not contain control characters")
    return value


# Cc: C0/C1 controls (NUL, newline, ESC...); Zl/Zp: line and paragraph separators;
# Cs: lone surrogates. Cf stays allowed (emoji need ZWJ, U+200D), and so does Cn:
# emoji newer than this Python's Unicode tables are unassigned to it.
_REFUSED_EMOJI_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})


def valid_mentions(value: object) -> tuple[str, ...]:
    """The distinct user ids of a record's ``mentions``, in order, at most MAX_MENTIONS;
    anything else in the list is left out."""
    if not isinstance(value, list):
        return ()
    ids: list[str] = []
    for item in value:
        if len(ids) == MAX_MENTIONS:
            break
        if is_object_id(item) and item not in ids:
            assert isinstance(item, str)
            ids.append(item)
    return tuple(ids)


def is_client_id(value: object) -> bool:
    return isinstance(value, str) and CLIENT_ID.fullmatch(value) is not None


def msg_id(kind: str, sender_id: str, client_id: str) -> str:
    """The Nats-Msg-Id of a record: one deduplication namespace per kind and sender."""
    namespace = _MSG_ID_NAMESPACE.get(kind)
    if namespace is None:
        return f"{sender_id}:{client_id}"
    return f"{sender_id}:{namespace}:{client_id}"


def _plain_str(value: object, max_chars: int, *, allow_empty: bool = False) -> bool:
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
    if not is_object_id(user_id) or not _plain_str(username, MAX_NAME_CHARS):
        raise InvalidRecord("bad_field", "sender")
    display_name = value.get("display_name")
    if display_name is None:
        display_name = username
    if not _plain_str(display_name, MAX_NAME_CHARS, allow_empty=True):
        raise InvalidRecord("bad_field", "sender.display_name")
    avatar_url = value.get("avatar_url")
    if avatar_url is not None and not _plain_str(avatar_url, MAX_URL_CHARS, allow_empty=True):
        raise InvalidRecord("bad_field", "sender.avatar_url")
    assert isinstance(user_id, str)
    assert isinstance(username, str)
    assert isinstance(display_name, str)
    return Sender(user_id, username, display_name, avatar_url)


# Validated senders by their claims: a socket sends many messages as one user, so the
# check runs once per user and token profile, not per message. Bounded by the sockets
# a gateway holds at once (20k by default) with room to spare.
@functools.lru_cache(maxsize=32_768)
def sender_of(
    user_id: str, username: str, display_name: str | None, avatar_url: str | None
) -> Sender:
    """The record sender for a token's profile claims, or InvalidRecord."""
    return _sender(
        {
            "id": user_id,
            "username": username,
            "display_name": display_name,
            "avatar_url": avatar_url,
        }
    )


# --- encoding (gateway) ------------------------------------------------------------------


# (second, "YYYY-MM-DDTHH:MM:SS.") of the last timestamp: formatting a datetime costs
# ~10 us, more than the rest of a record's encoding, and a busy gateway stamps many
# records per second. One tuple, replaced whole, so concurrent readers see a pair.
_last_second: tuple[int, str] = (-1, "")


def utc_timestamp(now: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds: ``2026-01-31T12:00:00.123Z``."""
    global _last_second
    t = time.time() if now is None else now
    second, ms = divmod(int(t * 1000), 1000)
    cached_second, prefix = _last_second
    if second != cached_second:
        prefix = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second = (second, prefix)
    return f"{prefix}{ms:03d}Z"


def _dumps(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError as exc:  # a lone surrogate in a str
        raise InvalidText("text must be valid Unicode (no lone surrogates)") from exc


def encode_message(
    *,
    room: str,
    sender: Sender,
    content: str,
    to: str | None,
    client_id: str,
    sent_at: str,
    reply_to: int | None = None,
    mentions: tuple[str, ...] = (),
    file_body: dict[str, Any] | None = None,
) -> bytes:
    """The record of one text message: what is known before the stream assigns its
    sequence (the gateway adds ``seq``/``prev``/``id`` when relaying, history stores
    it under the sequence). ``content`` has passed :func:`check_text` already; a file
    message passes ``file_body`` (:func:`make_file_body`) and its caption as nothing
    else."""
    record: dict[str, Any] = {
        "room": room,
        "sender": sender.to_doc(),
        "body": file_body if file_body is not None else {"type": "text", "content": content},
        "sent_at": sent_at,
    }
    if to is not None:
        record["to"] = to
    if reply_to is not None:
        record["reply_to"] = reply_to
    if mentions:
        record["mentions"] = list(mentions)
    record["client_id"] = client_id
    record["kind"] = KIND_MESSAGE
    return _dumps(record)


def encode_change(
    *,
    kind: ChangeKind,
    room: str,
    target_seq: int,
    sender: Sender,
    content: str | None,
    client_id: str,
    at: str,
) -> bytes:
    """The record of an edit (``content``) or a delete (None) of message ``target_seq``;
    ``edited_at``/``deleted_at`` repeat ``sent_at`` for the live frames."""
    record: dict[str, Any] = {"room": room, "target_seq": target_seq, "sender": sender.to_doc()}
    if kind == KIND_EDIT:
        record["body"] = {"type": "text", "content": content}
        record["edited_at"] = at
    else:
        record["deleted_at"] = at
    record["sent_at"] = at
    record["client_id"] = client_id
    record["kind"] = kind
    return _dumps(record)


def encode_reaction(
    *,
    room: str,
    target_seq: int,
    sender: Sender,
    emoji: str,
    op: ReactionOp,
    client_id: str,
    at: str,
) -> bytes:
    """The record of a reaction added or removed; ``emoji`` has passed
    :func:`check_emoji` already."""
    record: dict[str, Any] = {
        "room": room,
        "target_seq": target_seq,
        "sender": sender.to_doc(),
        "emoji": emoji,
        "op": op,
        "sent_at": at,
        "client_id": client_id,
        "kind": KIND_REACTION,
    }
    return _dumps(record)


# --- decoding (history) ------------------------------------------------------------------


def room_of_subject(subject: str) -> str:
    """The room id of ``chat.room.<room_id>``; InvalidRecord for any other subject."""
    room_id = subject[len(ROOM_SUBJECT_PREFIX) :]
    if not subject.startswith(ROOM_SUBJECT_PREFIX) or not is_object_id(room_id):
        raise InvalidRecord("bad_subject", subject[:80])
    return room_id


def decode_record(seq: int, subject: str, data: bytes) -> Record:
    """Parse and validate the payload stored at stream sequence ``seq`` on ``subject``."""
    room_id = room_of_subject(subject)
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidRecord("too_large", f"{len(data)} bytes")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord("malformed_json", str(exc)[:80]) from exc
    if not isinstance(raw, dict):
        raise InvalidRecord("not_an_object")
    if raw.get("room", room_id) != room_id:
        raise InvalidRecord("room_mismatch")
    decoder = _DECODERS.get(raw.get("kind", KIND_MESSAGE))
    if decoder is None:
        raise InvalidRecord("unknown_kind")
    return decoder(seq, room_id, raw, _sender(raw.get("sender")), _timestamp(raw.get("sent_at")))


def _decode_message(seq: int, room_id: str, raw: dict[str, Any], sender: Sender, at: str) -> Record:
    to = raw.get("to")
    if to is not None and not is_object_id(to):
        raise InvalidRecord("bad_field", "to")
    client_id = raw.get("client_id")
    if client_id is not None and not is_client_id(client_id):
        raise InvalidRecord("bad_field", "client_id")
    # reply_to and mentions only add to a message: a malformed one is dropped (never
    # stored, never trusted) rather than losing the message itself to dead_letters.
    reply_to = raw.get("reply_to")
    if type(reply_to) is not int or not 1 <= reply_to < seq:
        reply_to = None
    return ChatMessage(
        seq,
        room_id,
        sender,
        _body(raw.get("body")),
        at,
        to,
        client_id,
        reply_to,
        valid_mentions(raw.get("mentions")),
    )


def _decode_edit(seq: int, room_id: str, raw: dict[str, Any], sender: Sender, at: str) -> Record:
    target = _target(raw.get("target_seq"), seq)
    return EditRecord(seq, room_id, target, sender, _body(raw.get("body")), at)


def _decode_delete(seq: int, room_id: str, raw: dict[str, Any], sender: Sender, at: str) -> Record:
    return DeleteRecord(seq, room_id, _target(raw.get("target_seq"), seq), sender, at)


def _decode_reaction(
    seq: int, room_id: str, raw: dict[str, Any], sender: Sender, at: str
) -> Record:
    op = raw.get("op")
    if op not in ("add", "remove"):
        raise InvalidRecord("bad_field", "op")
    target = _target(raw.get("target_seq"), seq)
    return ReactionRecord(seq, room_id, target, sender, check_emoji(raw.get("emoji")), op, at)


_DECODERS: dict[object, Callable[[int, str, dict[str, Any], Sender, str], Record]] = {
    KIND_MESSAGE: _decode_message,
    KIND_EDIT: _decode_edit,
    KIND_DELETE: _decode_delete,
    KIND_REACTION: _decode_reaction,
}


def _timestamp(value: object) -> str:
    """An ISO-8601 timestamp with a time zone, kept as the gateway wrote it so history
    shows exactly what live delivery showed."""
    if not _plain_str(value, MAX_TIMESTAMP_CHARS):
        raise InvalidRecord("bad_field", "sent_at")
    assert isinstance(value, str)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRecord("bad_field", "sent_at") from exc
    if parsed.tzinfo is None:
        raise InvalidRecord("bad_field", "sent_at without a time zone")
    return value


def _target(value: object, own_seq: int, name: str = "target_seq") -> int:
    # An edit, delete, reaction or reply always follows the message it refers to.
    if type(value) is not int or not 1 <= value < own_seq:
        raise InvalidRecord("bad_field", name)
    return value


def _body(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRecord("bad_field", "body")
    body_type = value.get("type")
    if not _plain_str(body_type, 32):
        raise InvalidRecord("bad_field", "body.type")
    if body_type == "text":
        check_text(value.get("content"))
    elif body_type == "file":
        _check_file_body(value)
    _check_plain_json(value, depth=1)
    return value


def _check_plain_json(value: object, *, depth: int) -> None:
    """Only JSON whose object keys are plain identifiers (never MongoDB operators
    ``$...`` or paths ``a.b``), at most MAX_BODY_DEPTH deep, integers that fit BSON."""
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


# A file message's body (docs/files.md): the shared file's metadata as history stored
# it at upload, and an optional caption under the text rule.
FILE_KEYS: Final = frozenset({"id", "name", "size", "content_type", "sha256"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def make_file_body(file: dict[str, Any], caption: str | None) -> dict[str, Any]:
    """``{"type": "file", "file": {...}, "caption"?}``, or InvalidRecord."""
    body: dict[str, Any] = {"type": "file", "file": {k: file.get(k) for k in FILE_KEYS}}
    if caption is not None:
        body["caption"] = caption
    _check_file_body(body)
    return body


def _check_file_body(value: dict[str, Any]) -> None:
    file = value.get("file")
    if not isinstance(file, dict) or set(file) != FILE_KEYS:
        raise InvalidRecord("bad_field", "body.file")
    size = file["size"]
    if (
        not is_object_id(file["id"])
        or not _plain_str(file["name"], MAX_NAME_CHARS)
        or not _plain_str(file["content_type"], 128)
        or type(size) is not int
        or not 0 <= size < 2**63
        or not isinstance(file["sha256"], str)
        or _SHA256.fullmatch(file["sha256"]) is None
    ):
        raise InvalidRecord("bad_field", "body.file")
    if "caption" in value:
        check_text(value["caption"])
    if not set(value) <= {"type", "file", "caption"}:
        raise InvalidRecord("bad_field", "body")
