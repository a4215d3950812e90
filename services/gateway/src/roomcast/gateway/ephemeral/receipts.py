"""Read receipts: ``{"type":"read","room","seq"}`` → history, then the room, live.

1. The caller must be a member of the room (cached, membership.py).
2. The position is written to history (``PUT {history}/v1/rooms/{room}/read {"seq"}``
   with the user's own token; history keeps the maximum, so it only moves forward and
   answers the stored position). Writes are **coalesced** per (user, room): the first
   read is written at once, later ones at most once per ``MIN_WRITE_INTERVAL`` with the
   newest seq (a client marking every message it scrolls past costs one write a second).
3. The stored position is announced to the room's subscribers on every gateway: a core
   NATS publish on ``ephemeral.room.<room>`` of ``{"kind":"read","gateway","room","user":
   {id,username},"seq"}``. Gateways receive it on the per-room ephemeral subscription
   that presence.py holds while the room has local subscribers (its dispatcher calls
   :meth:`ReadReceipts.relay` for ``kind == "read"``) and write ``{"type":"read","room","user",
   "seq"}`` to every local subscriber of the room, the reader's own sockets included
   (other devices learn the position too).

History unreachable: the socket gets ``{"type":"error","code":"unavailable","ref":room}``;
the client may send the read again later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import httpx
import orjson
from nats.aio.client import Client as NatsClient

from roomcast.common.subjects import ephemeral_subject, is_object_id
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.errors import Unavailable
from roomcast.gateway.realtime.fanout import Fanout
from roomcast.gateway.realtime.protocol import error_frame

log = logging.getLogger(__name__)

# At most one history write per user and room per this interval (the newest seq wins):
# a read marker that lags a second behind is invisible to people, and it bounds the
# writes of a client that marks every message as it scrolls.
MIN_WRITE_INTERVAL = 1.0
# One history write: an indexed upsert plus a cached membership check.
HISTORY_TIMEOUT_SECONDS = 5.0
# Longest username relayed from a peer (auth's own limit is lower).
MAX_NAME_CHARS = 256


class Reader(Protocol):
    """The socket that sent a read (connection.Connection)."""

    @property
    def claims(self) -> AccessClaims | None: ...

    def send_payload(self, payload: bytes) -> None: ...


class MembershipCheck(Protocol):
    async def require_member(self, claims: AccessClaims, room_id: str) -> object: ...


def read_frame(room: str, user: dict[str, str], seq: int) -> bytes:
    return orjson.dumps({"type": "read", "room": room, "user": user, "seq": seq})


class ReadReceipts:
    def __init__(
        self,
        *,
        history_url: str,
        gateway_id: str,
        nc: NatsClient,
        membership: MembershipCheck,
        fanout: Fanout,
    ) -> None:
        self.url = history_url.rstrip("/")
        self.gateway_id = gateway_id
        self.nc = nc
        self.membership = membership
        self.fanout = fanout
        self._http: httpx.AsyncClient | None = None
        # (user, room) → the newest unwritten seq, with the socket and claims that sent it.
        self._pending: dict[tuple[str, str], tuple[int, Reader, AccessClaims]] = {}
        self._writers: dict[tuple[str, str], asyncio.Task[None]] = {}

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=HISTORY_TIMEOUT_SECONDS)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def mark(self, conn: Reader, room: str, seq: int) -> None:
        claims = conn.claims
        assert claims is not None
        await self.membership.require_member(claims, room)
        key = (claims.user_id, room)
        held = self._pending.get(key)
        if held is None or held[0] < seq:
            self._pending[key] = (seq, conn, claims)
        if key in self._writers:
            metrics.READS.labels("coalesced").inc()
            return
        self._writers[key] = asyncio.ensure_future(self._write_loop(key))

    async def _write_loop(self, key: tuple[str, str]) -> None:
        try:
            while key in self._pending:
                seq, conn, claims = self._pending.pop(key)
                await self._write(key[1], seq, conn, claims)
                await asyncio.sleep(MIN_WRITE_INTERVAL)
        finally:
            del self._writers[key]

    async def _write(self, room: str, seq: int, conn: Reader, claims: AccessClaims) -> None:
        try:
            response = await self._client().put(
                f"{self.url}/v1/rooms/{room}/read",
                content=orjson.dumps({"seq": seq}),
                headers={
                    "authorization": f"Bearer {claims.raw}",
                    "content-type": "application/json",
                },
            )
            if response.status_code != 200:
                raise Unavailable(f"history answered {response.status_code}")
            stored = orjson.loads(response.content)["seq"]
            if not isinstance(stored, int):
                raise Unavailable("history answered without a seq")
        except Exception as exc:
            metrics.READS.labels("failed").inc()
            log.warning("read position not stored", extra={"error": repr(exc)})
            conn.send_payload(
                error_frame("unavailable", "read position not stored, retry later", room)
            )
            return
        metrics.READS.labels("stored").inc()
        await self._announce(room, claims, stored)

    async def _announce(self, room: str, claims: AccessClaims, seq: int) -> None:
        message = {
            "kind": "read",
            "gateway": self.gateway_id,
            "room": room,
            "user": {"id": claims.user_id, "username": claims.username},
            "seq": seq,
        }
        try:
            await self.nc.publish(ephemeral_subject(room), orjson.dumps(message))
        except Exception as exc:
            log.warning("read announcement lost", extra={"error": repr(exc)})

    def relay(self, room: str, message: dict[str, Any]) -> int:
        """Deliver a ``kind == "read"`` message of ``ephemeral.room.<room>`` to this
        gateway's subscribers of the room. Returns how many sockets got it."""
        user, seq = message.get("user"), message.get("seq")
        if not isinstance(user, dict) or not is_object_id(user.get("id")):
            return 0
        username = user.get("username")
        if not isinstance(username, str) or len(username) > MAX_NAME_CHARS:
            return 0
        if type(seq) is not int or seq < 0:
            return 0
        frame = read_frame(room, {"id": user["id"], "username": username}, seq)
        return self.fanout.broadcast(room, frame)
