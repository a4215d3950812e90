"""Edits and deletes of stored messages: ``{"type":"edit"|"delete","room","seq","client_id"}``.

The gateway authorizes a change, then stores it in the room's subject like a send, so
it takes a place in the room's sequence chain (``seq``/``prev``), reaches every gateway
through the same live path, is replayed on resume, and history applies it:

1. the caller is a member of the room (cached, membership.py);
2. the target is read from the stream by sequence (direct get); it must be a message
   record (not an edit or delete) stored on ``chat.room.<room>``, else ``not_found``;
3. an edit is allowed to the message's sender only; a delete to its sender or a room
   admin/owner (the role from ``CheckMembership``), else ``forbidden``;
4. publish with ``Nats-Msg-Id: <user>:e:<client_id>`` (edit) or ``<user>:d:<client_id>``
   (delete): a retry is deduplicated and acked with the original seq, and each kind has
   its own namespace, so a change reusing a send's client_id is still applied;
   ``Roomcast-Kind`` (the frame type, without decoding) and the **target's**
   ``Roomcast-Sender``/``Roomcast-To``: a change of a private message is routed like the
   message itself (full frame to its sender and recipient, ``skip`` to everyone else).

Known limit: the target must still be in the stream (7 days / 100k messages per room by
default); an older message answers ``not_found``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import orjson
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from roomcast.common.chatrecord import KIND_DELETE, KIND_EDIT, ChangeKind, msg_id
from roomcast.common.errors import Forbidden, NotFound
from roomcast.common.subjects import STREAM_NAME, room_subject
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.errors import ClientIdReused, Draining, Unavailable
from roomcast.gateway.realtime.protocol import (
    HDR_KIND,
    HDR_MSG_ID,
    HDR_SENDER,
    HDR_TO,
    Delete,
    Edit,
    change_record,
)
from roomcast.gateway.realtime.stream import ChatStream, PublishResult
from roomcast.rpc.rooms.v1 import rooms_pb2

# Roles that may delete other members' messages.
MODERATOR_ROLES = frozenset({rooms_pb2.ROLE_ADMIN, rooms_pb2.ROLE_OWNER})


class MessageNotFound(NotFound):
    """The target is not a stored message of this room."""

    code = "not_found"


class ChangeForbidden(Forbidden):
    """Editing someone else's message, or deleting it without being an admin."""

    code = "forbidden"


class RoleCheck(Protocol):
    """The caller's membership with its role (membership.py)."""

    async def require_member(self, claims: AccessClaims, room_id: str) -> Membership: ...


class Membership(Protocol):
    @property
    def role(self) -> int: ...


class DrainGate(Protocol):
    """Whether the gateway is draining; publishes in flight (drain.py)."""

    @property
    def draining(self) -> bool: ...

    def publishing(self) -> AbstractContextManager[None]: ...


ModeratorDeleteHook = Callable[[AccessClaims, str, int, str], Awaitable[None]]


class ChangePublisher:
    """Authorizes and stores edits and deletes (one per gateway)."""

    def __init__(
        self,
        stream: ChatStream,
        membership: RoleCheck,
        drain: DrainGate,
        *,
        on_moderator_delete: ModeratorDeleteHook | None = None,
    ) -> None:
        self.stream = stream
        self.membership = membership
        self.drain = drain
        # Reports an admin's delete of someone else's message to the audit log
        # (moderation.py).
        self.on_moderator_delete = on_moderator_delete

    async def target_message(self, room: str, seq: int) -> dict[str, Any]:
        """The stored message ``seq`` of ``room`` (its decoded record), or MessageNotFound."""
        try:
            raw = await self.stream.js.get_msg(STREAM_NAME, seq=seq, direct=True)
        except NotFoundError:
            raise MessageNotFound("no such message in this room") from None
        except (NatsError, OSError) as exc:
            raise Unavailable("stream unavailable, retry") from exc
        if raw.subject != room_subject(room) or not raw.data:
            raise MessageNotFound("no such message in this room")
        try:
            record = orjson.loads(raw.data)
        except orjson.JSONDecodeError:
            raise MessageNotFound("no such message in this room") from None
        if not isinstance(record, dict) or record.get("kind", "message") != "message":
            raise MessageNotFound("no such message in this room")
        sender = record.get("sender")
        if not isinstance(sender, dict) or not isinstance(sender.get("id"), str):
            raise MessageNotFound("no such message in this room")
        return record

    async def publish(self, claims: AccessClaims, command: Edit | Delete) -> PublishResult:
        """Authorize and store an edit or delete; returns the publish result for the ack."""
        kind: ChangeKind = KIND_EDIT if isinstance(command, Edit) else KIND_DELETE
        result = "error"
        try:
            if self.drain.draining:
                raise Draining("gateway restarting")
            stream = self.stream
            membership = await self.membership.require_member(claims, command.room)
            target = await self.target_message(command.room, command.seq)
            author = target["sender"]["id"]
            if isinstance(command, Edit):
                if author != claims.user_id:
                    raise ChangeForbidden("only the sender can edit a message")
            elif author != claims.user_id and membership.role not in MODERATOR_ROLES:
                raise ChangeForbidden("only the sender or a room admin can delete a message")
            record = change_record(
                kind=kind,
                room=command.room,
                target_seq=command.seq,
                sender=claims,
                content=command.content if isinstance(command, Edit) else None,
                client_id=command.client_id,
            )
            headers = {
                HDR_MSG_ID: msg_id(kind, claims.user_id, command.client_id),
                HDR_SENDER: author,
                HDR_KIND: kind,
            }
            to = target.get("to")
            if isinstance(to, str):
                headers[HDR_TO] = to
            with self.drain.publishing():
                published = await stream.publish(command.room, record, headers)
                if published.duplicate and not await stream.is_stored(command.room, published.seq):
                    raise ClientIdReused("client_id already used for another message")
            result = "duplicate" if published.duplicate else "ok"
            moderated = kind == KIND_DELETE and author != claims.user_id
            if moderated and not published.duplicate and self.on_moderator_delete is not None:
                await self.on_moderator_delete(claims, command.room, command.seq, author)
            return published
        except Exception as exc:
            result = getattr(exc, "code", "error")
            raise
        finally:
            metrics.MESSAGE_CHANGES.labels(kind, result).inc()
