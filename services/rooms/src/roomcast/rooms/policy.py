"""Who may do what in a room. Pure functions over roles; no I/O.

Roles rank owner > admin > member. The rules:

- a room is visible to everyone when public; a private or direct room only to its
  members (and to global admins); an invisible room is reported as not found;
- owner and admins update the room, rotate its invite code and kick members ranked
  strictly below themselves;
- a role can be set only on a member ranked strictly below the caller, and only to a
  role ranked strictly below the caller; the owner may additionally hand ownership
  over (set someone ``owner``), which makes the old owner an admin;
- only the owner, or a global admin (token role ``admin``), deletes a room;
- owner and admins ban and mute users ranked strictly below themselves (a non-member
  ranks below everyone) and read the audit log, which global admins read too;
- the owner cannot leave (hand ownership over or delete the room first);
- direct rooms have exactly their two members: no join, leave, kick, role change,
  rename or invite code.
"""

from __future__ import annotations

import enum

from roomcast.rooms.errors import DirectRoomFixed, InsufficientRole, OwnerMustTransfer


class Role(enum.StrEnum):
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Visibility(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    DIRECT = "direct"


class RoleChange(enum.Enum):
    """What a permitted SetMemberRole does."""

    NONE = "none"  # the member already has that role
    SET = "set"  # an ordinary promotion or demotion
    TRANSFER = "transfer"  # ownership moves to the target; the caller becomes admin


def can_see(visibility: Visibility, my_role: Role | None, *, global_admin: bool) -> bool:
    return visibility is Visibility.PUBLIC or my_role is not None or global_admin


def shows_invite_code(visibility: Visibility, my_role: Role | None) -> bool:
    return visibility is not Visibility.DIRECT and my_role in (Role.OWNER, Role.ADMIN)


def require_not_direct(visibility: Visibility) -> None:
    if visibility is Visibility.DIRECT:
        raise DirectRoomFixed()


def require_manager(my_role: Role | None) -> Role:
    """Owner or admin: may update the room, kick, rotate the invite code."""
    if my_role is None or my_role.rank < Role.ADMIN.rank:
        raise InsufficientRole("only the owner or an admin of the room can do this")
    return my_role


def check_remove(my_role: Role | None, target_role: Role) -> None:
    actor = require_manager(my_role)
    if target_role.rank >= actor.rank:
        raise InsufficientRole(f"an {actor.value} cannot remove an {target_role.value}")


def check_moderate(my_role: Role | None, target_role: Role | None) -> Role:
    """Ban or mute: the caller manages the room and outranks the target (a user who
    is not a member, ``None``, is outranked by every manager)."""
    actor = require_manager(my_role)
    if target_role is not None and target_role.rank >= actor.rank:
        raise InsufficientRole(f"an {actor.value} cannot moderate an {target_role.value}")
    return actor


def check_read_audit(my_role: Role | None, *, global_admin: bool) -> None:
    if global_admin:
        return
    require_manager(my_role)


def check_set_role(my_role: Role | None, target_role: Role, new_role: Role) -> RoleChange:
    actor = require_manager(my_role)
    if target_role.rank >= actor.rank:
        raise InsufficientRole(f"an {actor.value} cannot change the role of an {target_role.value}")
    if new_role is Role.OWNER:
        if actor is not Role.OWNER:
            raise InsufficientRole("only the owner can hand ownership over")
        return RoleChange.TRANSFER
    if new_role.rank >= actor.rank:
        raise InsufficientRole(f"an {actor.value} cannot grant the role {new_role.value}")
    return RoleChange.NONE if new_role is target_role else RoleChange.SET


def check_delete(my_role: Role | None, *, global_admin: bool) -> None:
    if my_role is not Role.OWNER and not global_admin:
        raise InsufficientRole("only the owner of the room can delete it")


def check_leave(my_role: Role) -> None:
    if my_role is Role.OWNER:
        raise OwnerMustTransfer()
