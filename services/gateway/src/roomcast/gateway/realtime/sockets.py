"""The sockets this gateway holds: all of them, by user, with their per-client caps.

The registry knows connections and nothing else (no NATS, no rooms): the handshake
policy reads its size, session revocation closes a user's sockets through it, and the
drain closes them all. Each socket registers itself when it connects, when its auth
frame succeeds and when it closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from picows import WSTransport

from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.errors import CloseCode, TooManySockets
from roomcast.gateway.realtime.protocol import error_frame
from roomcast.gateway.realtime.socketcaps import SocketCaps

log = logging.getLogger(__name__)


class Socket(Protocol):
    """What the registry needs from a socket (implemented by connection.Connection)."""

    def __hash__(self) -> int: ...

    @property
    def user_id(self) -> str: ...

    @property
    def claims(self) -> AccessClaims | None: ...

    @property
    def transport(self) -> WSTransport | None: ...

    @property
    def closed(self) -> bool: ...

    @property
    def rooms(self) -> Iterable[str]: ...

    def send_payload(self, payload: bytes) -> None: ...

    def close(self, code: int, reason: str = "") -> None: ...


class SocketRegistry:
    def __init__(self, caps: SocketCaps) -> None:
        # Sockets per client address (before auth) and per user (socketcaps.py).
        self.caps = caps
        self.connections: set[Socket] = set()
        self.by_user: dict[str, set[Socket]] = {}

    def __len__(self) -> int:
        return len(self.connections)

    def add(self, conn: Socket) -> None:
        """A socket connected: counted against its client address until it authenticates
        (closed with 4008 when the address is at its cap)."""
        self.connections.add(conn)
        metrics.CONNECTIONS.set(len(self.connections))
        try:
            self.caps.admit(conn, self._address_of(conn))
        except TooManySockets as exc:
            conn.send_payload(error_frame(exc.code, exc.message, None))
            conn.close(CloseCode.RATE_LIMITED, exc.message)

    def _address_of(self, conn: Socket) -> str:
        """The client address of a socket: its peer, or what a trusted proxy reports."""
        transport = conn.transport
        if transport is None:
            return "unknown"
        peer = transport.underlying_transport.get_extra_info("peername")
        forwarded = transport.request.headers.getall("x-forwarded-for", [])
        return self.caps.address_of(peer[0] if peer else None, forwarded)

    def authenticated(self, conn: Socket) -> None:
        """Raises TooManySockets (close 4008) when the user is at its socket cap."""
        self.caps.authenticated(conn, conn.user_id)
        self.by_user.setdefault(conn.user_id, set()).add(conn)

    def remove(self, conn: Socket) -> None:
        self.connections.discard(conn)
        self.caps.release(conn)
        metrics.CONNECTIONS.set(len(self.connections))
        sockets = self.by_user.get(conn.user_id)
        if sockets is not None:
            sockets.discard(conn)
            if not sockets:
                del self.by_user[conn.user_id]

    def user_sockets(self, user_id: str) -> list[Socket]:
        return list(self.by_user.get(user_id, ()))

    def close_sessions(self, user_id: str, session_id: str | None, code: int, reason: str) -> int:
        """Close a user's sockets (those of one session, or all of them)."""
        closed = 0
        for conn in self.user_sockets(user_id):
            claims = conn.claims
            if session_id is None or (claims is not None and claims.session_id == session_id):
                conn.close(code, reason)
                closed += 1
        return closed

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections):
            conn.close(code, reason)

    async def close_all_and_wait(self, code: int, reason: str, within: float) -> None:
        """Close every socket and wait (bounded) until their close frames are flushed."""
        transports = [c.transport for c in self.connections if c.transport is not None]
        self.close_all(code, reason)
        if not transports:
            return
        waiting = asyncio.gather(
            *(t.wait_disconnected() for t in transports), return_exceptions=True
        )
        try:
            await asyncio.wait_for(waiting, within)
        except TimeoutError:
            log.warning("sockets still open after the drain timeout")
