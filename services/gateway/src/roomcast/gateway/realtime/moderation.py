"""Live enforcement of a room's moderation (docs/moderation.md) on the socket path.

rooms decides and stores bans, mutes and slow mode; this module applies them to every
command a socket sends, on whichever gateway it is connected to:

- **mutes**: the cached membership answer (``CheckMembership``, cached by
  roomcast.common.membership) carries ``muted_until_ms``; while it lies in the future
  a send, edit, reaction or typing notice is refused with ``muted``. No extra call:
  the answer is the one the command's membership check already fetched, and rooms'
  ``member_muted`` / ``member_unmuted`` events drop it on every gateway at once.
- **slow mode**: the same answer carries the room's ``slow_mode_seconds``; a member's
  send is admitted by the shared pace in NATS key-value (slowmode.py), so the pace
  holds across gateways. Owners and admins are exempt. Edits, reactions and typing are
  not paced (they add no new message).
- **bans** need nothing here: a ban removes the member through the kick's event path
  (events.py ends the subscriptions; the membership answer says "not a member").
- **moderators' deletions** (an owner or admin deleting someone else's message) are
  reported to rooms' audit log (``RecordMessageDeletion``) after the delete is stored;
  a failure to report is logged and counted, never undoes the delete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import grpc

from roomcast.common.clock import now_ms
from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.errors import Muted
from roomcast.gateway.realtime.slowmode import SlowMode
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc

log = logging.getLogger(__name__)

# Roles a room's slow mode does not apply to.
EXEMPT_ROLES = frozenset({rooms_pb2.ROLE_ADMIN, rooms_pb2.ROLE_OWNER})
# Reporting a moderator's delete to the audit log waits at most this long: rooms answers
# in milliseconds; the delete itself is already stored and acked.
AUDIT_TIMEOUT_SECONDS = 2.0


class Answer(Protocol):
    """What the cached CheckMembership answer tells about posting (Membership)."""

    @property
    def member(self) -> bool: ...

    @property
    def role(self) -> int: ...

    @property
    def muted_until_ms(self) -> int: ...

    @property
    def slow_mode_seconds(self) -> int: ...


class MembershipLookup(Protocol):
    """The caller's cached membership (MembershipCache)."""

    async def require_member(self, claims: AccessClaims, room_id: str) -> Answer: ...

    def cached(self, claims: AccessClaims, room_id: str) -> Answer | None: ...


class PostingRules:
    def __init__(
        self,
        membership: MembershipLookup,
        slow_mode: SlowMode,
        rooms: rooms_pb2_grpc.RoomsAsyncStub,
        *,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.membership = membership
        self.slow_mode = slow_mode
        self.rooms = rooms
        self.clock_ms = clock_ms

    async def check_post(self, claims: AccessClaims, room: str) -> Answer:
        """Refuse a muted member (edit, reaction, typing); the membership otherwise."""
        membership = await self.membership.require_member(claims, room)
        if membership.muted_until_ms > self.clock_ms():
            raise Muted("you are muted in this room")
        return membership

    def send_cleared(self, claims: AccessClaims, room: str) -> bool:
        """Whether the cached answer alone admits a new message (a member, not muted, no
        slow mode that applies): :meth:`check_send` without an await. False is not a
        refusal, only "ask :meth:`check_send`" (not cached, or a rule to apply)."""
        membership = self.membership.cached(claims, room)
        return (
            membership is not None
            and membership.member
            and membership.muted_until_ms <= self.clock_ms()
            and (membership.slow_mode_seconds <= 0 or membership.role in EXEMPT_ROLES)
        )

    async def check_send(self, claims: AccessClaims, room: str, client_id: str) -> None:
        """A new message: not muted, and within the room's slow mode."""
        membership = await self.check_post(claims, room)
        interval = membership.slow_mode_seconds
        if interval > 0 and membership.role not in EXEMPT_ROLES:
            await self.slow_mode.admit(room, claims.user_id, client_id, interval)

    async def record_deletion(
        self, claims: AccessClaims, room: str, seq: int, sender_id: str
    ) -> None:
        """Report a moderator's delete of ``sender_id``'s message ``seq``; never raises."""
        try:
            await self.rooms.RecordMessageDeletion(
                rooms_pb2.RecordMessageDeletionRequest(room_id=room, seq=seq, sender_id=sender_id),
                metadata=bearer_metadata(claims.raw),
                timeout=AUDIT_TIMEOUT_SECONDS,
            )
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            metrics.MODERATOR_DELETIONS.labels("failed").inc()
            log.warning(
                "moderator deletion not recorded in the audit log",
                extra={"room_id": room, "seq": seq, "error": repr(exc)},
            )
            return
        metrics.MODERATOR_DELETIONS.labels("recorded").inc()
