"""Moderation RPCs: bans, mutes, the audit log and the record of moderators' deletions.

The servicer authenticates the caller and hands the request here. Every action is
checked in the order that leaks nothing (room visible, caller manages it, target
ranked below), applied to MongoDB, published (the gateways drop their cached answers
and, for a ban, the user's subscriptions) and written to the audit log.

A ban removes the membership through the kick's own path (``store.remove_member``
with the invite code rotated first, then ``member_removed`` on
``chat.events.room.<id>``), so every gateway ends the user's subscriptions exactly as
for a kick. See docs/moderation.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from roomcast.common.clock import now_ms
from roomcast.common.tokens import AccessClaims
from roomcast.rooms import policy
from roomcast.rooms import validation as v
from roomcast.rooms.audit import AuditAction, AuditEntry, AuditLog
from roomcast.rooms.errors import Banned, ConcurrentChange, InvalidArgument
from roomcast.rooms.events import EventPublisher, EventType
from roomcast.rooms.policy import Visibility
from roomcast.rooms.records import MemberRecord, RoomRecord
from roomcast.rooms.restrictions import BanRecord, RestrictionStore
from roomcast.rooms.store import RoomStore
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb

VisibleRoom = Callable[[str, AccessClaims], Awaitable[tuple[RoomRecord, MemberRecord | None]]]


def ban_message(ban: BanRecord) -> pb.Ban:
    return pb.Ban(user_id=ban.user_id, actor_id=ban.actor_id, created_at_ms=ban.created_at_ms)


def audit_message(entry: AuditEntry) -> pb.AuditEntry:
    return pb.AuditEntry(
        id=entry.id,
        action=entry.action,
        actor_id=entry.actor_id,
        target_user_id=entry.target_user_id,
        at_ms=entry.at_ms,
        details=entry.details,
    )


class Moderation:
    def __init__(
        self,
        store: RoomStore,
        restrictions: RestrictionStore,
        audit: AuditLog,
        events: EventPublisher,
        visible_room: VisibleRoom,
    ) -> None:
        self.store = store
        self.restrictions = restrictions
        self.audit = audit
        self.events = events
        self.visible_room = visible_room

    async def _moderated(
        self, caller: AccessClaims, room_id: str, user_id: str
    ) -> tuple[RoomRecord, MemberRecord | None]:
        """The room and the target's membership, once the caller may moderate them."""
        if user_id == caller.user_id:
            raise InvalidArgument("cannot moderate yourself")
        room, member = await self.visible_room(room_id, caller)
        policy.require_not_direct(room.visibility)
        target = await self.store.get_member(room_id, user_id)
        policy.check_moderate(member.role if member else None, target.role if target else None)
        return room, target

    async def _manager(self, caller: AccessClaims, room_id: str) -> RoomRecord:
        room, member = await self.visible_room(room_id, caller)
        policy.require_not_direct(room.visibility)
        policy.require_manager(member.role if member else None)
        return room

    # -------------------------------------------------------------------- bans

    async def ban(self, caller: AccessClaims, request: pb.BanMemberRequest) -> pb.BanMemberResponse:
        room_id = v.parse_id(request.room_id, "room_id")
        user_id = v.parse_id(request.user_id, "user_id")
        room, target = await self._moderated(caller, room_id, user_id)
        # The ban first: from here on no join succeeds (JoinRoom checks it before and
        # after its insert), so removing the membership next cannot be undone by a
        # join racing with it.
        ban, created = await self.restrictions.ban(room_id, user_id, caller.user_id)
        removed = False
        if target is not None:
            # The kick's path: the invite code is rotated, then the membership goes.
            removed = await self.store.remove_member(
                room_id, user_id, role=target.role, rotate_invite=True
            )
            if not removed and await self.store.get_member(room_id, user_id) is not None:
                raise ConcurrentChange("the member's role changed concurrently; retry")
        elif room.visibility is Visibility.PRIVATE and created:
            # Banning a user who is not in the room: they may still know the code.
            await self.store.rotate_invite_code(room_id)
        if removed:
            await self.events.publish(
                EventType.MEMBER_REMOVED, room_id, actor_id=caller.user_id, user_id=user_id
            )
        if created or removed:
            await self.audit.record(
                room_id, AuditAction.BAN, actor_id=caller.user_id, target_user_id=user_id
            )
        return pb.BanMemberResponse(ban=ban_message(ban))

    async def unban(
        self, caller: AccessClaims, request: pb.UnbanMemberRequest
    ) -> pb.UnbanMemberResponse:
        room_id = v.parse_id(request.room_id, "room_id")
        user_id = v.parse_id(request.user_id, "user_id")
        await self._manager(caller, room_id)
        if await self.restrictions.unban(room_id, user_id):
            await self.audit.record(
                room_id, AuditAction.UNBAN, actor_id=caller.user_id, target_user_id=user_id
            )
        return pb.UnbanMemberResponse()

    async def list_bans(
        self, caller: AccessClaims, request: pb.ListBansRequest
    ) -> pb.ListBansResponse:
        room_id = v.parse_id(request.room_id, "room_id")
        limit = v.parse_limit(request.limit)
        after = v.decode_cursor(v.BANS, request.cursor)
        await self._manager(caller, room_id)
        bans = await self.restrictions.list_bans(room_id, after_user_id=after, limit=limit + 1)
        page = bans[:limit]
        more = len(bans) > limit
        return pb.ListBansResponse(
            bans=[ban_message(b) for b in page],
            next_cursor=v.encode_cursor(v.BANS, page[-1].user_id) if more else "",
        )

    # ------------------------------------------------------------------- mutes

    async def mute(
        self, caller: AccessClaims, request: pb.MuteMemberRequest
    ) -> pb.MuteMemberResponse:
        room_id = v.parse_id(request.room_id, "room_id")
        user_id = v.parse_id(request.user_id, "user_id")
        until_ms = v.parse_mute_until(request.until_ms, now_ms())
        await self._moderated(caller, room_id, user_id)
        await self.restrictions.mute(room_id, user_id, until_ms, caller.user_id)
        await self.events.publish(
            EventType.MEMBER_MUTED,
            room_id,
            actor_id=caller.user_id,
            user_id=user_id,
            extra={"muted_until_ms": until_ms},
        )
        await self.audit.record(
            room_id,
            AuditAction.MUTE,
            actor_id=caller.user_id,
            target_user_id=user_id,
            details={"until_ms": str(until_ms)},
        )
        return pb.MuteMemberResponse(muted_until_ms=until_ms)

    async def unmute(
        self, caller: AccessClaims, request: pb.UnmuteMemberRequest
    ) -> pb.UnmuteMemberResponse:
        room_id = v.parse_id(request.room_id, "room_id")
        user_id = v.parse_id(request.user_id, "user_id")
        await self._moderated(caller, room_id, user_id)
        if await self.restrictions.unmute(room_id, user_id):
            await self.events.publish(
                EventType.MEMBER_UNMUTED, room_id, actor_id=caller.user_id, user_id=user_id
            )
            await self.audit.record(
                room_id, AuditAction.UNMUTE, actor_id=caller.user_id, target_user_id=user_id
            )
        return pb.UnmuteMemberResponse()

    # --------------------------------------------------------------- the audit log

    async def list_audit(
        self, caller: AccessClaims, request: pb.ListAuditLogRequest
    ) -> pb.ListAuditLogResponse:
        room_id = v.parse_id(request.room_id, "room_id")
        limit = v.parse_limit(request.limit)
        before = v.decode_cursor(v.AUDIT, request.cursor)
        _, member = await self.visible_room(room_id, caller)
        policy.check_read_audit(
            member.role if member else None, global_admin=caller.is_global_admin
        )
        entries = await self.audit.page(room_id, before_id=before, limit=limit + 1)
        page = entries[:limit]
        more = len(entries) > limit
        return pb.ListAuditLogResponse(
            entries=[audit_message(e) for e in page],
            next_cursor=v.encode_cursor(v.AUDIT, page[-1].id) if more else "",
        )

    async def record_deletion(
        self, caller: AccessClaims, request: pb.RecordMessageDeletionRequest
    ) -> pb.RecordMessageDeletionResponse:
        room_id = v.parse_id(request.room_id, "room_id")
        seq = v.parse_seq(request.seq)
        sender_id = v.parse_id(request.sender_id, "sender_id")
        await self._manager(caller, room_id)
        await self.audit.record(
            room_id,
            AuditAction.MESSAGE_DELETED,
            actor_id=caller.user_id,
            target_user_id=sender_id,
            details={"seq": str(seq)},
        )
        return pb.RecordMessageDeletionResponse()

    # ------------------------------------------------- what joins and others need

    async def admit(self, room_id: str, user_id: str) -> None:
        """Before a join: raise ``Banned`` for a banned user."""
        restriction = await self.restrictions.get(room_id, user_id)
        if restriction.banned is not None:
            raise Banned()

    async def after_join(self, room_id: str, user_id: str) -> bool:
        """After a join inserted the membership: False when a ban arrived meanwhile
        (the caller undoes the join); otherwise a mute in force is copied onto it."""
        restriction = await self.restrictions.get(room_id, user_id)
        if restriction.banned is not None:
            return False
        if restriction.muted_at(now_ms()):
            await self.restrictions.copy_mute(room_id, user_id, restriction.muted_until_ms)
        return True

    async def record(
        self,
        room_id: str,
        action: AuditAction,
        *,
        actor_id: str,
        target_user_id: str = "",
        details: dict[str, str] | None = None,
    ) -> None:
        await self.audit.record(
            room_id, action, actor_id=actor_id, target_user_id=target_user_id, details=details
        )
