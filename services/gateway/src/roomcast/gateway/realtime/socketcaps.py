"""Per-address and per-user socket caps: no one client takes every socket of a gateway.

A socket counts against its client address from the handshake until it authenticates,
then against its user instead:

- unauthenticated sockets per address (``max_unauthenticated_sockets_per_address``):
  a flood of sockets that never authenticate (each may idle up to the auth deadline)
  cannot fill the gateway, while many users behind one NAT, who authenticate within a
  round trip, never meet the cap;
- sockets per user (``max_sockets_per_user``): one account (a leaked token, a buggy
  client reconnecting in a loop) cannot hold thousands of sockets.

The client address is the TCP peer, or the address the trusted proxy in front of the
gateway reports in ``X-Forwarded-For`` (``ROOMCAST_GATEWAY_TRUSTED_PROXIES``): without
that, every client behind the proxy would share the proxy's address and its cap.

Each gateway counts its own sockets; a user's sockets on several replicas are capped per
replica. A refused socket gets ``too_many_sockets`` and close 4008 (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from roomcast.common.proxies import IpNetwork, client_address
from roomcast.gateway import metrics
from roomcast.gateway.errors import TooManySockets


class SocketCaps:
    """Counts sockets by address (before auth) and by user (after auth)."""

    def __init__(
        self, *, per_address: int, per_user: int, trusted_proxies: Sequence[IpNetwork]
    ) -> None:
        self.per_address = per_address
        self.per_user = per_user
        self.trusted_proxies = tuple(trusted_proxies)
        self._by_address: dict[str, int] = {}
        self._by_user: dict[str, int] = {}
        # What each open socket counts against: ("address", a) or ("user", u).
        self._held: dict[Hashable, tuple[str, str]] = {}

    def address_of(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        return client_address(peer, forwarded_for, self.trusted_proxies)

    def admit(self, socket: Hashable, address: str) -> None:
        """A new socket from ``address``; raises :class:`TooManySockets` (and counts
        nothing) when the address already holds its cap of unauthenticated sockets."""
        held = self._by_address.get(address, 0)
        if held >= self.per_address:
            metrics.SOCKETS_REFUSED.labels("address").inc()
            raise TooManySockets(
                f"too many unauthenticated sockets from this address (at most {self.per_address})"
            )
        self._by_address[address] = held + 1
        self._held[socket] = ("address", address)

    def authenticated(self, socket: Hashable, user_id: str) -> None:
        """The socket authenticated as ``user_id``: it now counts against the user.
        Raises :class:`TooManySockets` when the user holds the cap already (the socket
        keeps counting against its address until it is released)."""
        held = self._by_user.get(user_id, 0)
        if held >= self.per_user:
            metrics.SOCKETS_REFUSED.labels("user").inc()
            raise TooManySockets(f"too many sockets for this user (at most {self.per_user})")
        self._release(socket)
        self._by_user[user_id] = held + 1
        self._held[socket] = ("user", user_id)

    def release(self, socket: Hashable) -> None:
        """The socket closed (a no-op for one that was never admitted)."""
        self._release(socket)

    def _release(self, socket: Hashable) -> None:
        entry = self._held.pop(socket, None)
        if entry is None:
            return
        kind, key = entry
        counts = self._by_address if kind == "address" else self._by_user
        remaining = counts[key] - 1
        if remaining:
            counts[key] = remaining
        else:
            del counts[key]

    def address_count(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def user_count(self, user_id: str) -> int:
        return self._by_user.get(user_id, 0)
