"""A small in-test fake of the Roomcast gateway's WebSocket protocol for SDK unit tests.

It speaks the contract of docs/protocol.md (auth/ready, subscribe with since and replay,
send/ack with client_id de-duplication, message/skip chains with seq/prev, close codes)
on top of the ``websockets`` server, an implementation independent of the SDK's picows
client. Several FakeGateway servers can share one FakeBackend, the way real gateways
share NATS JetStream, so reconnect-elsewhere-and-resume is observable.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WsClosed

from roomcast.testing import polling

Frame = dict[str, Any]

# Generous bound for test conditions on a loaded 2-core machine.
CONDITION_TIMEOUT = 10.0
# Between two looks at a condition: the fakes live in this process, so a look costs
# microseconds and a short poll keeps the tests fast.
CONDITION_POLL_SECONDS = 0.005


class FakeConn:
    def __init__(self, ws: ServerConnection, user: Frame) -> None:
        self.ws = ws
        self.user = user
        self.subs: set[str] = set()

    async def send(self, frame: Frame) -> None:
        with contextlib.suppress(WsClosed):
            await self.ws.send(json.dumps(frame))


class FakeBackend:
    """Shared state: users, rooms as seq chains, the send de-duplication table."""

    def __init__(self) -> None:
        self.users_by_token: dict[str, Frame] = {}
        self.rooms: dict[str, list[Frame]] = {}
        self.dedupe: dict[tuple[str, str], Frame] = {}
        self.gateways: list[FakeGateway] = []
        self.forbidden_rooms: set[str] = set()
        #: Error codes the next subscribes fail with, one per subscribe (then they work).
        self.fail_subscribes: list[str] = []
        #: Replay at most this many messages on subscribe(since) (then truncated=true).
        self.replay_limit: int | None = None
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self.lock = asyncio.Lock()

    def add_user(self, username: str, token: str | None = None) -> tuple[str, Frame]:
        user = {"id": f"{len(self.users_by_token) + 1:024x}", "username": username}
        user |= {"display_name": username.title(), "avatar_url": None}
        token = token or f"token-{username}"
        self.users_by_token[token] = user
        return token, user

    def head(self, room: str) -> int:
        chain = self.rooms.get(room)
        return int(chain[-1]["seq"]) if chain else 0

    def messages(self, room: str) -> list[Frame]:
        return list(self.rooms.get(room, []))

    async def publish(
        self,
        room: str,
        sender: Frame,
        content: str,
        *,
        to: str | None = None,
        client_id: str | None = None,
        fanout: bool = True,
    ) -> tuple[Frame, bool]:
        async with self.lock:
            if client_id is not None and (sender["id"], client_id) in self.dedupe:
                return self.dedupe[(sender["id"], client_id)], True
            record: Frame = {
                "type": "message",
                "room": room,
                "id": f"m{next(self._ids)}",
                "seq": next(self._seq),
                "prev": self.head(room),
                "sender": sender,
                "body": {"type": "text", "content": content},
                "sent_at": time.time(),
            }
            if to is not None:
                record["to"] = to
            if client_id is not None:
                record["client_id"] = client_id  # stored records carry it, as the gateway's
            self.rooms.setdefault(room, []).append(record)
            if client_id is not None:
                self.dedupe[(sender["id"], client_id)] = record
            if fanout:
                for gateway in self.gateways:
                    for conn in list(gateway.conns):
                        if room in conn.subs:
                            await conn.send(frame_for(record, conn.user["id"]))
            return record, False


def frame_for(record: Frame, user_id: str) -> Frame:
    """The message itself, or a skip when it is a private message for someone else."""
    to = record.get("to")
    if to is None or user_id in (to, record["sender"]["id"]):
        return record
    return {"type": "skip", "room": record["room"], "seq": record["seq"], "prev": record["prev"]}


def error_frame(code: str, ref: str | None) -> Frame:
    frame: Frame = {"type": "error", "code": code, "message": f"{code} (fake gateway)"}
    if ref is not None:
        frame["ref"] = ref
    return frame


class FakeGateway:
    """One gateway replica on a free port (``url`` is its http base URL)."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend
        self.received: list[Frame] = []
        self.conns: set[FakeConn] = set()
        #: Store sends but never ack them (the gateway "dies" between publish and ack).
        self.hold_acks = False
        #: Refuse sends and subscribes with gateway_restarting, then close 1012.
        self.draining = False
        #: Refuse this many sends with rate_limited (ref = client_id) before accepting.
        self.rate_limit_sends = 0
        self.auth_count = 0
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeGateway:
        self._server = await serve(self._handler, "127.0.0.1", 0, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        self.backend.gateways.append(self)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def frames(self, kind: str) -> list[Frame]:
        return [f for f in self.received if f.get("type") == kind]

    async def close_all(self, code: int, reason: str = "") -> None:
        for conn in list(self.conns):
            await conn.ws.close(code, reason)

    async def push(self, frame: Frame) -> None:
        """Send a raw frame to every connection (to inject gaps, duplicates, events)."""
        for conn in list(self.conns):
            await conn.send(frame)

    async def _handler(self, ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path != "/v1/ws":
            await ws.close(1008, "wrong path")
            return
        try:
            first = json.loads(await ws.recv())
        except WsClosed:
            return
        self.received.append(first)
        user = self.backend.users_by_token.get(first.get("token", ""))
        if first.get("type") != "auth" or user is None:
            await ws.send(json.dumps({"type": "error", "code": "invalid_token", "message": "no"}))
            await ws.close(4001, "invalid_token")
            return
        self.auth_count += 1
        conn = FakeConn(ws, user)
        self.conns.add(conn)
        try:
            await conn.send({"type": "ready", "user": user})
            async for raw in ws:
                frame = json.loads(raw)
                self.received.append(frame)
                await self._handle(conn, frame)
        except WsClosed:
            pass
        finally:
            self.conns.discard(conn)

    async def _handle(self, conn: FakeConn, frame: Frame) -> None:
        kind = frame.get("type")
        backend = self.backend
        ref = frame.get("client_id", frame.get("room"))
        if self.draining and kind in ("send", "subscribe"):
            await conn.send(error_frame("gateway_restarting", ref))
            await conn.ws.close(1012, "gateway restarting")
            return
        if kind == "auth":  # renewal on a live socket
            user = backend.users_by_token.get(frame.get("token", ""))
            if user is None or user["id"] != conn.user["id"]:
                await conn.send(error_frame("invalid_token", None))
            else:
                self.auth_count += 1
                await conn.send({"type": "ready", "user": user})
        elif kind == "subscribe":
            room = frame["room"]
            if room in backend.forbidden_rooms or backend.fail_subscribes:
                code = backend.fail_subscribes.pop(0) if backend.fail_subscribes else "forbidden"
                await conn.send(error_frame(code, room))
                return
            async with backend.lock:
                since = frame.get("since")
                missed = (
                    [] if since is None else [m for m in backend.messages(room) if m["seq"] > since]
                )
                reply: Frame = {"type": "subscribed", "room": room, "seq": backend.head(room)}
                if backend.replay_limit is not None and len(missed) > backend.replay_limit:
                    missed = missed[-backend.replay_limit :]
                    reply["truncated"] = True
                await conn.send(reply)
                for record in missed:
                    await conn.send(frame_for(record, conn.user["id"]))
                conn.subs.add(room)
        elif kind == "unsubscribe":
            conn.subs.discard(frame["room"])
            await conn.send({"type": "unsubscribed", "room": frame["room"]})
        elif kind == "send":
            cid = frame["client_id"]
            if frame["room"] in backend.forbidden_rooms:
                await conn.send(error_frame("forbidden", cid))
                return
            if self.rate_limit_sends > 0:
                self.rate_limit_sends -= 1
                await conn.send(error_frame("rate_limited", cid))
                return
            record, duplicate = await backend.publish(
                frame["room"],
                conn.user,
                frame["body"]["content"],
                to=frame.get("to"),
                client_id=cid,
            )
            if not self.hold_acks:
                ack: Frame = {
                    "type": "ack",
                    "client_id": cid,
                    "id": record["id"],
                    "seq": record["seq"],
                }
                if duplicate:
                    ack["duplicate"] = True
                await conn.send(ack)
        elif kind == "ping":
            await conn.send({"type": "pong"})


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def start_gateway(
    backend: FakeBackend,
) -> AsyncIterator[Callable[[], Awaitable[FakeGateway]]]:
    started: list[FakeGateway] = []

    async def start() -> FakeGateway:
        gateway = await FakeGateway(backend).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


Eventually = Callable[[Callable[[], bool], str], Awaitable[None]]


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(condition, what)``: poll a condition with a deadline."""

    async def wait(condition: Callable[[], bool], what: str) -> None:
        await polling.eventually(
            condition, what, within=CONDITION_TIMEOUT, poll=CONDITION_POLL_SECONDS
        )

    return wait
