"""Every write behind a rooms reply is journaled and majority-acknowledged before the
reply: observed on the wire (PyMongo command monitoring) against real SecantusDB, with
the MongoDB client built exactly as the service builds it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from rooms_harness import IssueToken, Rooms, User, rooms_settings

from roomcast.common.clock import now_ms
from roomcast.common.mongo import service_mongo_client
from roomcast.common.natsconn import connect_nats
from roomcast.common.tokens import TokenVerifier
from roomcast.rooms.server import start_server
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc as pb_grpc
from roomcast.testing.mongowire import DURABLE, WRITE_COMMANDS, WriteRecorder, recording_writes


def _in_a_minute() -> int:
    return now_ms() + 60_000


async def _code(rooms: Rooms, owner: User, room: pb.Room) -> str:
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
    return got.room.invite_code


@pytest.fixture
def recorder(mongo_db_name: str) -> Iterator[WriteRecorder]:
    with recording_writes(mongo_db_name) as listener:
        yield listener


async def test_membership_and_role_writes_are_journaled_and_majority_acknowledged(
    mongo_url: str,
    mongo_db_name: str,
    nats_url: str,
    verifier: TokenVerifier,
    issue_token: IssueToken,
    recorder: WriteRecorder,
) -> None:
    settings = rooms_settings(mongo_url, mongo_db_name, nats_url)
    mongo = service_mongo_client(settings, app_name="roomcast-rooms")
    nc = await connect_nats(nats_url, name="rooms-durability-test")
    running = await start_server(
        settings, verifier=verifier, mongo_client=mongo, nats_client=nc, port=0
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    rooms = Rooms(running, channel, pb_grpc.RoomsStub(channel), issue_token, settings, nc)
    try:
        owner, admin, member, other = rooms.user(), rooms.user(), rooms.user(), rooms.user()
        room = await rooms.create(owner, visibility=pb.VISIBILITY_PRIVATE)
        for user in (admin, member):
            await rooms.join(user, room)
        await rooms.set_role(owner, room, admin, pb.ROLE_ADMIN)
        await rooms.stub.RemoveMember(
            pb.RemoveMemberRequest(room_id=room.id, user_id=member.id), metadata=admin.md
        )
        await rooms.stub.UpdateRoom(
            pb.UpdateRoomRequest(room_id=room.id, topic="t", visibility=pb.VISIBILITY_PUBLIC),
            metadata=owner.md,
        )
        # Moderation: the restrictions collection (ban, mute) and the audit log.
        await rooms.join(other, room, await _code(rooms, owner, room))
        await rooms.stub.MuteMember(
            pb.MuteMemberRequest(room_id=room.id, user_id=other.id, until_ms=_in_a_minute()),
            metadata=owner.md,
        )
        await rooms.stub.BanMember(
            pb.BanMemberRequest(room_id=room.id, user_id=other.id), metadata=owner.md
        )
        await rooms.stub.UnbanMember(
            pb.UnbanMemberRequest(room_id=room.id, user_id=other.id), metadata=owner.md
        )
        await rooms.set_role(owner, room, admin, pb.ROLE_OWNER)  # ownership transfer
        await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=owner.md)
        await rooms.stub.OpenDirectRoom(
            pb.OpenDirectRoomRequest(user_id=other.id), metadata=member.md
        )
        await rooms.stub.DeleteRoom(pb.DeleteRoomRequest(room_id=room.id), metadata=admin.md)
    finally:
        await channel.close()
        await running.stop(1.0)
        await nc.close()
        await mongo.close()

    # Every kind of write the scenario makes was seen (the check below is not vacuous).
    assert {name for name, _, _ in recorder.writes} == WRITE_COMMANDS, recorder.writes
    written = {collection for _, collection, _ in recorder.writes}
    assert {"restrictions", "audit_log", "memberships", "rooms"} <= written, written
    weak = [(name, concern) for name, _, concern in recorder.writes if concern != DURABLE]
    assert not weak, f"writes not journaled + majority: {weak}"
    assert not recorder.concern_errors
