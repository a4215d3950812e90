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
   :func:`relay_read` for ``kind == "read"``) and write ``{"type":"read","room","user",
   "seq"}`` to every local subscriber of the room, the reader's own sockets included
   (other devices learn the position too).

History unreachable: the socket gets ``{"type":"error","code":"unavailable","ref":room}``;
the client may send the read again later.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from roomcast.common.subjects import ephemeral_subject, is_object_id
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.errors import Unavailable
from roomcast.gateway.protocol import error_frame

if TYPE_CHECKING:
    from roomcast.gateway.connection import Connection
    from roomcast.gateway.hub import Hub

log = logging.getLogger(__name__)

# At most one history write per user and room per this interval (the newest seq wins):
# a read marker that lags a second behind is invisible to people, and it bounds the
# writes of a client that marks every message as it scrolls.
MIN_WRITE_INTERVAL = 1.0
# One history write: an indexed upsert plus a cached membership check.
HISTORY_TIMEOUT_SECONDS = 5.0
# Longest username relayed from a peer (auth's own limit is lower).
MAX_NAME_CHARS = 256

_instances: weakref.WeakKeyDictionary[Hub, ReadReceipts] = weakref.WeakKeyDictionary()


def receipts_for(hub: Hub) -> ReadReceipts:
    """The hub's ReadReceipts (created on first use)."""
    receipts = _instances.get(hub)
    if receipts is None:
        receipts = _instances[hub] = ReadReceipts(hub)
    return receipts


def read_frame(room: str, user: dict[str, str], seq: int) -> bytes:
    return orjson.dumps({"type": "read", "room": room, "user": user, "seq": seq})


class ReadReceipts:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.url = hub.settings.history_url.rstrip("/")
        self._http: httpx.AsyncClient | None = None
        # (user, room) → the newest unwritten seq, with the socket and claims that sent it.
        self._pending: dict[tuple[str, str], tuple[int, Connection, AccessClaims]] = {}
        self._writers: dict[tuple[str, str], asyncio.Task[None]] = {}

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=HISTORY_TIMEOUT_SECONDS)
        return self._http

    async def mark(self, conn: Connection, room: str, seq: int) -> None:
        claims = conn.claims
        assert claims is not None
        await self.hub.membership.require_member(claims, room)
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

    async def _write(self, room: str, seq: int, conn: Connection, claims: AccessClaims) -> None:
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
        nc = self.hub.nc
        if nc is None:
            return
        presence = self.hub.presence
        message = {
            "kind": "read",
            "gateway": presence.id if presence is not None else self.hub.settings.instance_name,
            "room": room,
            "user": {"id": claims.user_id, "username": claims.username},
            "seq": seq,
        }
        try:
            await nc.publish(ephemeral_subject(room), orjson.dumps(message))
        except Exception as exc:
            log.warning("read announcement lost", extra={"error": repr(exc)})


def relay_read(hub: Hub, room: str, message: dict[str, Any]) -> int:
    """Deliver a ``kind == "read"`` message of ``ephemeral.room.<room>`` to this gateway's
    subscribers of the room. Returns how many sockets got it."""
    user, seq = message.get("user"), message.get("seq")
    if not isinstance(user, dict) or not is_object_id(user.get("id")):
        return 0
    username = user.get("username")
    if not isinstance(username, str) or len(username) > MAX_NAME_CHARS:
        return 0
    if type(seq) is not int or seq < 0:
        return 0
    fanout = hub.fanout
    if fanout is None:
        return 0
    frame = read_frame(room, {"id": user["id"], "username": username}, seq)
    targets = fanout.subscribers(room)
    for subscriber in targets:
        subscriber.send_payload(frame)
    return len(targets)
