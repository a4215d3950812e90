"""Helpers of the rooms tests: the real grpc.aio server on a free port, backed by a
real SecantusDB database and a real nats-server, reached through a real channel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from roomcast.common.grpcmeta import bearer_metadata
from roomcast.rooms.server import RunningRooms
from roomcast.rooms.settings import Settings
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc as pb_grpc

IssueToken = Callable[..., str]


def new_user_id() -> str:
    return uuid.uuid4().hex[:24]


@dataclass
class User:
    id: str
    token: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.token)


@dataclass
class Rooms:
    """A running rooms server and a client for it."""

    running: RunningRooms
    channel: grpc.aio.Channel
    stub: pb_grpc.RoomsAsyncStub
    issue_token: IssueToken
    settings: Settings
    nats: NatsClient

    def user(self, *, roles: tuple[str, ...] = ()) -> User:
        uid = new_user_id()
        return User(uid, self.issue_token(user_id=uid, roles=roles))

    async def create(
        self,
        owner: User,
        name: str = "room",
        visibility: int = pb.VISIBILITY_PUBLIC,
        topic: str = "",
    ) -> pb.Room:
        resp = await self.stub.CreateRoom(
            pb.CreateRoomRequest(name=name, visibility=visibility, topic=topic), metadata=owner.md
        )
        return resp.room

    async def join(self, user: User, room: pb.Room, code: str = "") -> pb.JoinRoomResponse:
        return await self.stub.JoinRoom(
            pb.JoinRoomRequest(room_id=room.id, invite_code=code or room.invite_code),
            metadata=user.md,
        )

    async def set_role(self, actor: User, room: pb.Room, target: User, role: int) -> pb.Member:
        resp = await self.stub.SetMemberRole(
            pb.SetMemberRoleRequest(room_id=room.id, user_id=target.id, role=role),
            metadata=actor.md,
        )
        return resp.member


def rooms_settings(mongo_url: str, mongo_db: str, nats_url: str, **extra: Any) -> Settings:
    return Settings(
        mongo_url=mongo_url,
        mongo_db=mongo_db,
        nats_url=nats_url,
        # Small, so "MongoDB down" turns into UNAVAILABLE quickly in tests.
        mongo_timeout_ms=1000,
        host="127.0.0.1",
        **extra,
    )


class EventSink:
    """Collects JSON events from ``chat.events.room.>`` on a separate connection."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.subjects: list[str] = []

    async def handler(self, msg: Msg) -> None:
        self.subjects.append(msg.subject)
        self.events.append(orjson.loads(msg.data))

    async def wait_for(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + within
        while len(self.events) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"expected {count} events, got {self.events}")
            await asyncio.sleep(0.01)
        return self.events

    async def wait_for_type(self, type_: str, within: float = 5.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        while not self.of_type(type_):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no {type_} event, got {self.events}")
            await asyncio.sleep(0.01)
        return self.of_type(type_)[0]

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]


async def code_of(call: Any) -> grpc.StatusCode:
    """Await a call; its status code (OK when it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
