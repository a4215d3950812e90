"""From a chat record to the people it notifies (pure; the I/O is the caller's).

A record is decoded with the shared contract (roomcast.common.chatrecord); only
messages notify (edits and deletes do not). ``reply_to`` (the stream sequence of the
message answered) and ``mentions`` (user ids) are read when present: records gain
them with threads and mentions, and the notifier already honours them.

Rules, in order:

1. A message in a DM room notifies the other member (kind ``dm``).
2. Elsewhere, the author of the message replied to gets ``reply``; each mentioned
   user gets ``mention`` (one notification per user and message: ``reply`` wins).
3. A private message (``to``) notifies only its recipient, whatever else it says.
4. Nobody is notified of their own message.
5. Only current members of the room are notified (the caller filters with rooms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from roomcast.common.chatrecord import (
    Change,
    ChatMessage,
    EditRecord,
    ReactionRecord,
    Sender,
    decode_record,
)
from roomcast.common.subjects import is_object_id

# Mentions read per message: more than anyone types; a record listing thousands of
# ids (a bug or an abuse) notifies the first 50 and no more.
MAX_MENTIONS = 50
# Characters of the message shown in a notification: a line on a lock screen.
PREVIEW_CHARS = 140


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message record with what notifications need of it."""

    seq: int
    room_id: str
    sender: Sender
    body: dict[str, Any]
    sent_at: str
    to: str | None
    reply_to: int | None
    mentions: tuple[str, ...]

    @property
    def preview(self) -> str:
        return preview_of(self.body)


def parse(seq: int, subject: str, data: bytes) -> Incoming | Change | None:
    """The message at ``seq`` with what notifications need, the edit or delete as
    decoded, or None for a reaction (nobody is notified of those); raises InvalidRecord
    for anything the contract refuses."""
    record = decode_record(seq, subject, data)
    if isinstance(record, ReactionRecord):
        return None
    if not isinstance(record, ChatMessage):
        return record
    raw = orjson.loads(data)  # valid: decode_record parsed it
    reply_to = raw.get("reply_to")
    if type(reply_to) is not int or not 1 <= reply_to < seq:
        reply_to = None
    mentions: list[str] = []
    listed = raw.get("mentions")
    if isinstance(listed, list):
        for user_id in listed[:MAX_MENTIONS]:
            if is_object_id(user_id) and user_id not in mentions:
                mentions.append(user_id)
    return Incoming(
        seq=seq,
        room_id=record.room_id,
        sender=record.sender,
        body=record.body,
        sent_at=record.sent_at,
        to=record.to,
        reply_to=reply_to,
        mentions=tuple(mentions),
    )


def preview_of(body: dict[str, Any]) -> str:
    if body.get("type") == "text":
        content = str(body.get("content", ""))
        return content if len(content) <= PREVIEW_CHARS else content[: PREVIEW_CHARS - 1] + "…"
    if body.get("type") == "file":
        return "sent a file"
    return "sent a message"


def change_preview(change: Change) -> str | None:
    """The preview a change leaves on the notifications of its message: the new text of
    an edit, None for a delete (the notifications go: nobody is told about a message
    its author took back)."""
    return preview_of(change.body) if isinstance(change, EditRecord) else None


def recipients(
    message: Incoming,
    *,
    direct_user_ids: tuple[str, ...],
    reply_author: str | None,
    members: frozenset[str] | None,
) -> dict[str, str]:
    """``{user_id: kind}`` for one message. ``direct_user_ids`` is the room's pair when
    it is a DM room (else empty); ``members`` the room's members (ignored in a DM room,
    whose members are the pair)."""
    found: dict[str, str] = {}
    if direct_user_ids:
        found = dict.fromkeys(direct_user_ids, "dm")
    else:
        for user_id in message.mentions:
            found[user_id] = "mention"
        if reply_author is not None:
            found[reply_author] = "reply"
        if members is not None:
            found = {u: k for u, k in found.items() if u in members}
    if message.to is not None:
        found = {u: k for u, k in found.items() if u == message.to}
    found.pop(message.sender.id, None)
    return found


def needs_members(message: Incoming, reply_author: str | None) -> bool:
    """Whether the room's member list is needed to decide (not for a plain message)."""
    return bool(message.mentions) or reply_author is not None


def notification_doc(message: Incoming, user_id: str, kind: str) -> dict[str, Any]:
    """The inbox document; ``_id`` (stream sequence and user) makes it exactly once."""
    return {
        "_id": f"{message.seq}:{user_id}",
        "user": user_id,
        "seq": message.seq,
        "kind": kind,
        "room": message.room_id,
        "sender": message.sender.to_doc(),
        "preview": message.preview,
        "sent_at": message.sent_at,
        "private": message.to is not None,
    }


def public_item(doc: dict[str, Any], read_up_to: int) -> dict[str, Any]:
    """A notification as clients see it (``GET /v1/notifications``, webhooks, pushes)."""
    return {
        "id": doc["_id"],
        "kind": doc["kind"],
        "room": doc["room"],
        "seq": doc["seq"],
        "sender": doc["sender"],
        "preview": doc["preview"],
        "sent_at": doc["sent_at"],
        "private": doc.get("private", False),
        "read": doc["seq"] <= read_up_to,
    }
