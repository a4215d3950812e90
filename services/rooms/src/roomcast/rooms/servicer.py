"""The ``roomcast.rooms.v1.Rooms`` servicer: authenticate, validate, apply the policy,
change MongoDB, publish the event. Errors are raised as domain errors; the
interceptor maps them to gRPC status codes."""

from __future__ import annotations

import secrets
from typing import Any

import grpc

from roomcast.common.grpcmeta import token_from_metadata
from roomcast.common.ratelimit import KeyedRateLimiter
from roomcast.common.subjects import is_object_id
from roomcast.common.tokens import AccessClaims, TokenVerifier
from roomcast.rooms import policy
from roomcast.rooms import validation as v
from roomcast.rooms.audit import AuditAction, AuditLog
from roomcast.rooms.convert import ROLE_OUT, VISIBILITY_OUT, member_message, room_message
from roomcast.rooms.errors import (
    Banned,
    ConcurrentChange,
    DirectRoomFixed,
    InsufficientRole,
    InvalidArgument,
    MemberNotFound,
    NotAuthenticated,
    RoomNotFound,
    TooManyRequests,
)
from roomcast.rooms.events import EventPublisher, EventType
from roomcast.rooms.listing import RoomListing
from roomcast.rooms.moderation import Moderation
from roomcast.rooms.policy import Role, RoleChange, Visibility
from roomcast.rooms.readonly import check_service_reader, sees_every_room
from roomcast.rooms.records import MemberRecord, RoomRecord
from roomcast.rooms.restrictions import RestrictionStore
from roomcast.rooms.retention_sync import RetentionSync
from roomcast.rooms.store import RoomStore
from roomcast.rooms.tokencache import CachingVerifier
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def _same_code(given: str, current: str) -> bool:
    """Constant-time comparison of invite codes of any characters. ``compare_digest``
    refuses non-ASCII ``str`` (TypeError, which surfaced as UNAVAILABLE and told a
    private room from a missing one), so both sides are compared as UTF-8 bytes."""
    if not given or not current:
        return False
    return secrets.compare_digest(given.encode(), current.encode())


class RoomsServicer(pb_grpc.RoomsServicer):
    def __init__(
        self,
        store: RoomStore,
        verifier: TokenVerifier,
        events: EventPublisher,
        *,
        restrictions: RestrictionStore,
        audit: AuditLog,
        create_rooms_per_minute: int,
        retention: RetentionSync | None = None,
    ) -> None:
        self.store = store
        self.listing = RoomListing(store)
        self.verifier = CachingVerifier(verifier)
        self.events = events
        self.create_limiter = KeyedRateLimiter(capacity=create_rooms_per_minute, per_seconds=60.0)
        self.moderation = Moderation(store, restrictions, audit, events, self._visible_room)
        self.retention = retention

    # ----------------------------------------------------------------- helpers

    async def _caller(self, context: Context) -> AccessClaims:
        token = token_from_metadata(context.invocation_metadata())
        if token is None:
            raise NotAuthenticated("missing bearer token in the authorization metadata")
        claims = await self.verifier.verify(token)
        if not is_object_id(claims.user_id):
            raise NotAuthenticated("token subject is not a user id", code="invalid_token")
        check_service_reader(claims)
        return claims

    async def _visible_room(
        self, room_id: str, caller: AccessClaims
    ) -> tuple[RoomRecord, MemberRecord | None]:
        """The room and the caller's membership; RoomNotFound unless the caller may see
        it (a private room is indistinguishable from a missing one to outsiders)."""
        room, member = await self.store.get_room_and_member(room_id, caller.user_id)
        role = member.role if member is not None else None
        if room is None or not policy.can_see(
            room.visibility, role, global_admin=sees_every_room(caller)
        ):
            raise RoomNotFound()
        return room, member

    def _limit_creations(self, user_id: str) -> None:
        wait = self.create_limiter.hit(user_id)
        if wait > 0:
            raise TooManyRequests("too many rooms created; retry later", retry_after=wait)

    # -------------------------------------------------------------------- rooms

    async def CreateRoom(
        self, request: pb.CreateRoomRequest, context: Context
    ) -> pb.CreateRoomResponse:
        caller = await self._caller(context)
        name = v.parse_name(request.name)
        topic = v.parse_topic(request.topic)
        visibility = v.parse_visibility(request.visibility, allow_unspecified=False)
        assert visibility is not None
        self._limit_creations(caller.user_id)
        room, owner = await self.store.create_room(
            owner_id=caller.user_id,
            name=name,
            name_key=v.name_key(name),
            topic=topic,
            visibility=visibility,
        )
        await self.events.publish(
            EventType.MEMBER_JOINED,
            room.id,
            actor_id=caller.user_id,
            user_id=owner.user_id,
            role=owner.role,
        )
        return pb.CreateRoomResponse(room=room_message(room, owner.role))

    async def GetRoom(self, request: pb.GetRoomRequest, context: Context) -> pb.GetRoomResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        room, member = await self._visible_room(room_id, caller)
        return pb.GetRoomResponse(room=room_message(room, member.role if member else None))

    async def ListRooms(
        self, request: pb.ListRoomsRequest, context: Context
    ) -> pb.ListRoomsResponse:
        caller = await self._caller(context)
        limit = v.parse_limit(request.limit)
        prefix = v.parse_name_prefix(request.name_prefix)
        if request.scope in (pb.LIST_SCOPE_UNSPECIFIED, pb.LIST_SCOPE_PUBLIC):
            after = v.decode_cursor(v.PUBLIC_ROOMS, request.cursor)
            rooms = await self.listing.list_public(
                name_prefix=prefix, after_id=after, limit=limit + 1
            )
            page = rooms[:limit]
            roles = await self.listing.roles_of(caller.user_id, [r.id for r in page])
            more = len(rooms) > limit
            return pb.ListRoomsResponse(
                rooms=[room_message(r, roles.get(r.id)) for r in page],
                next_cursor=v.encode_cursor(v.PUBLIC_ROOMS, page[-1].id) if more else "",
            )
        if request.scope != pb.LIST_SCOPE_JOINED:
            raise InvalidArgument("scope must be LIST_SCOPE_PUBLIC or LIST_SCOPE_JOINED")
        after = v.decode_cursor(v.JOINED_ROOMS, request.cursor)
        items, last, exhausted = await self.listing.list_joined(
            caller.user_id, name_prefix=prefix, after_id=after, want=limit + 1
        )
        next_cursor = ""
        if len(items) > limit:
            items = items[:limit]
            next_cursor = v.encode_cursor(v.JOINED_ROOMS, items[-1][0].id)
        elif not exhausted and last is not None:
            # The scan limit stopped the walk: a short page, resume after what was read.
            next_cursor = v.encode_cursor(v.JOINED_ROOMS, last)
        return pb.ListRoomsResponse(
            rooms=[room_message(room, role) for room, role in items], next_cursor=next_cursor
        )

    async def UpdateRoom(
        self, request: pb.UpdateRoomRequest, context: Context
    ) -> pb.UpdateRoomResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        name = v.parse_name(request.name) if request.HasField("name") else None
        topic = v.parse_topic(request.topic) if request.HasField("topic") else None
        visibility = v.parse_visibility(request.visibility, allow_unspecified=True)
        slow_mode = (
            v.parse_slow_mode(request.slow_mode_seconds)
            if request.HasField("slow_mode_seconds")
            else None
        )
        retention = (
            v.parse_retention(request.retention_days)
            if request.HasField("retention_days")
            else None
        )
        room, member = await self._visible_room(room_id, caller)
        policy.require_not_direct(room.visibility)
        my_role = policy.require_manager(member.role if member else None)
        changes: dict[str, Any] = {}
        if name is not None and name != room.name:
            changes["name"] = name
            changes["name_key"] = v.name_key(name)
        if topic is not None and topic != room.topic:
            changes["topic"] = topic
        if visibility is not None and visibility is not room.visibility:
            changes["visibility"] = visibility.value
        if slow_mode is not None and slow_mode != room.slow_mode_seconds:
            changes["slow_mode_seconds"] = slow_mode
        if retention is not None and retention != room.retention_days:
            changes["retention_days"] = retention
        if not changes:
            return pb.UpdateRoomResponse(room=room_message(room, my_role))
        updated = await self.store.update_room(room_id, changes)
        if "retention_days" in changes and self.retention is not None:
            await self.retention.changed(room_id, updated.retention_days)
        await self.events.publish(
            EventType.ROOM_UPDATED, room_id, actor_id=caller.user_id, room=updated
        )
        await self.moderation.record(
            room_id,
            AuditAction.ROOM_UPDATED,
            actor_id=caller.user_id,
            details={k: str(val) for k, val in changes.items() if k != "name_key"},
        )
        return pb.UpdateRoomResponse(room=room_message(updated, my_role))

    async def DeleteRoom(
        self, request: pb.DeleteRoomRequest, context: Context
    ) -> pb.DeleteRoomResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        _, member = await self._visible_room(room_id, caller)
        policy.check_delete(member.role if member else None, global_admin=caller.is_global_admin)
        deleted = await self.store.delete_room(room_id)
        if deleted.retention_days and self.retention is not None:
            await self.retention.changed(room_id, 0)
        await self.events.publish(EventType.ROOM_DELETED, room_id, actor_id=caller.user_id)
        return pb.DeleteRoomResponse()

    async def RotateInviteCode(
        self, request: pb.RotateInviteCodeRequest, context: Context
    ) -> pb.RotateInviteCodeResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        room, member = await self._visible_room(room_id, caller)
        policy.require_not_direct(room.visibility)
        policy.require_manager(member.role if member else None)
        # No event: nothing another member (or a gateway cache) sees has changed.
        code = await self.store.rotate_invite_code(room_id)
        await self.moderation.record(room_id, AuditAction.INVITE_ROTATED, actor_id=caller.user_id)
        return pb.RotateInviteCodeResponse(invite_code=code)

    async def OpenDirectRoom(
        self, request: pb.OpenDirectRoomRequest, context: Context
    ) -> pb.OpenDirectRoomResponse:
        caller = await self._caller(context)
        other = v.parse_id(request.user_id, "user_id")
        if other == caller.user_id:
            raise InvalidArgument("cannot open a direct room with yourself")
        created = False
        room = await self.store.find_direct(caller.user_id, other)
        if room is None:
            self._limit_creations(caller.user_id)
            room, created = await self.store.create_direct(caller.user_id, other)
        await self.store.ensure_direct_members(room)
        if created:
            for user_id in room.direct_user_ids:
                await self.events.publish(
                    EventType.MEMBER_JOINED,
                    room.id,
                    actor_id=caller.user_id,
                    user_id=user_id,
                    role=Role.MEMBER,
                )
        return pb.OpenDirectRoomResponse(room=room_message(room, Role.MEMBER), created=created)

    # --------------------------------------------------------------- membership

    async def JoinRoom(self, request: pb.JoinRoomRequest, context: Context) -> pb.JoinRoomResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        invite_code = v.parse_invite_code(request.invite_code)
        room, member = await self.store.get_room_and_member(room_id, caller.user_id)
        if room is None:
            raise RoomNotFound()
        if member is not None:
            if room.visibility is Visibility.DIRECT:
                raise DirectRoomFixed()
            # Already a member: idempotent, no second membership and no second event.
            return pb.JoinRoomResponse(
                room=room_message(room, member.role), member=member_message(member)
            )
        if room.visibility is Visibility.DIRECT:
            raise RoomNotFound()
        # A banned user already knows the room: they are told why, whatever code
        # they bring (their old code was rotated with the ban anyway).
        await self.moderation.admit(room_id, caller.user_id)
        if room.visibility is Visibility.PRIVATE and not _same_code(invite_code, room.invite_code):
            # A wrong code must not reveal that the room exists.
            raise RoomNotFound()
        member, inserted, room = await self.store.add_member(
            room_id,
            caller.user_id,
            Role.MEMBER,
            visibility=room.visibility,
            slow_mode_seconds=room.slow_mode_seconds,
        )
        if inserted and not await self.moderation.after_join(room_id, caller.user_id):
            # A ban was recorded between our check and the insert, and its removal
            # ran before the insert: undone exactly as the rotated-code race below.
            if await self.store.remove_member(room_id, caller.user_id, role=Role.MEMBER):
                await self.events.publish(
                    EventType.MEMBER_REMOVED,
                    room_id,
                    actor_id=caller.user_id,
                    user_id=caller.user_id,
                )
            raise Banned()
        if (
            inserted
            and room.visibility is Visibility.PRIVATE
            and not _same_code(invite_code, room.invite_code)
        ):
            # The code was rotated (a kick, or RotateInviteCode) between our read and
            # the insert: the room read after the insert says the code no longer opens
            # it. Undo, as if the join had come after the rotation. The membership
            # existed for a moment (a gateway asking then cached "member"), so its end
            # is published as a kick's is; no join was ever published. Nobody else
            # removed it, so the actor is the user whose join was undone.
            if await self.store.remove_member(room_id, caller.user_id, role=Role.MEMBER):
                await self.events.publish(
                    EventType.MEMBER_REMOVED,
                    room_id,
                    actor_id=caller.user_id,
                    user_id=caller.user_id,
                )
            raise RoomNotFound()
        if inserted:
            await self.events.publish(
                EventType.MEMBER_JOINED,
                room_id,
                actor_id=caller.user_id,
                user_id=caller.user_id,
                role=member.role,
            )
        return pb.JoinRoomResponse(
            room=room_message(room, member.role), member=member_message(member)
        )

    async def LeaveRoom(
        self, request: pb.LeaveRoomRequest, context: Context
    ) -> pb.LeaveRoomResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        room, member = await self._visible_room(room_id, caller)
        policy.require_not_direct(room.visibility)
        if member is None:
            return pb.LeaveRoomResponse()  # not a member of a visible room: nothing to do
        policy.check_leave(member.role)
        if not await self.store.remove_member(room_id, caller.user_id, role=member.role):
            if await self.store.get_member(room_id, caller.user_id) is not None:
                raise ConcurrentChange("your role changed concurrently; retry")
            return pb.LeaveRoomResponse()  # a concurrent leave already removed it
        await self.events.publish(
            EventType.MEMBER_LEFT, room_id, actor_id=caller.user_id, user_id=caller.user_id
        )
        return pb.LeaveRoomResponse()

    async def ListMembers(
        self, request: pb.ListMembersRequest, context: Context
    ) -> pb.ListMembersResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        limit = v.parse_limit(request.limit)
        after = v.decode_cursor(v.MEMBERS, request.cursor)
        await self._visible_room(room_id, caller)
        members = await self.listing.list_members(room_id, after_user_id=after, limit=limit + 1)
        page = members[:limit]
        more = len(members) > limit
        return pb.ListMembersResponse(
            members=[member_message(m) for m in page],
            next_cursor=v.encode_cursor(v.MEMBERS, page[-1].user_id) if more else "",
        )

    async def _target(
        self, room_id: str, user_id: str, caller: AccessClaims
    ) -> tuple[RoomRecord, Role, MemberRecord]:
        """Common checks of SetMemberRole and RemoveMember, in the order that leaks
        nothing: visibility, then the caller's own role, then the target."""
        room, member = await self._visible_room(room_id, caller)
        policy.require_not_direct(room.visibility)
        my_role = policy.require_manager(member.role if member else None)
        target = await self.store.get_member(room_id, user_id)
        if target is None:
            raise MemberNotFound()
        return room, my_role, target

    async def SetMemberRole(
        self, request: pb.SetMemberRoleRequest, context: Context
    ) -> pb.SetMemberRoleResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        user_id = v.parse_id(request.user_id, "user_id")
        new_role = v.parse_role(request.role)
        if user_id == caller.user_id:
            raise InvalidArgument("cannot change your own role (transfer ownership or leave)")
        _, my_role, target = await self._target(room_id, user_id, caller)
        change = policy.check_set_role(my_role, target.role, new_role)
        if change is RoleChange.NONE:
            return pb.SetMemberRoleResponse(member=member_message(target))
        if change is RoleChange.SET:
            updated = await self.store.set_role(room_id, user_id, old=target.role, new=new_role)
            await self.events.publish(
                EventType.ROLE_CHANGED,
                room_id,
                actor_id=caller.user_id,
                user_id=user_id,
                role=updated.role,
            )
            await self.moderation.record(
                room_id,
                AuditAction.ROLE_CHANGED,
                actor_id=caller.user_id,
                target_user_id=user_id,
                details={"role": updated.role.value, "previous_role": target.role.value},
            )
            return pb.SetMemberRoleResponse(member=member_message(updated))
        promoted, demoted, room = await self.store.transfer_ownership(
            room_id, old_owner=caller.user_id, new_owner=user_id, new_owner_role=target.role
        )
        for changed in (promoted, demoted):
            await self.events.publish(
                EventType.ROLE_CHANGED,
                room_id,
                actor_id=caller.user_id,
                user_id=changed.user_id,
                role=changed.role,
            )
        await self.events.publish(
            EventType.ROOM_UPDATED, room_id, actor_id=caller.user_id, room=room
        )
        await self.moderation.record(
            room_id,
            AuditAction.ROLE_CHANGED,
            actor_id=caller.user_id,
            target_user_id=user_id,
            details={"role": Role.OWNER.value, "previous_role": target.role.value},
        )
        return pb.SetMemberRoleResponse(member=member_message(promoted))

    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Context
    ) -> pb.RemoveMemberResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        user_id = v.parse_id(request.user_id, "user_id")
        if user_id == caller.user_id:
            raise InvalidArgument("cannot remove yourself; use LeaveRoom")
        _, my_role, target = await self._target(room_id, user_id, caller)
        policy.check_remove(my_role, target.role)
        # The kicked user knew the invite code: it is rotated with the kick (before the
        # membership goes, store.remove_member), so it cannot bring them back. Managers
        # read the new code with GetRoom; no cache holds codes, so no extra event.
        removed = await self.store.remove_member(
            room_id, user_id, role=target.role, rotate_invite=True
        )
        if not removed:
            if await self.store.get_member(room_id, user_id) is not None:
                raise ConcurrentChange("the member's role changed concurrently; retry")
            return pb.RemoveMemberResponse()  # already gone: the outcome asked for
        await self.events.publish(
            EventType.MEMBER_REMOVED, room_id, actor_id=caller.user_id, user_id=user_id
        )
        await self.moderation.record(
            room_id, AuditAction.KICK, actor_id=caller.user_id, target_user_id=user_id
        )
        return pb.RemoveMemberResponse()

    async def CheckMembership(
        self, request: pb.CheckMembershipRequest, context: Context
    ) -> pb.CheckMembershipResponse:
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        target = None
        if request.HasField("user_id") and request.user_id != caller.user_id:
            target = v.parse_id(request.user_id, "user_id")
        found = await self.store.visibility_and_role(room_id, caller.user_id)
        if found is None:
            raise RoomNotFound()
        visibility = Visibility(found.visibility)
        role = Role(found.role) if found.role else None
        if not policy.can_see(visibility, role, global_admin=sees_every_room(caller)):
            raise RoomNotFound()
        if target is not None:
            # "Is this other user a member?" (the gateway checks a private message's
            # recipient): only members may ask, so outsiders learn nothing new.
            if role is None:
                raise InsufficientRole("only a member of the room can check other members")
            other = await self.store.visibility_and_role(room_id, target)
            if other is None:  # deleted between the two reads
                raise RoomNotFound()
            found = other
            role = Role(other.role) if other.role else None
        return pb.CheckMembershipResponse(
            member=role is not None,
            role=ROLE_OUT[role],
            visibility=VISIBILITY_OUT[visibility],
            muted_until_ms=found.muted_until_ms if role is not None else 0,
            slow_mode_seconds=found.slow_mode_seconds,
        )

    async def FilterMembers(
        self, request: pb.FilterMembersRequest, context: Context
    ) -> pb.FilterMembersResponse:
        """The members among ``user_ids`` (the gateways' revalidation sweep, one call
        per room). Asked by a member only, like CheckMembership with user_id. The
        caller's own membership comes from the same $in query, so a member asking
        costs one read; only a refused caller costs CheckMembership's reads."""
        caller = await self._caller(context)
        room_id = v.parse_id(request.room_id, "room_id")
        user_ids = v.parse_user_ids(request.user_ids)
        found = await self.store.members_among(room_id, [*user_ids, caller.user_id])
        mine = found.get(caller.user_id)
        if mine is None or "visibility" not in mine:
            view = await self.store.visibility_and_role(room_id, caller.user_id)
            if view is None:
                raise RoomNotFound()
            role = Role(view.role) if view.role else None
            visibility = Visibility(view.visibility)
            if not policy.can_see(visibility, role, global_admin=sees_every_room(caller)):
                raise RoomNotFound()
            if role is None:
                raise InsufficientRole("only a member of the room can check other members")
            slow_mode_seconds = view.slow_mode_seconds
        else:
            visibility = Visibility(mine["visibility"])
            slow_mode_seconds = int(mine.get("slow_mode_seconds", 0))
        asked = set(user_ids)
        return pb.FilterMembersResponse(
            members=[
                pb.FilteredMember(
                    user_id=user_id,
                    role=ROLE_OUT[Role(doc["role"])],
                    muted_until_ms=int(doc.get("muted_until_ms", 0)),
                )
                for user_id, doc in found.items()
                if user_id in asked
            ],
            visibility=VISIBILITY_OUT[visibility],
            slow_mode_seconds=slow_mode_seconds,
        )

    # --------------------------------------------------------------- moderation

    async def BanMember(
        self, request: pb.BanMemberRequest, context: Context
    ) -> pb.BanMemberResponse:
        return await self.moderation.ban(await self._caller(context), request)

    async def UnbanMember(
        self, request: pb.UnbanMemberRequest, context: Context
    ) -> pb.UnbanMemberResponse:
        return await self.moderation.unban(await self._caller(context), request)

    async def ListBans(self, request: pb.ListBansRequest, context: Context) -> pb.ListBansResponse:
        return await self.moderation.list_bans(await self._caller(context), request)

    async def MuteMember(
        self, request: pb.MuteMemberRequest, context: Context
    ) -> pb.MuteMemberResponse:
        return await self.moderation.mute(await self._caller(context), request)

    async def UnmuteMember(
        self, request: pb.UnmuteMemberRequest, context: Context
    ) -> pb.UnmuteMemberResponse:
        return await self.moderation.unmute(await self._caller(context), request)

    async def ListAuditLog(
        self, request: pb.ListAuditLogRequest, context: Context
    ) -> pb.ListAuditLogResponse:
        return await self.moderation.list_audit(await self._caller(context), request)

    async def RecordMessageDeletion(
        self, request: pb.RecordMessageDeletionRequest, context: Context
    ) -> pb.RecordMessageDeletionResponse:
        return await self.moderation.record_deletion(await self._caller(context), request)
