"""The read-only service role: what a ``service-reader`` token may call.

The notifier reads rooms (visibility) and their members to decide who is notified; it
must never change anything. auth gives its account the ``service-reader`` role instead
of the global ``admin`` one. Such a caller sees every room, as a global admin does, but
only through the RPCs listed here: any other RPC is refused with ``read_only`` before
it reads or writes anything, whatever the account's membership.

The interceptor records the RPC being served in :data:`current_rpc`; the servicer's
caller check reads it, so a new write RPC is refused to readers without a list to keep
up to date beyond this one.
"""

from __future__ import annotations

from contextvars import ContextVar

from roomcast.common.tokens import AccessClaims
from roomcast.rooms.errors import ReadOnlyCaller

# The RPCs a service reader may call: reading a room and its members (the notifier's
# GetRoom and ListMembers) and the membership check.
READ_RPCS = frozenset({"GetRoom", "ListMembers", "CheckMembership"})

# The name of the Rooms RPC this task serves ("" outside one).
current_rpc: ContextVar[str] = ContextVar("current_rpc", default="")


def check_service_reader(caller: AccessClaims) -> None:
    """Refuse a service reader anything but a read; others pass unchanged."""
    reader = caller.is_service_reader and not caller.is_global_admin
    if reader and current_rpc.get() not in READ_RPCS:
        raise ReadOnlyCaller("this service account may only read rooms and members")


def sees_every_room(caller: AccessClaims) -> bool:
    """Global admins and service readers see private rooms they are not in."""
    return caller.is_global_admin or caller.is_service_reader
