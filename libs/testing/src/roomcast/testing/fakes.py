"""Small stand-ins for Roomcast's own services (never for NATS or MongoDB), so a service
can be tested before the whole stack is up. End-to-end tests use the real services.

- :class:`JwksServer`: serves a signer's JWKS over real HTTP, as auth does.
- :class:`FakeRooms`: a real grpc.aio server whose membership table is a dict; it
  verifies the caller's token like the real rooms service.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from roomcast.common.errors import Unauthenticated
from roomcast.common.grpcmeta import token_from_metadata
from roomcast.common.tokens import TokenVerifier
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc


class JwksServer:
    """``GET /.well-known/jwks.json`` on a free loopback port, in a background thread."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class FakeRoom:
    visibility: rooms_pb2.Visibility.ValueType = rooms_pb2.VISIBILITY_PUBLIC
    members: dict[str, rooms_pb2.Role.ValueType] = field(default_factory=dict)


class _FakeRoomsServicer(rooms_pb2_grpc.RoomsServicer):
    def __init__(self, owner: FakeRooms) -> None:
        self.owner = owner

    async def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        token = token_from_metadata(context.invocation_metadata())
        if token is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing token")
        try:
            claims = await self.owner.verifier.verify(token or "")
        except Unauthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        self.owner.calls += 1
        return claims.user_id

    async def CheckMembership(
        self,
        request: rooms_pb2.CheckMembershipRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> rooms_pb2.CheckMembershipResponse:
        user_id = await self._caller(context)
        self.owner.method_calls["CheckMembership"] += 1
        room = self.owner.rooms.get(request.room_id)
        if room is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "room not found")
        assert room is not None
        if request.HasField("user_id"):
            # "Is this other user a member?" is answered to members only.
            if user_id not in room.members:
                await context.abort(grpc.StatusCode.NOT_FOUND, "room not found")
            user_id = request.user_id
        role = room.members.get(user_id)
        if role is None:
            if room.visibility != rooms_pb2.VISIBILITY_PUBLIC:
                await context.abort(grpc.StatusCode.NOT_FOUND, "room not found")
            return rooms_pb2.CheckMembershipResponse(member=False, visibility=room.visibility)
        answer = rooms_pb2.CheckMembershipResponse(
            member=True, role=role, visibility=room.visibility
        )
        hold = self.owner.hold
        if hold is not None:
            self.owner.held += 1
            await hold.wait()
        return answer

    async def FilterMembers(
        self,
        request: rooms_pb2.FilterMembersRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> rooms_pb2.FilterMembersResponse:
        if not self.owner.filter_members_implemented:
            # An older rooms without the RPC: gRPC refuses it before any token check.
            self.owner.method_calls["FilterMembers"] += 1
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        user_id = await self._caller(context)
        self.owner.method_calls["FilterMembers"] += 1
        room = self.owner.rooms.get(request.room_id)
        if room is None or user_id not in room.members:  # asked by members only
            await context.abort(grpc.StatusCode.NOT_FOUND, "room not found")
        assert room is not None
        answer = rooms_pb2.FilterMembersResponse(
            members=[
                rooms_pb2.FilteredMember(user_id=u, role=room.members[u])
                for u in request.user_ids
                if u in room.members
            ],
            visibility=room.visibility,
        )
        hold = self.owner.hold
        if hold is not None:
            self.owner.held += 1
            await hold.wait()
        return answer


class FakeRooms:
    """A real gRPC server answering ``CheckMembership`` and ``FilterMembers`` from
    :attr:`rooms`.

    ``rooms[room_id].members[user_id] = rooms_pb2.ROLE_MEMBER`` adds a member;
    :attr:`calls` counts authenticated calls (to observe caching), :attr:`method_calls`
    counts them per RPC. While :attr:`hold`
    is set to an unset event, answers are decided and then held back until it is set
    (:attr:`held` counts them): an answer in flight while the membership changes.
    ``filter_members_implemented=False`` answers ``FilterMembers`` with UNIMPLEMENTED
    (still counted in :attr:`method_calls`), as a rooms older than the RPC does.
    """

    def __init__(self, verifier: TokenVerifier, *, filter_members_implemented: bool = True) -> None:
        self.verifier = verifier
        self.filter_members_implemented = filter_members_implemented
        self.rooms: dict[str, FakeRoom] = {}
        self.calls = 0
        self.method_calls: collections.Counter[str] = collections.Counter()
        self.hold: asyncio.Event | None = None
        self.held = 0
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_member(
        self, room_id: str, user_id: str, role: rooms_pb2.Role.ValueType = rooms_pb2.ROLE_MEMBER
    ) -> None:
        self.rooms.setdefault(room_id, FakeRoom()).members[user_id] = role

    async def start(self) -> None:
        self._server = grpc.aio.server()
        # Only CheckMembership and FilterMembers are implemented; the other RPCs
        # answer UNIMPLEMENTED.
        servicer = _FakeRoomsServicer(self)  # type: ignore[abstract]
        rooms_pb2_grpc.add_RoomsServicer_to_server(servicer, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
