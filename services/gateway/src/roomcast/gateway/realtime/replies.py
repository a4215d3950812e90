"""Replies: the check a send's ``reply_to`` passes before its record is published.

The parent is read from the CHAT stream by sequence (one direct get, no consumer): it
must be a message record of the same room. A private parent (``to``) may be answered
only by one of its two people, and the reply is private between the same two: the
gateway sets the reply's ``to`` to the other person (a ``to`` naming anyone else is
refused), so a third person never learns of a private thread. History applies the same
rule when storing, so a record that bypassed this check is still stored as a plain
message, never as a reply.

A parent no longer in the stream (past its retention) cannot be replied to live: the
gateway does not ask history for it, to keep the send path off HTTP.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from roomcast.common.chatrecord import KIND_MESSAGE
from roomcast.gateway.errors import InvalidReplyTo


class RecordReader(Protocol):
    """The stream's read of one stored record (stream.py)."""

    async def stored_record(self, room: str, seq: int) -> bytes | None: ...


async def reply_recipient(
    stream: RecordReader, *, room: str, parent_seq: int, sender_id: str, to: str | None
) -> str | None:
    """The ``to`` the reply must carry (the sender's own ``to`` for a public parent,
    the other person of a private parent's pair), or raise :class:`InvalidReplyTo`."""
    data = await stream.stored_record(room, parent_seq)
    if data is None:
        raise InvalidReplyTo("reply_to is not a message of this room")
    try:
        parent = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidReplyTo("reply_to is not a message of this room") from None
    if not isinstance(parent, dict) or parent.get("kind", KIND_MESSAGE) != KIND_MESSAGE:
        raise InvalidReplyTo("reply_to is not a message of this room")
    parent_to = parent.get("to")
    if parent_to is None:
        return to
    sender = parent.get("sender")
    parent_sender = sender.get("id") if isinstance(sender, dict) else None
    pair = {parent_sender, parent_to}
    if sender_id not in pair:
        raise InvalidReplyTo("reply_to is not a message of this room")
    other = parent_to if sender_id == parent_sender else parent_sender
    if not isinstance(other, str) or (to is not None and to != other):
        raise InvalidReplyTo("a reply to a private message goes to the same two people")
    return other
