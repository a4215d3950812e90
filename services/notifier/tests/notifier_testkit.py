"""Helpers of the notifier's tests: two local receivers speaking the real protocols (a
Web Push service whose requests the test decrypts with the subscription's private keys,
and a webhook receiver) and a browser's subscription keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import nats
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from roomcast.common.chatrecord import Sender, encode_change, encode_message, utc_timestamp
from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.subjects import room_subject
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc

SERVICE_USER = "notifier-svc"
SERVICE_PASSWORD = "a long service password"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """A local HTTP server recording every POST; answers ``status_for(path, n)`` to the
    n-th request on a path."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.status_for: Callable[[str, int], int] = lambda path, n: 201
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner.lock:
                    owner.requests.append(
                        Received(self.path, dict(self.headers), body, time.monotonic())
                    )
                    n = sum(1 for r in owner.requests if r.path == self.path)
                self.send_response(owner.status_for(self.path, n))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]


@dataclass
class BrowserKeys:
    """What a browser's push manager holds for one subscription."""

    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        point = self.private.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        return b64url(point)

    def subscription(self, endpoint: str) -> dict[str, Any]:
        return {
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth)},
        }


def vapid_private_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def verify_webhook(secret: bytes, header: str, body: bytes) -> bool:
    """A receiver's check of ``Roomcast-Signature: t=<ts>,v1=<hex>``, written from the
    documented scheme (not with the notifier's code)."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 300


if TYPE_CHECKING:
    from roomcast.testing.processes import ServiceProcess

# start_notifier(env) -> (process, base URL): the notifier process, started and ready.
StartNotifier = Callable[[dict[str, str]], Awaitable[tuple["ServiceProcess", str]]]


@dataclass
class User:
    id: str
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class World:
    """Users through auth's REST API and rooms through its gRPC API, as the gateway
    would call them, and chat records published to JetStream as a gateway publishes
    them (roomcast.common.chatrecord)."""

    def __init__(self, auth_url: str, rooms_target: str, nats_url: str) -> None:
        self.auth_url = auth_url
        self.rooms_target = rooms_target
        self.nats_url = nats_url

    async def user(self, prefix: str) -> User:
        username = f"{prefix}{uuid.uuid4().hex[:10]}"
        body = {"username": username, "password": SERVICE_PASSWORD}
        async with httpx.AsyncClient(base_url=self.auth_url) as http:
            assert (await http.post("/v1/auth/register", json=body)).status_code == 201
            r = await http.post("/v1/auth/login", json=body)
        assert r.status_code == 200, r.text
        login = r.json()
        return User(login["user"]["id"], username, login["access_token"])

    async def _rooms(self, method: str, request: Any, user: User) -> Any:
        async with grpc.aio.insecure_channel(self.rooms_target) as channel:
            stub = rooms_pb2_grpc.RoomsStub(channel)
            return await getattr(stub, method)(request, metadata=bearer_metadata(user.token))

    async def dm(self, a: User, b: User) -> str:
        r = await self._rooms("OpenDirectRoom", rooms_pb2.OpenDirectRoomRequest(user_id=b.id), a)
        return str(r.room.id)

    async def room(self, owner: User, *members: User) -> str:
        request = rooms_pb2.CreateRoomRequest(
            name=f"r{uuid.uuid4().hex[:8]}", visibility=rooms_pb2.VISIBILITY_PUBLIC
        )
        room_id = str((await self._rooms("CreateRoom", request, owner)).room.id)
        for member in members:
            await self._rooms("JoinRoom", rooms_pb2.JoinRoomRequest(room_id=room_id), member)
        return room_id

    @staticmethod
    def record(room: str, sender: User, content: str, to: str | None = None, **extra: Any) -> bytes:
        raw = encode_message(
            room=room,
            sender=Sender(sender.id, sender.username, sender.username.title(), None),
            content=content,
            to=to,
            client_id=uuid.uuid4().hex,
            sent_at=utc_timestamp(),
        )
        return orjson.dumps({**orjson.loads(raw), **extra}) if extra else raw

    @staticmethod
    def change(room: str, sender: User, target_seq: int, content: str | None) -> bytes:
        """An edit (``content``) or a delete (None) of message ``target_seq``."""
        return encode_change(
            kind="edit" if content is not None else "delete",
            room=room,
            target_seq=target_seq,
            sender=Sender(sender.id, sender.username, sender.username.title(), None),
            content=content,
            client_id=uuid.uuid4().hex,
            at=utc_timestamp(),
        )

    async def publish(self, room: str, *records: bytes) -> list[int]:
        """Publish records in order; their stream sequences."""
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            return [int((await js.publish(room_subject(room), r)).seq) for r in records]
        finally:
            await nc.close()


async def inbox(base: str, user: User, **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{base}/v1/notifications", params=params, headers=user.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def metric(base: str, name: str, **labels: str) -> float:
    """One sample of the process's /metrics (0 when absent)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{base}/metrics")).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0
