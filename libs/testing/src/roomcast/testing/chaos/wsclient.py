"""A raw WebSocket chat client for the chaos suite, written against docs/protocol.md and
nothing else (not the SDK), so that the run accounts for what the gateways really send.

It behaves as the protocol asks a client to: when its socket closes it reconnects to the
next gateway (backing off), authenticates, resubscribes every room with ``since`` = the
last ``seq`` it holds, and retransmits every unacked send with its original
``client_id`` (the gateways deduplicate). Everything it sees goes into the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from roomcast.testing.chaos.ledger import Delivery, Ledger, Send

# Reconnect backoff: the first retry is quick (the socket should move to the other
# gateway at once), later ones back off so a stack that is down is not hammered.
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 2.0
# A gateway that is starting under load may take seconds to answer a handshake.
HANDSHAKE_TIMEOUT_SECONDS = 10.0
# Ping the gateway this often and give up on the socket after the timeout: a socket to a
# frozen peer is replaced within seconds (killed peers close at once anyway).
PING_INTERVAL_SECONDS = 5.0
PING_TIMEOUT_SECONDS = 10.0
# A send refused with one of these codes is retried (same client_id) after this delay;
# the gateway's rate limiter refills 20 tokens/s, 1 s is always enough for one.
RETRY_SECONDS = 1.0
RETRYABLE_ERRORS = frozenset(
    {"rate_limited", "unavailable", "dependency_unavailable", "timeout", "internal"}
)
# Kept pending: the gateway is draining, the 1012 close follows and the reconnect resends.
RESEND_AFTER_RECONNECT_ERRORS = frozenset({"gateway_restarting"})
# An unacked send is retransmitted (same client_id) after this long without an answer: a
# gateway that lost its NATS connection mid-publish may never answer it.
RESEND_UNANSWERED_SECONDS = 5.0
# Close code of an expired or revoked token: log in again before reconnecting.
CLOSE_AUTH = 4001
# Sends (first transmissions and resends) per second and burst on one socket: below the
# gateway's default frame rate limit (20/s, burst 40), so retrying a backlog after an
# outage never gets the socket rate limited, let alone closed with 4008.
SEND_RATE_PER_SECOND = 15.0
SEND_BURST = 30.0


@dataclass
class _Pending:
    frame: str
    last_sent: float = 0.0
    retry: asyncio.TimerHandle | None = None  # at most one retry scheduled per send


@dataclass
class ChatClient:
    """One user on one socket, subscribed to ``rooms`` from the first message on."""

    name: str
    urls: list[str]  # ws://host:port/v1/ws of every gateway
    gateway: int  # index of the first gateway to try
    rooms: list[str]
    ledger: Ledger
    token: str
    login: Callable[[], Awaitable[str]]  # a fresh access token
    live: bool = False
    connects: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    _ws: ClientConnection | None = None
    _last: dict[str, int] = field(default_factory=dict)
    _awaiting: set[str] = field(default_factory=set)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _count: int = 0
    _stopping: bool = False
    # Sends waiting for a token of the socket's rate, in order (a dict as ordered set).
    _backlog: dict[str, None] = field(default_factory=dict)
    _tokens: float = SEND_BURST
    _refilled: float = 0.0
    _drain_handle: asyncio.TimerHandle | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # --- connection -------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until :meth:`stop`."""
        attempt = 0
        self._spawn(self._resend_unanswered())
        while not self._stopping:
            url = self.urls[self.gateway % len(self.urls)]
            try:
                async with connect(
                    url,
                    open_timeout=HANDSHAKE_TIMEOUT_SECONDS,
                    ping_interval=PING_INTERVAL_SECONDS,
                    ping_timeout=PING_TIMEOUT_SECONDS,
                    close_timeout=2.0,
                    max_size=1 << 20,
                ) as ws:
                    attempt = 0
                    self.connects += 1
                    await self._session(ws)
            except (OSError, TimeoutError, WebSocketException) as exc:
                self.closes[type(exc).__name__] += 1
            finally:
                self.live = False
                self._ws = None
                self._backlog.clear()  # going live again retransmits everything pending
            if self._stopping:
                break
            self.gateway += 1  # the other gateway: this one may be down
            delay = min(RECONNECT_MAX_SECONDS, RECONNECT_FIRST_SECONDS * 2**attempt)
            attempt += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def stop(self) -> None:
        self._stopping = True
        ws = self._ws
        if ws is not None:
            await ws.close()
        for task in list(self._tasks):
            task.cancel()
        for entry in self._pending.values():
            if entry.retry is not None:
                entry.retry.cancel()
        if self._drain_handle is not None:
            self._drain_handle.cancel()

    async def _session(self, ws: ClientConnection) -> None:
        self._ws = ws
        await ws.send(json.dumps({"type": "auth", "token": self.token}))
        try:
            async for raw in ws:
                self._on_frame(ws, raw)
        except ConnectionClosed:
            pass
        code = ws.close_code
        self.closes[str(code)] += 1
        if code == CLOSE_AUTH and not self._stopping:
            with contextlib.suppress(Exception):  # a failed login is retried on reconnect
                self.token = await self.login()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send_now(self, ws: ClientConnection, frame: str) -> None:
        async def send() -> None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame)

        self._spawn(send())

    # --- frames -----------------------------------------------------------------------

    def _on_frame(self, ws: ClientConnection, raw: str | bytes) -> None:
        now = time.monotonic()
        try:
            msg: Any = json.loads(raw)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            self.ledger.unexpected.append(f"{self.name}: not a frame: {raw[:200]!r}")
            return
        if kind == "message":
            room = msg.get("room")
            if room not in self.rooms:
                self.ledger.unexpected.append(f"{self.name}: message of room {room}")
                return
            seq = int(msg["seq"])
            delivery = Delivery(seq, int(msg["prev"]), str(msg.get("client_id")), now)
            self.ledger.delivered(self.name, room, delivery)
            self._last[room] = max(self._last.get(room, 0), seq)
        elif kind == "ack":
            cid = str(msg["client_id"])
            self.ledger.acked(cid, int(msg["seq"]), now)
            self._pending.pop(cid, None)
        elif kind == "ready":
            self._subscribe(ws, list(self.rooms))
        elif kind == "subscribed":
            self._awaiting.discard(msg.get("room"))
            if not self._awaiting and not self.live:
                self.live = True
                for cid in list(self._pending):
                    self._transmit(cid)
        elif kind == "error":
            self._on_error(ws, str(msg.get("code")), msg.get("ref"))
        elif kind in ("skip", "edit", "delete"):
            self.ledger.unexpected.append(f"{self.name}: {kind} frame in a text-only run")
        # event, presence, typing, read, pong: not part of what this run accounts.

    def _subscribe(self, ws: ClientConnection, rooms: list[str]) -> None:
        self._awaiting.update(rooms)
        for room in rooms:
            since = self._last.get(room, 0)
            self._send_now(ws, json.dumps({"type": "subscribe", "room": room, "since": since}))

    def _on_error(self, ws: ClientConnection, code: str, ref: object) -> None:
        self.errors[code] += 1
        loop = asyncio.get_running_loop()
        entry = self._pending.get(ref) if isinstance(ref, str) else None
        if isinstance(ref, str) and entry is not None:
            if code in RETRYABLE_ERRORS:
                if entry.retry is None:  # one answer per transmission: never pile up
                    entry.retry = loop.call_later(RETRY_SECONDS, self._retry, ref)
            elif code not in RESEND_AFTER_RECONNECT_ERRORS:
                self._pending.pop(ref)
                self.ledger.sends[ref].refused = code
        elif isinstance(ref, str) and ref in self._awaiting:
            # A subscribe that failed (rooms down...): try it again on this socket.
            loop.call_later(RETRY_SECONDS, self._resubscribe, ws, ref)

    def _resubscribe(self, ws: ClientConnection, room: str) -> None:
        if self._ws is ws:
            self._subscribe(ws, [room])

    # --- sending ----------------------------------------------------------------------

    def send(self, room: str) -> None:
        """Schedule one message now (open loop: whether or not the socket is up)."""
        self._count += 1
        cid = f"{self.name}-{self._count}"
        self.ledger.scheduled(Send(cid, room, self.name, time.monotonic()))
        frame = {
            "type": "send",
            "room": room,
            "client_id": cid,
            "body": {"type": "text", "content": f"{cid} chaos"},
        }
        self._pending[cid] = _Pending(json.dumps(frame))
        self._transmit(cid)

    def _retry(self, cid: str) -> None:
        entry = self._pending.get(cid)
        if entry is not None:
            entry.retry = None
            self._transmit(cid)

    def _transmit(self, cid: str) -> None:
        if cid not in self._pending or self._ws is None or not self.live:
            return  # going live again retransmits everything pending
        self._backlog[cid] = None
        self._drain()

    def _drain(self) -> None:
        """Send the backlog at the socket's rate, oldest first."""
        self._drain_handle = None
        now = time.monotonic()
        self._tokens = min(SEND_BURST, self._tokens + (now - self._refilled) * SEND_RATE_PER_SECOND)
        self._refilled = now
        ws = self._ws
        while self._backlog and self._tokens >= 1 and ws is not None and self.live:
            cid = next(iter(self._backlog))
            del self._backlog[cid]
            entry = self._pending.get(cid)
            if entry is None:
                continue
            self._tokens -= 1
            entry.last_sent = now
            self.ledger.sends[cid].transmits += 1
            self._send_now(ws, entry.frame)
        if self._backlog and self._drain_handle is None:
            loop = asyncio.get_running_loop()
            self._drain_handle = loop.call_later(1 / SEND_RATE_PER_SECOND, self._drain)

    async def _resend_unanswered(self) -> None:
        while True:
            await asyncio.sleep(RESEND_UNANSWERED_SECONDS / 2)
            older = time.monotonic() - RESEND_UNANSWERED_SECONDS
            for cid, entry in list(self._pending.items()):
                if entry.last_sent and entry.last_sent < older and entry.retry is None:
                    self._transmit(cid)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def oldest_pending_age(self, now: float) -> float:
        sends = self.ledger.sends
        return max((now - sends[cid].scheduled_at for cid in self._pending), default=0.0)


async def send_open_loop(client: ChatClient, room: str, rate: float, stop: asyncio.Event) -> None:
    """``rate`` messages a second to ``room`` on a fixed schedule, never waiting for acks."""
    interval = 1.0 / rate
    next_at = time.monotonic() + random.uniform(0, interval)
    while not stop.is_set():
        delay = next_at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            continue
        client.send(room)
        next_at += interval
