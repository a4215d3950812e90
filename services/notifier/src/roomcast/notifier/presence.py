"""Is a user looking at a room right now? Asked of the gateways' presence protocol.

Gateways keep presence per room (docs/presence.md): a user is online in a room while
one of their sockets, on any gateway, is subscribed to it. Every gateway answers a
request on ``presence.query.<room>`` with its local users of the room, and every
gateway heartbeats on ``presence.heartbeat``. The notifier listens to the heartbeats
(so it knows which gateways to wait for) and asks; a user no gateway reports gets a
Web Push. Being subscribed to the room is the right test: that socket has already
shown the message, while a socket open on other rooms has not.

A gateway that hears a query notes the asker as a peer and waits for its answers to its
own snapshot queries, so the probe answers them too (with no users): to the gateways it
is a peer that never holds sockets.

Everything received is read through roomcast.common.presencewire, the gateways' own
validation of their presence messages (sizes, gateway ids, integers, user ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from roomcast.common.presencewire import (
    HEARTBEAT_SUBJECT,
    decode,
    gateway_of,
    int_of,
    user_id_of,
)
from roomcast.common.subjects import (
    PRESENCE_QUERY_PREFIX,
    is_object_id,
    presence_query_subject,
)

# A gateway unheard for this long is not waited for (gateways beat every 2 s and are
# declared dead by their peers after 6 s; same bound).
GATEWAY_SILENCE_SECONDS = 6.0


class PresenceProbe:
    def __init__(self, *, timeout_seconds: float) -> None:
        self.id = f"notifier-{secrets.token_hex(6)}"
        self.timeout_seconds = timeout_seconds
        self._nc: NatsClient | None = None
        self._subs: list[Subscription] = []
        # gateway id -> monotonic time it was last heard
        self._gateways: dict[str, float] = {}

    async def start(self, nc: NatsClient) -> None:
        self._nc = nc
        self._subs = [
            await nc.subscribe(HEARTBEAT_SUBJECT, cb=self._on_heartbeat),
            await nc.subscribe(PRESENCE_QUERY_PREFIX + "*", cb=self._on_query),
        ]

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []

    def live_gateways(self) -> set[str]:
        now = time.monotonic()
        return {g for g, at in self._gateways.items() if now - at < GATEWAY_SILENCE_SECONDS}

    async def _on_heartbeat(self, msg: Msg) -> None:
        obj = decode(msg.data)
        gateway = gateway_of(obj) if obj is not None else None
        if obj is None or gateway is None or gateway == self.id:
            return
        if obj.get("leaving") is True:
            self._gateways.pop(gateway, None)
        else:
            self._gateways[gateway] = time.monotonic()

    async def _on_query(self, msg: Msg) -> None:
        obj = decode(msg.data)
        if not msg.reply or obj is None or obj.get("gateway") == self.id or self._nc is None:
            return
        reply = {"gateway": self.id, "seq": 0, "part": 0, "parts": 1, "users": []}
        with contextlib.suppress(Exception):
            await self._nc.publish(msg.reply, orjson.dumps(reply))

    async def online_in(self, room_id: str) -> set[str]:
        """The users with a socket subscribed to the room on any gateway that answered
        within the timeout."""
        if self._nc is None or not is_object_id(room_id):
            return set()
        expected = self.live_gateways()
        answered: dict[str, set[int]] = {}
        parts: dict[str, int] = {}
        online: set[str] = set()
        done = asyncio.Event()

        async def on_reply(msg: Msg) -> None:
            obj = decode(msg.data)
            gateway = gateway_of(obj) if obj is not None else None
            if obj is None or gateway is None:
                return
            part, count = int_of(obj.get("part")), int_of(obj.get("parts"))
            if part is None or count is None:
                return
            answered.setdefault(gateway, set()).add(part)
            parts[gateway] = count
            users = obj.get("users")
            if isinstance(users, list):
                online.update(u for u in map(user_id_of, users) if u is not None)
            if expected and all(g in answered and len(answered[g]) >= parts[g] for g in expected):
                done.set()

        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, cb=on_reply)
        try:
            await self._nc.publish(
                presence_query_subject(room_id),
                orjson.dumps({"gateway": self.id}),
                reply=inbox,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.timeout_seconds)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return online
