"""The stand-ins behave like the services they replace."""

from __future__ import annotations

import grpc
import httpx
import pytest

from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.tokens import TokenVerifier
from roomcast.rpc.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.plugin import TEST_AUDIENCE, TEST_ISSUER, IssueToken


async def test_jwks_server_serves_keys_a_verifier_accepts(
    jwks_server: JwksServer, issue_token: IssueToken
) -> None:
    verifier = TokenVerifier.from_url(jwks_server.url, issuer=TEST_ISSUER, audience=TEST_AUDIENCE)
    claims = await verifier.verify(issue_token(user_id="a" * 24))
    assert claims.user_id == "a" * 24
    async with httpx.AsyncClient() as client:
        missing = await client.get(jwks_server.url.replace("jwks.json", "other"))
    assert missing.status_code == 404


async def test_fake_rooms_checks_token_and_membership(
    fake_rooms: FakeRooms, issue_token: IssueToken
) -> None:
    room, member, stranger = "1" * 24, "2" * 24, "3" * 24
    fake_rooms.add_member(room, member)
    async with grpc.aio.insecure_channel(fake_rooms.target) as channel:
        stub = rooms_pb2_grpc.RoomsStub(channel)
        request = rooms_pb2.CheckMembershipRequest(room_id=room)
        ok = await stub.CheckMembership(request, metadata=bearer_metadata(issue_token(member)))
        assert ok.member
        assert ok.role == rooms_pb2.ROLE_MEMBER
        no = await stub.CheckMembership(request, metadata=bearer_metadata(issue_token(stranger)))
        assert not no.member
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CheckMembership(request)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fake_rooms.calls == 2
