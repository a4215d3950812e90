"""Helpers of the gateway tests: real gateway processes and a WebSocket test client.

- :class:`GatewayProc`: ``python -m roomcast.gateway`` on a free port, ready when
  ``/readyz`` answers 200 (started from a thread so the test's event loop, which also
  serves the fake rooms gRPC server, keeps running).
- :class:`WsClient`: a ``websockets`` client that records every frame it receives and
  lets a test wait for a condition on them with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from roomcast.common.tokens import TokenSigner
from roomcast.testing.fakes import FakeRooms
from roomcast.testing.processes import ServiceProcess, free_port

# Deadline for one expected frame or condition: generous for a loaded 2-core machine.
WAIT = 10.0
TEST_ISSUER = "roomcast-auth"
TEST_AUDIENCE = "roomcast"


def new_id() -> str:
    """A fresh ObjectId-shaped id (room or user)."""
    return uuid.uuid4().hex[:24]


def room_with(rooms: FakeRooms, *user_ids: str) -> str:
    """A fresh room id whose members, in the fake rooms service, are ``user_ids``."""
    room = new_id()
    for uid in user_ids:
        rooms.add_member(room, uid)
    return room


@dataclass
class User:
    id: str
    name: str
    token: str


def make_user(
    signer: TokenSigner, *, ttl: int = 900, session_id: str | None = None, now: float | None = None
) -> User:
    uid = new_id()
    token, _ = signer.issue_access(
        user_id=uid,
        username=f"u{uid[:8]}",
        display_name=f"User {uid[:6]}",
        session_id=session_id,
        ttl_seconds=ttl,
        now=now,
    )
    return User(uid, f"u{uid[:8]}", token)


def base_env(nats_url: str, jwks_url: str, rooms_target: str) -> dict[str, str]:
    return {
        "ROOMCAST_GATEWAY_NATS_URL": nats_url,
        "ROOMCAST_GATEWAY_JWKS_URL": jwks_url,
        "ROOMCAST_GATEWAY_ROOMS_TARGET": rooms_target,
        "ROOMCAST_GATEWAY_LOG_LEVEL": "WARNING",
        "ROOMCAST_GATEWAY_SHUTDOWN_GRACE_SECONDS": "5",
    }


class GatewayProc(ServiceProcess):
    def __init__(self, env: dict[str, str], name: str = "gateway") -> None:
        self.gw_port = free_port()
        full = {**env, "ROOMCAST_GATEWAY_PORT": str(self.gw_port)}
        full.setdefault("ROOMCAST_GATEWAY_INSTANCE_NAME", name)
        super().__init__(
            "gateway", full, ready_url=f"http://127.0.0.1:{self.gw_port}/readyz", name=name
        )

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gw_port}/v1/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.gw_port}"

    async def astart(self) -> GatewayProc:
        await asyncio.to_thread(self.start)
        return self

    async def astop(self) -> int | None:
        return await asyncio.to_thread(self.stop)

    async def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample on /metrics (0 when absent)."""
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"{self.http_url}/metrics")).text
        key = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(key + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


class Spawner:
    """Starts gateway processes for one test and stops them all (``stop_all``, also at
    fixture teardown), including one that failed to become ready."""

    def __init__(self) -> None:
        self.started: list[GatewayProc] = []

    async def __call__(self, env: dict[str, str], name: str) -> GatewayProc:
        gw = GatewayProc(env, name=name)
        self.started.append(gw)
        return await gw.astart()

    async def stop_all(self) -> None:
        for gw in self.started:
            await gw.astop()


@dataclass
class Closed:
    code: int | None
    reason: str


@dataclass
class WsClient:
    ws: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)
    closed: Closed | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    user: User | None = None

    @classmethod
    async def open(
        cls, url: str, user: User | None = None, *, origin: str | None = None, **kwargs: Any
    ) -> WsClient:
        headers = {"Origin": origin} if origin else None
        ws = await connect(
            url, additional_headers=headers, max_size=None, open_timeout=WAIT, **kwargs
        )
        client = cls(ws)
        client._reader = asyncio.create_task(client._read())
        if user is not None:
            try:
                await client.auth(user)
            except BaseException:
                await client.close()
                raise
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(orjson.loads(raw))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            self.closed = Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "")
            self._changed.set()

    async def wait_until(
        self,
        condition: Callable[[], Any],
        *,
        within: float = WAIT,
        what: str = "condition",
        fail_closed_ok: bool = False,
    ) -> Any:
        """Wait for ``condition()`` to be truthy; fail fast if the socket closes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            result = condition()
            if result:
                return result
            if self.closed is not None and not fail_closed_ok:
                raise ConnectionError(f"socket closed ({self.closed}) while waiting for {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {what}; last frames: {self.frames[-5:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def expect(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        start: int = 0,
        within: float = WAIT,
        what: str = "",
    ) -> dict[str, Any]:
        """The first frame (from index ``start``) matching ``predicate``, waited for."""

        def find() -> dict[str, Any] | None:
            for frame in self.frames[start:]:
                if predicate(frame):
                    return frame
            return None

        found: dict[str, Any] = await self.wait_until(find, within=within, what=what or "frame")
        return found

    async def expect_type(self, kind: str, **fields: Any) -> dict[str, Any]:
        return await self.expect(
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
            what=f"{kind} {fields}",
        )

    async def send_json(self, obj: Any) -> None:
        """Send one frame; a socket the server already dropped raises ConnectionError,
        the same as a drop noticed while waiting for a reply."""
        try:
            await self.ws.send(orjson.dumps(obj).decode())
        except ConnectionClosed as exc:
            raise ConnectionError(f"socket closed ({exc.rcvd}) before sending") from exc

    async def auth(self, user: User) -> dict[str, Any]:
        self.user = user
        await self.send_json({"type": "auth", "token": user.token})
        return await self.expect_type("ready")

    async def subscribe(self, room: str, since: int | None = None) -> dict[str, Any]:
        before = len(self.frames)
        frame: dict[str, Any] = {"type": "subscribe", "room": room}
        if since is not None:
            frame["since"] = since
        await self.send_json(frame)
        return await self.expect(
            lambda f: (
                (f.get("room") == room and f.get("type") == "subscribed")
                or (f.get("type") == "error" and f.get("ref") == room)
            ),
            start=before,
            what=f"subscribed {room}",
        )

    async def send_text(
        self, room: str, content: str, *, client_id: str | None = None, to: str | None = None
    ) -> dict[str, Any]:
        cid = client_id or uuid.uuid4().hex[:16]
        frame: dict[str, Any] = {
            "type": "send",
            "room": room,
            "client_id": cid,
            "body": {"type": "text", "content": content},
        }
        if to is not None:
            frame["to"] = to
        before = len(self.frames)
        await self.send_json(frame)
        return await self.expect(
            lambda f: (
                f.get("type") in ("ack", "error")
                and (f.get("client_id") == cid or f.get("ref") == cid)
            ),
            start=before,
            what=f"ack {cid}",
        )

    def messages(self, room: str) -> list[dict[str, Any]]:
        """message and skip frames of a room, in arrival order."""
        return [
            f for f in self.frames if f.get("type") in ("message", "skip") and f["room"] == room
        ]

    async def wait_messages(
        self, room: str, count: int, within: float = WAIT
    ) -> list[dict[str, Any]]:
        await self.wait_until(
            lambda: len(self.messages(room)) >= count,
            within=within,
            what=f"{count} messages in {room} (have {len(self.messages(room))})",
        )
        return self.messages(room)

    async def wait_closed(self, within: float = WAIT) -> Closed:
        closed: Closed = await self.wait_until(
            lambda: self.closed, within=within, what="close", fail_closed_ok=True
        )
        return closed

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


# The ``open_ws`` fixture: opens a WsClient (same arguments as ``WsClient.open``) that
# is closed at the test's teardown, whether the test passed, failed or stopped half way.
OpenWs = Callable[..., Awaitable[WsClient]]


def assert_chain(frames: list[dict[str, Any]], start_prev: int | None = None) -> None:
    """seq strictly increasing and each prev equal to the previous frame's seq."""
    prev = start_prev
    for frame in frames:
        if prev is not None:
            assert frame["prev"] == prev, (
                f"chain broken at seq {frame['seq']}: {frame['prev']} != {prev}"
            )
        prev = frame["seq"]


# --- a raw WebSocket client for the slow-reader test ------------------------------------


def raw_ws_connect(port: int, *, rcvbuf: int = 4096) -> socket.socket:
    """A blocking socket that completes the WebSocket handshake and then reads only
    when told to (a reader that stops reading)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    key = os.urandom(16).hex()[:22] + "=="
    sock.sendall(
        b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key.encode() + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("handshake failed")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def raw_ws_send(sock: socket.socket, obj: Any) -> None:
    payload = orjson.dumps(obj)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    header = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    sock.sendall(header + mask + masked)


def raw_ws_read_until_close(sock: socket.socket, timeout: float) -> int | None:
    """Read frames until a close frame; return its code (None if the socket ended)."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            offset = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n = int.from_bytes(buf[2:4], "big")
                offset = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n = int.from_bytes(buf[2:10], "big")
                offset = 10
            if len(buf) < offset + n:
                break
            opcode = buf[0] & 0x0F
            payload = buf[offset : offset + n]
            buf = buf[offset + n :]
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        try:
            chunk = sock.recv(1 << 20)
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk


# --- a TCP proxy the test can cut (to take a gateway off NATS while NATS stays up) ------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` drops every connection and
    refuses new ones until ``restore()``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepting = True

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.writers.difference_update((writer, up_writer))

    def cut(self) -> None:
        self.accepting = False
        for writer in list(self.writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.accepting = True

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
