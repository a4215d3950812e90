"""The WebSocket protocol: client frames parsed into typed commands, server frames built.

Every client frame is a JSON object with a string ``type``. Parsing validates every
field's type and bounds before anything else looks at it; a bad frame raises
:class:`FrameError` carrying the error to report and the ``ref`` (the client_id or room
of the frame, when it could be read). docs/protocol.md is the reference.

Message frames are built once per message per gateway from the stored record (a JSON
object) by prefixing the sequence fields, never by decoding and re-encoding it.
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass
from typing import Any

import orjson

from roomcast.common.chatrecord import (
    KIND_MESSAGE,
    ChangeKind,
    InvalidRecord,
    InvalidText,
    ReactionOp,
    Sender,
    check_emoji,
    check_text,
    encode_change,
    encode_message,
    is_client_id,
    make_file_body,
    msg_id,
    sender_of,
    utc_timestamp,
)
from roomcast.common.errors import RoomcastError
from roomcast.common.subjects import is_object_id
from roomcast.common.tokens import AccessClaims
from roomcast.gateway.errors import (
    BodyTooLarge,
    InvalidEmoji,
    InvalidFrame,
    InvalidJson,
    MalformedToken,
    MissingToken,
    UnknownType,
)

# An access token is a compact JWS of a few hundred bytes; anything longer is not one.
MAX_TOKEN_CHARS = 4096
# Largest sequence number accepted in since/seq: JetStream sequences are uint64, but
# nobody reaches 2^63 and it keeps every seq a signed 64-bit integer for clients.
MAX_SEQ = 2**63 - 1

# NATS headers the gateway sets on every chat record, so fan-out can route private
# messages without decoding the payload. The payload stays the source of truth.
HDR_MSG_ID = "Nats-Msg-Id"
HDR_SENDER = "Roomcast-Sender"
HDR_TO = "Roomcast-To"
# The record's kind when it is not a message ("edit" or "delete"): picks the frame type.
HDR_KIND = "Roomcast-Kind"


class FrameError(Exception):
    """A client frame that cannot be executed: the error to report and its ref."""

    def __init__(self, error: RoomcastError, ref: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.ref = ref


@dataclass(frozen=True, slots=True)
class Auth:
    token: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    room: str
    since: int | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    room: str


@dataclass(frozen=True, slots=True)
class Send:
    room: str
    client_id: str
    content: str
    to: str | None
    # A ``file`` send (docs/files.md): the shared file's id; ``content`` is its
    # caption, "" for none.
    file_id: str | None = None
    # A reply: the parent message's seq in the same room (realtime/replies.py).
    reply_to: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Typing:
    room: str


@dataclass(frozen=True, slots=True)
class Read:
    room: str
    seq: int


@dataclass(frozen=True, slots=True)
class Presence:
    room: str


@dataclass(frozen=True, slots=True)
class Edit:
    room: str
    seq: int
    client_id: str
    content: str


@dataclass(frozen=True, slots=True)
class Delete:
    room: str
    seq: int
    client_id: str


@dataclass(frozen=True, slots=True)
class React:
    """A react (``op`` add) or unreact (``op`` remove) frame (realtime/reactions.py)."""

    room: str
    seq: int
    client_id: str
    emoji: str
    op: ReactionOp


Command = (
    Auth | Subscribe | Unsubscribe | Send | Ping | Typing | Read | Presence | Edit | Delete | React
)

PING = Ping()


def command_ref(command: Command) -> str | None:
    """What an error about this command refers to: its client_id, else its room."""
    if isinstance(command, Send | Edit | Delete | React):
        return command.client_id
    return getattr(command, "room", None)


def _room(obj: dict[str, Any], ref: str | None) -> str:
    room = obj.get("room")
    if not is_object_id(room):
        raise FrameError(InvalidFrame("room must be a room id (24 hex characters)"), ref)
    assert isinstance(room, str)
    return room


def _seq(value: object, field: str, ref: str | None) -> int:
    # bool is an int subclass: true/false are not sequence numbers.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQ:
        raise FrameError(InvalidFrame(f"{field} must be a non-negative integer"), ref)
    return value


def _targeted(obj: dict[str, Any], ref: str | None) -> tuple[str, str, int]:
    """A command on a stored message (edit, delete, react): its client_id, room and the
    target's seq (positive)."""
    client_id = _client_id(obj, ref)
    room = _room(obj, client_id)
    target = _seq(obj.get("seq"), "seq", client_id)
    if target == 0:
        raise FrameError(InvalidFrame("seq must be a positive integer"), client_id)
    return client_id, room, target


def _client_id(obj: dict[str, Any], ref: str | None) -> str:
    client_id = obj.get("client_id")
    if not is_client_id(client_id):
        raise FrameError(InvalidFrame("client_id must be 1-64 characters of A-Z a-z 0-9 _ -"), ref)
    assert isinstance(client_id, str)
    return client_id


def _content(obj: dict[str, Any], client_id: str, max_body_chars: int) -> str:
    body = obj.get("body")
    if not isinstance(body, dict) or body.get("type") != "text":
        raise FrameError(InvalidFrame('body must be {"type": "text", "content": ...}'), client_id)
    try:
        # The stored record's text rule (roomcast.common.chatrecord): what is refused
        # here is exactly what history could not store.
        return check_text(body.get("content"), max_body_chars)
    except InvalidText as exc:
        error = BodyTooLarge if exc.too_long else InvalidFrame
        raise FrameError(error(exc.detail), client_id) from None


def _file_id(obj: dict[str, Any], client_id: str) -> str | None:
    """The file id of a ``{"type": "file", "file_id", "caption"?}`` body, else None."""
    body = obj.get("body")
    if not isinstance(body, dict) or body.get("type") != "file":
        return None
    if not set(body) <= {"type", "file_id", "caption"} or not is_object_id(body.get("file_id")):
        raise FrameError(
            InvalidFrame('body must be {"type": "file", "file_id": <24 hex>, "caption"?}'),
            client_id,
        )
    return str(body["file_id"])


def _caption(obj: dict[str, Any], client_id: str, max_body_chars: int) -> str:
    caption = obj["body"].get("caption")
    if caption is None:
        return ""
    try:
        return check_text(caption, max_body_chars)
    except InvalidText as exc:
        error = BodyTooLarge if exc.too_long else InvalidFrame
        raise FrameError(error(exc.detail.replace("content", "caption")), client_id) from None


def _surrogate_error(data: bytes | str) -> FrameError:
    """A frame with an unpaired surrogate escape (``\\ud800``): JSON's grammar allows
    it, Unicode text does not, so it is refused like any bad field, with the frame's
    client_id as ref (read by the lenient stdlib parser, on this error path only) so the
    sender's pending send ends instead of being retried forever."""
    try:
        obj = json.loads(data)
    except ValueError:
        return FrameError(InvalidJson("frame is not valid JSON"))
    client_id = obj.get("client_id") if isinstance(obj, dict) else None
    return FrameError(
        InvalidFrame("text must be valid Unicode: a \\u escape is an unpaired surrogate"),
        client_id if is_client_id(client_id) else None,
    )


def parse_frame(data: bytes | str, *, max_body_chars: int) -> Command:
    """Parse one client frame or raise :class:`FrameError`."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "surrogate" in str(exc):
            raise _surrogate_error(data) from None
        raise FrameError(InvalidJson("frame is not valid JSON")) from None
    if not isinstance(obj, dict):
        raise FrameError(InvalidFrame("frame must be a JSON object"))
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise FrameError(InvalidFrame("type must be a string"))
    room_ref = obj.get("room") if is_object_id(obj.get("room")) else None

    if kind == "send":
        client_id = _client_id(obj, room_ref)
        room = _room(obj, client_id)
        file_id = _file_id(obj, client_id)
        content = (
            _content(obj, client_id, max_body_chars)
            if file_id is None
            else _caption(obj, client_id, max_body_chars)
        )
        to = obj.get("to")
        if to is not None and not is_object_id(to):
            raise FrameError(InvalidFrame("to must be a user id (24 hex characters)"), client_id)
        reply_to = obj.get("reply_to")
        if reply_to is not None:
            reply_to = _seq(reply_to, "reply_to", client_id)
            if reply_to == 0:
                raise FrameError(InvalidFrame("reply_to must be a positive integer"), client_id)
        return Send(room, client_id, content, to, file_id, reply_to)
    if kind == "subscribe":
        room = _room(obj, None)
        since = obj.get("since")
        return Subscribe(room, None if since is None else _seq(since, "since", room))
    if kind == "unsubscribe":
        return Unsubscribe(_room(obj, None))
    if kind == "ping":
        return PING
    if kind == "auth":
        token = obj.get("token")
        if token is None or token == "":
            raise FrameError(MissingToken("missing token: the auth frame needs an access token"))
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise FrameError(MalformedToken("token must be an access token string"))
        return Auth(token)
    if kind == "typing":
        return Typing(_room(obj, None))
    if kind == "read":
        room = _room(obj, None)
        return Read(room, _seq(obj.get("seq"), "seq", room))
    if kind == "presence":
        return Presence(_room(obj, None))
    if kind == "edit" or kind == "delete":
        client_id, room, target = _targeted(obj, room_ref)
        if kind == "delete":
            return Delete(room, target, client_id)
        return Edit(room, target, client_id, _content(obj, client_id, max_body_chars))
    if kind == "react" or kind == "unreact":
        client_id, room, target = _targeted(obj, room_ref)
        try:
            emoji = check_emoji(obj.get("emoji"))
        except InvalidRecord as exc:
            raise FrameError(
                InvalidEmoji(exc.detail or "emoji is not storable"), client_id
            ) from None
        return React(room, target, client_id, emoji, "add" if kind == "react" else "remove")
    raise FrameError(UnknownType("unknown frame type"), room_ref)


# --- records stored in the stream ----------------------------------------------------


# Distinct sender profiles kept validated: a gateway's active senders, with room to
# spare; an evicted one is validated again on its next message (microseconds).
SENDER_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=SENDER_CACHE_SIZE)
def _cached_sender(
    user_id: str, username: str, display_name: str | None, avatar_url: str | None
) -> Sender:
    # An InvalidRecord is raised, never cached: the next send checks again.
    return sender_of(user_id, username, display_name, avatar_url)


def record_sender(claims: AccessClaims) -> Sender:
    """The validated record sender of a token, cached per profile: not validated again
    for every message (the profile claims are the key, so a refreshed token with a new
    display name gets a new sender)."""
    return _cached_sender(claims.user_id, claims.username, claims.display_name, claims.avatar_url)


def message_record(
    *,
    room: str,
    sender: AccessClaims,
    content: str,
    to: str | None,
    client_id: str,
    file: dict[str, Any] | None = None,
    reply_to: int | None = None,
    mentions: tuple[str, ...] = (),
) -> bytes:
    """The JSON object stored in JetStream for one chat message (chatrecord's format).

    Raises InvalidFrame when the record would not be storable (a sender profile or
    text that breaks the record rules): such a send is refused, never acknowledged."""
    try:
        return encode_message(
            room=room,
            sender=record_sender(sender),
            content=content,
            to=to,
            client_id=client_id,
            sent_at=utc_timestamp(),
            file_body=None if file is None else make_file_body(file, content or None),
            reply_to=reply_to,
            mentions=mentions,
        )
    except InvalidRecord as exc:
        raise InvalidFrame(f"message cannot be stored: {exc.detail or exc.reason}") from None


def record_headers(*, sender_id: str, client_id: str, to: str | None) -> dict[str, str]:
    headers = {HDR_MSG_ID: msg_id(KIND_MESSAGE, sender_id, client_id), HDR_SENDER: sender_id}
    if to is not None:
        headers[HDR_TO] = to
    return headers


def change_record(
    *,
    kind: ChangeKind,
    room: str,
    target_seq: int,
    sender: AccessClaims,
    content: str | None,
    client_id: str,
) -> bytes:
    """The record of an edit (``content``) or a delete (None) of message ``target_seq``
    (chatrecord's format); InvalidFrame when it would not be storable."""
    try:
        return encode_change(
            kind=kind,
            room=room,
            target_seq=target_seq,
            sender=record_sender(sender),
            content=content,
            client_id=client_id,
            at=utc_timestamp(),
        )
    except InvalidRecord as exc:
        raise InvalidFrame(f"change cannot be stored: {exc.detail or exc.reason}") from None


def is_record(payload: bytes) -> bool:
    """A stored record the gateway can relay: a non-empty JSON object."""
    return len(payload) > 2 and payload[0] == 0x7B and payload[-1] == 0x7D  # { ... }


def private_recipients(payload: bytes, headers: dict[str, str] | None) -> tuple[str, str] | None:
    """(sender, recipient) of a private message, or None for a message to the room."""
    if headers is not None:
        to = headers.get(HDR_TO)
        if to is not None:
            return headers.get(HDR_SENDER, ""), to
        if HDR_SENDER in headers:
            return None
    # A record without the gateway's headers: decode it, never guess.
    if b'"to"' not in payload:
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    to = obj.get("to") if isinstance(obj, dict) else None
    if not isinstance(to, str):
        return None
    sender = obj.get("sender")
    sender_id = sender.get("id") if isinstance(sender, dict) else None
    return (sender_id if isinstance(sender_id, str) else ""), to


# --- server frames -------------------------------------------------------------------


def message_frame(seq: int, prev: int, record: bytes) -> bytes:
    """``{"type":"message","seq","prev","id", ...record fields}``, built without decoding."""
    return b'{"type":"message","seq":%d,"prev":%d,"id":"%d",' % (seq, prev, seq) + record[1:]


def record_frame(seq: int, prev: int, record: bytes, headers: dict[str, str] | None) -> bytes:
    """The frame of any stored record: ``message``, or ``edit``/``delete``/``reaction``
    (same chain fields, no ``id``), built without decoding."""
    kind = headers.get(HDR_KIND) if headers is not None else None
    if kind is None:
        # The gateway's records say their kind in a header; others are looked at.
        if (headers is not None and HDR_SENDER in headers) or b'"target_seq"' not in record:
            return message_frame(seq, prev, record)
        kind = (
            "edit"
            if b'"kind":"edit"' in record
            else "reaction"
            if b'"kind":"reaction"' in record
            else "delete"
        )
    if kind != "edit" and kind != "delete" and kind != "reaction":
        return message_frame(seq, prev, record)
    return b'{"type":"%s","seq":%d,"prev":%d,' % (kind.encode(), seq, prev) + record[1:]


def skip_frame(room: str, seq: int, prev: int) -> bytes:
    """What members who may not read a private message get: the chain link only."""
    return b'{"type":"skip","room":"%s","seq":%d,"prev":%d}' % (room.encode(), seq, prev)


def ready_frame(claims: AccessClaims) -> bytes:
    return orjson.dumps(
        {
            "type": "ready",
            "user": {
                "id": claims.user_id,
                "username": claims.username,
                "display_name": claims.display_name,
            },
        }
    )


def subscribed_frame(room: str, seq: int, *, truncated: bool = False) -> bytes:
    frame: dict[str, Any] = {"type": "subscribed", "room": room, "seq": seq}
    if truncated:
        frame["truncated"] = True
    return orjson.dumps(frame)


def unsubscribed_frame(room: str, reason: str | None = None) -> bytes:
    frame: dict[str, Any] = {"type": "unsubscribed", "room": room}
    if reason is not None:
        frame["reason"] = reason
    return orjson.dumps(frame)


def ack_frame(client_id: str, seq: int, *, duplicate: bool) -> bytes:
    frame: dict[str, Any] = {"type": "ack", "client_id": client_id, "id": str(seq), "seq": seq}
    if duplicate:
        frame["duplicate"] = True
    return orjson.dumps(frame)


def error_frame(
    code: str, message: str, ref: str | None = None, *, retry_after: float | None = None
) -> bytes:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    if retry_after is not None:  # slow_mode: seconds until the next send is accepted
        frame["retry_after"] = retry_after
    return orjson.dumps(frame)


def event_frame(room: str, event: str, fields: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": "event", "room": room, "event": event, **fields})


PONG_FRAME = b'{"type":"pong"}'


# --- WebSocket framing ---------------------------------------------------------------
# Server frames are never masked, so a frame's bytes are the same for every socket:
# the fan-out frames a message once and writes those bytes to each transport.
_TEXT_SHORT = struct.Struct("!BB").pack
_TEXT_MEDIUM = struct.Struct("!BBH").pack
_TEXT_LONG = struct.Struct("!BBQ").pack


def ws_text(payload: bytes) -> bytes:
    """``payload`` as one complete, unmasked WebSocket text frame (FIN set)."""
    n = len(payload)
    if n < 126:
        return _TEXT_SHORT(0x81, n) + payload
    if n < 65536:
        return _TEXT_MEDIUM(0x81, 126, n) + payload
    return _TEXT_LONG(0x81, 127, n) + payload
