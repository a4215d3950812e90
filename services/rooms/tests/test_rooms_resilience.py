"""Dependencies failing and coming back; health, reflection and metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from rooms_harness import EventSink, IssueToken, Rooms, User, code_of, new_user_id, rooms_settings

from roomcast.common.mongo import connect_mongo
from roomcast.common.natsconn import connect_nats
from roomcast.common.tokens import TokenVerifier
from roomcast.rooms.server import start_server
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc as pb_grpc
from roomcast.testing.processes import MongoServer, NatsServer


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def rooms_on(
    mongo_url: str, nats_url: str, verifier: TokenVerifier, issue_token: IssueToken
) -> AsyncIterator[Rooms]:
    settings = rooms_settings(mongo_url, "rooms_resilience", nats_url)
    mongo = connect_mongo(mongo_url, timeout_ms=settings.mongo_timeout_ms, app_name="t")
    nc = await connect_nats(nats_url, name="t")
    running = await start_server(
        settings, verifier=verifier, mongo_client=mongo, nats_client=nc, port=0
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Rooms(running, channel, pb_grpc.RoomsStub(channel), issue_token, settings, nc)
    finally:
        await channel.close()
        await running.stop(1.0)
        await nc.close()
        await mongo.close()


async def test_mongodb_down_is_unavailable_then_recovers(
    restartable_mongo: MongoServer, nats_url: str, verifier: TokenVerifier, issue_token: IssueToken
) -> None:
    async with rooms_on(restartable_mongo.url, nats_url, verifier, issue_token) as rooms:
        owner = rooms.user()
        room = await rooms.create(owner)
        before = sample("roomcast_rooms_grpc_requests_total", method="GetRoom", code="UNAVAILABLE")
        restartable_mongo.stop()
        for call in (
            rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md),
            rooms.stub.CreateRoom(
                pb.CreateRoomRequest(name="x", visibility=pb.VISIBILITY_PUBLIC), metadata=owner.md
            ),
            rooms.stub.CheckMembership(
                pb.CheckMembershipRequest(room_id=room.id), metadata=owner.md
            ),
        ):
            started = time.monotonic()
            with_error = None
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                with_error = exc
            elapsed = time.monotonic() - started
            assert with_error is not None
            assert with_error.code() == grpc.StatusCode.UNAVAILABLE
            assert with_error.details().startswith("mongodb_unavailable: ")
            # mongo_timeout_ms=1000: server selection gives up after ~1 s.
            assert elapsed < 5.0, elapsed
        after = sample("roomcast_rooms_grpc_requests_total", method="GetRoom", code="UNAVAILABLE")
        assert after == before + 1
        restartable_mongo.start()
        deadline = time.monotonic() + 15
        codes = []
        while True:
            code = await code_of(
                rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
            )
            codes.append(code)
            if code == grpc.StatusCode.OK or time.monotonic() > deadline:
                break
        assert codes[-1] == grpc.StatusCode.OK, codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
        await rooms.create(owner)


async def test_nats_down_does_not_fail_changes_and_events_resume(
    rooms: Rooms, nats_server: NatsServer
) -> None:
    owner, user = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    nats_server.stop()
    # The change is stored even though nobody can be told right now.
    await rooms.join(user, room)
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.id), metadata=owner.md)
    assert got.room.member_count == 2
    nats_server.start()
    sink = EventSink()
    listener = await nats.connect(nats_server.url)
    try:
        await listener.subscribe("chat.events.room.>", cb=sink.handler)
        await listener.flush()
        deadline = time.monotonic() + 15
        while not rooms.nats.is_connected:
            assert time.monotonic() < deadline, "rooms never reconnected to NATS"
            await asyncio.sleep(0.05)
        await rooms.stub.LeaveRoom(pb.LeaveRoomRequest(room_id=room.id), metadata=user.md)
        # (The join's event, buffered while disconnected, may arrive first: nats-py
        # flushes its pending buffer on reconnect.)
        left = await sink.wait_for_type("member_left", within=10)
        assert left["user_id"] == user.id
    finally:
        await listener.close()


async def test_closed_nats_connection_counts_a_publish_failure(rooms: Rooms) -> None:
    owner, user = rooms.user(), rooms.user()
    room = await rooms.create(owner)
    before = sample("roomcast_rooms_event_publish_failures_total", type="member_joined")
    await rooms.nats.close()
    joined = await rooms.join(user, room)
    assert joined.member.user_id == user.id
    after = sample("roomcast_rooms_event_publish_failures_total", type="member_joined")
    assert after == before + 1


async def test_health_service_reports_serving_then_not_serving(rooms: Rooms) -> None:
    health = health_pb2_grpc.HealthStub(rooms.channel)
    for service in ("", "roomcast.rooms.v1.Rooms"):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    unknown = health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert await code_of(unknown) == grpc.StatusCode.NOT_FOUND
    await rooms.running.health.enter_graceful_shutdown()
    resp = await health.Check(health_pb2.HealthCheckRequest(service="roomcast.rooms.v1.Rooms"))
    assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_services(rooms: Rooms) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(rooms.channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = set()
    async for resp in call:
        names |= {s.name for s in resp.list_services_response.service}
    assert {"roomcast.rooms.v1.Rooms", "grpc.health.v1.Health"} <= names


async def test_request_metrics_count_methods_and_codes(rooms: Rooms) -> None:
    user = rooms.user()
    ok_before = sample("roomcast_rooms_grpc_requests_total", method="ListRooms", code="OK")
    nf_before = sample("roomcast_rooms_grpc_requests_total", method="GetRoom", code="NOT_FOUND")
    hist_before = sample("roomcast_rooms_grpc_request_duration_seconds_count", method="ListRooms")
    await rooms.stub.ListRooms(pb.ListRoomsRequest(), metadata=user.md)
    await code_of(rooms.stub.GetRoom(pb.GetRoomRequest(room_id=new_user_id()), metadata=user.md))
    assert (
        sample("roomcast_rooms_grpc_requests_total", method="ListRooms", code="OK") == ok_before + 1
    )
    assert (
        sample("roomcast_rooms_grpc_requests_total", method="GetRoom", code="NOT_FOUND")
        == nf_before + 1
    )
    assert (
        sample("roomcast_rooms_grpc_request_duration_seconds_count", method="ListRooms")
        == hist_before + 1
    )
    # Unauthenticated calls are counted too, under the same bounded labels.
    ua_before = sample(
        "roomcast_rooms_grpc_requests_total", method="ListRooms", code="UNAUTHENTICATED"
    )
    await code_of(rooms.stub.ListRooms(pb.ListRoomsRequest()))
    assert (
        sample("roomcast_rooms_grpc_requests_total", method="ListRooms", code="UNAUTHENTICATED")
        == ua_before + 1
    )
    assert isinstance(User, type)


async def test_a_bug_is_internal_not_unknown(rooms: Rooms, monkeypatch: pytest.MonkeyPatch) -> None:
    user = rooms.user()

    async def broken(*args: object, **kwargs: object) -> object:
        raise KeyError("bug")

    monkeypatch.setattr(rooms.running.store, "get_room", broken)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=user.id), metadata=user.md)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "bug" not in err.value.details()
