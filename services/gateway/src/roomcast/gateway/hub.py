"""The gateway's shared state: sockets by user, the fan-out, readiness and draining.

One :class:`Hub` per process. It decides whether a WebSocket handshake is accepted
(draining, capacity, Origin), keeps the index of sockets by user (session revocation,
membership removals) and counts in-flight publishes so a drain can wait for their acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from nats.aio.client import Client as NatsClient
from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from roomcast.common.tokens import TokenVerifier
from roomcast.gateway import metrics
from roomcast.gateway.connection import Connection
from roomcast.gateway.errors import CloseCode, TooManySockets, Unavailable
from roomcast.gateway.fanout import Fanout
from roomcast.gateway.membership import MembershipCache
from roomcast.gateway.presence import Presence
from roomcast.gateway.protocol import error_frame
from roomcast.gateway.recipients import RecipientCache
from roomcast.gateway.revocations import revoked_sessions
from roomcast.gateway.settings import Settings
from roomcast.gateway.socketcaps import SocketCaps
from roomcast.gateway.stream import ChatStream

log = logging.getLogger(__name__)


def _refuse(status: int, code: str, message: str) -> WSUpgradeResponseWithListener:
    body = b'{"error":{"code":"%s","message":"%s"}}' % (code.encode(), message.encode())
    response = WSUpgradeResponse.create_error_response(
        status, body, {"Content-Type": "application/json", "Connection": "close"}
    )
    return WSUpgradeResponseWithListener(response, None)


class Hub:
    def __init__(
        self, settings: Settings, verifier: TokenVerifier, membership: MembershipCache
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        self.membership = membership
        # Private messages' recipients (recipients.py), on the same rooms channel.
        self.recipients = RecipientCache(
            membership.client,
            ttl=settings.membership_cache_ttl_seconds,
            negative_ttl=settings.membership_negative_ttl_seconds,
            max_entries=settings.membership_cache_size,
        )
        # Sessions revoked while their tokens are still valid (revocations.py): the
        # shared watcher, closing a revoked session's sockets.
        self.revoked = revoked_sessions(
            verifier,
            lambda user_id, session_id: self.close_sessions(
                user_id, session_id, CloseCode.UNAUTHENTICATED, "session revoked"
            ),
        )
        # Presence and typing (presence.py): set by the server once NATS is connected.
        self.presence: Presence | None = None
        self.nc: NatsClient | None = None
        self.stream: ChatStream | None = None
        self.fanout: Fanout | None = None
        self.connections: set[Connection] = set()
        # Sockets per client address (before auth) and per user (socketcaps.py).
        self.caps = SocketCaps(
            per_address=settings.max_unauthenticated_sockets_per_address,
            per_user=settings.max_sockets_per_user,
            trusted_proxies=settings.trusted_proxies,
        )
        self.by_user: dict[str, set[Connection]] = {}
        self.draining = False
        self._origins = settings.origins
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def attach(self, nc: NatsClient, stream: ChatStream) -> None:
        """NATS is connected and the stream exists: start serving."""
        self.nc = nc
        self.revoked.attach(nc)
        self.stream = stream
        self.fanout = Fanout(
            nc,
            stream,
            max_replay=self.settings.max_replay_messages,
            max_buffered=self.settings.max_catchup_buffer_messages,
        )

    @property
    def ready(self) -> bool:
        return (
            not self.draining
            and self.fanout is not None
            and self.nc is not None
            and self.nc.is_connected
        )

    async def readiness(self) -> None:
        """For /readyz: raise when this replica should not get traffic."""
        if self.draining:
            raise RuntimeError("draining")
        if self.fanout is None:
            raise RuntimeError("starting: NATS or the stream not ready")
        if self.nc is None or not self.nc.is_connected:
            raise RuntimeError("NATS disconnected")
        if self.revoked.required and not self.revoked.loaded:
            raise RuntimeError("starting: revoked sessions not loaded")

    def fanout_or_fail(self) -> Fanout:
        if self.fanout is None:
            raise Unavailable("gateway starting, retry")
        return self.fanout

    def stream_or_fail(self) -> ChatStream:
        if self.stream is None:
            raise Unavailable("gateway starting, retry")
        return self.stream

    # --- handshakes ----------------------------------------------------------------

    def listener_factory(
        self, request: WSUpgradeRequest
    ) -> Connection | WSUpgradeResponseWithListener:
        """picows' router for ``GET /v1/ws``: a listener, or the refusal."""
        if self.draining or self.fanout is None:
            metrics.HANDSHAKES_REJECTED.labels("not_ready").inc()
            return _refuse(503, "unavailable", "gateway not accepting connections, retry")
        if len(self.connections) >= self.settings.max_connections:
            metrics.HANDSHAKES_REJECTED.labels("capacity").inc()
            return _refuse(503, "unavailable", "gateway at capacity, retry")
        if self._origins is not None:
            origin = request.headers.get("Origin")
            if origin is not None and origin.rstrip("/").lower() not in self._origins:
                metrics.HANDSHAKES_REJECTED.labels("origin").inc()
                return _refuse(403, "forbidden", "origin not allowed")
        return Connection(self)

    # --- socket index --------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        metrics.CONNECTIONS.set(len(self.connections))
        try:
            self.caps.admit(conn, self._address_of(conn))
        except TooManySockets as exc:
            conn.send_payload(error_frame(exc.code, exc.message, None))
            conn.close(CloseCode.RATE_LIMITED, exc.message)

    def _address_of(self, conn: Connection) -> str:
        """The client address of a socket: its peer, or what a trusted proxy reports."""
        transport = conn.transport
        if transport is None:
            return "unknown"
        peer = transport.underlying_transport.get_extra_info("peername")
        forwarded = transport.request.headers.getall("x-forwarded-for", [])
        return self.caps.address_of(peer[0] if peer else None, forwarded)

    def authenticated(self, conn: Connection) -> None:
        """Raises TooManySockets (close 4008) when the user is at its socket cap."""
        self.caps.authenticated(conn, conn.user_id)
        self.by_user.setdefault(conn.user_id, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.caps.release(conn)
        metrics.CONNECTIONS.set(len(self.connections))
        sockets = self.by_user.get(conn.user_id)
        if sockets is not None:
            sockets.discard(conn)
            if not sockets:
                del self.by_user[conn.user_id]

    def user_sockets(self, user_id: str) -> list[Connection]:
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

    # --- publishes in flight (drain waits for their acks) --------------------------

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def wait_publishes(self, within: float) -> bool:
        """Wait until no publish is awaiting its ack; False if ``within`` passed."""
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True

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
