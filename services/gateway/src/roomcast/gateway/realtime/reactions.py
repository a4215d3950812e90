"""Reactions: ``{"type":"react"|"unreact","room","seq","emoji","client_id"}``.

A reaction is stored in the room's subject like a send, so it takes a place in the
room's sequence chain (``seq``/``prev``), reaches every gateway through the same live
path as a ``reaction`` frame, is replayed on resume, and history aggregates it:

1. the caller is a member who is not muted (moderation.check_post, the connection's
   hook, before this module);
2. the emoji passes chatrecord.check_emoji, else ``invalid_emoji``;
3. the target is a message record of the room still in the stream (changes.py's
   direct get), else ``not_found``; a private target may be reacted to by its two
   people only (``not_found`` for anyone else: nobody learns it exists);
4. publish with ``Nats-Msg-Id: <user>:r:<client_id>`` (a retry is deduplicated and
   acked with the original seq, counted once), ``Roomcast-Kind: reaction`` and the
   target's ``Roomcast-Sender``/``Roomcast-To``: a reaction on a private message is
   routed like the message (its two people; ``skip`` for everyone else).

History keeps one reaction per (user, message, emoji) whatever the order or number of
records, so a client that retries with a new client_id still counts once.
"""

from __future__ import annotations

from typing import Any, Protocol

from roomcast.common.chatrecord import (
    KIND_REACTION,
    InvalidRecord,
    encode_reaction,
    msg_id,
    utc_timestamp,
)
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.errors import ClientIdReused, Draining, InvalidFrame
from roomcast.gateway.realtime.changes import DrainGate, MessageNotFound
from roomcast.gateway.realtime.protocol import (
    HDR_KIND,
    HDR_MSG_ID,
    HDR_SENDER,
    HDR_TO,
    React,
    record_sender,
)
from roomcast.gateway.realtime.stream import ChatStream, PublishResult


class ReactionTargets(Protocol):
    """What a reaction needs of the edits-and-deletes publisher (changes.py): the
    target lookup, the stream and the drain gate, shared rather than duplicated."""

    @property
    def stream(self) -> ChatStream: ...

    @property
    def drain(self) -> DrainGate: ...

    async def target_message(self, room: str, seq: int) -> dict[str, Any]: ...


async def publish_reaction(
    changes: ReactionTargets, claims: AccessClaims, command: React
) -> PublishResult:
    """Check the target and store the reaction; the publish result for the ack."""
    result = "error"
    try:
        if changes.drain.draining:
            raise Draining("gateway restarting")
        target = await changes.target_message(command.room, command.seq)
        author = target["sender"]["id"]
        to = target.get("to")
        if isinstance(to, str) and claims.user_id not in (author, to):
            raise MessageNotFound("no such message in this room")
        try:
            record = encode_reaction(
                room=command.room,
                target_seq=command.seq,
                sender=record_sender(claims),
                emoji=command.emoji,
                op=command.op,
                client_id=command.client_id,
                at=utc_timestamp(),
            )
        except InvalidRecord as exc:
            raise InvalidFrame(f"reaction cannot be stored: {exc.detail or exc.reason}") from None
        headers = {
            HDR_MSG_ID: msg_id(KIND_REACTION, claims.user_id, command.client_id),
            HDR_SENDER: author,
            HDR_KIND: KIND_REACTION,
        }
        if isinstance(to, str):
            headers[HDR_TO] = to
        stream = changes.stream
        with changes.drain.publishing():
            published = await stream.publish(command.room, record, headers)
            if published.duplicate and not await stream.is_stored(command.room, published.seq):
                raise ClientIdReused("client_id already used for another reaction")
        result = "duplicate" if published.duplicate else "ok"
        return published
    except Exception as exc:
        result = getattr(exc, "code", "error")
        raise
    finally:
        # kind "reaction" next to edit and delete: the result labels are error codes,
        # a bounded set.
        metrics.MESSAGE_CHANGES.labels(KIND_REACTION, result).inc()
