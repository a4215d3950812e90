"""Assembling the service: the gRPC server (Rooms, health, reflection, interceptor)
and the HTTP side app (/healthz, /readyz, /metrics)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from fastapi import FastAPI
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from nats.aio.client import Client as NatsClient
from pymongo import AsyncMongoClient

from roomcast.common.httpapp import create_service_app
from roomcast.common.tokens import TokenVerifier
from roomcast.rooms.audit import AuditLog
from roomcast.rooms.events import EventPublisher
from roomcast.rooms.interceptors import SERVICE_NAME, RoomsInterceptor
from roomcast.rooms.restrictions import RestrictionStore
from roomcast.rooms.retention_sync import RetentionSync
from roomcast.rooms.servicer import RoomsServicer
from roomcast.rooms.settings import Settings
from roomcast.rooms.store import RoomStore
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# Requests are a few ids and short strings (a name is <= 64 characters); 64 KiB is far
# above any valid request and stops a client from making the server buffer megabytes.
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024
# Responses: a page of 100 rooms is ~30 KiB; 4 MiB is gRPC's default and ample.
MAX_SEND_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass
class RunningRooms:
    """A started gRPC server and what it needs to stop."""

    server: grpc.aio.Server
    port: int
    store: RoomStore
    health: Any
    retention: RetentionSync
    retention_task: asyncio.Task[None] | None = None

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first (so balancers stop routing here), then let in-flight
        RPCs finish within ``grace`` seconds; new RPCs are refused meanwhile."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.retention.stop(self.retention_task)


async def start_server(
    settings: Settings,
    *,
    verifier: TokenVerifier,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    nats_client: NatsClient,
    port: int | None = None,
) -> RunningRooms:
    """Create indexes, then start serving on ``settings.host`` and ``port`` (default
    ``settings.grpc_port``; 0 picks a free port, see ``RunningRooms.port``)."""
    store = RoomStore(mongo_client, settings.mongo_db)
    await store.ensure_indexes()
    restrictions = RestrictionStore(mongo_client, settings.mongo_db)
    await restrictions.ensure_indexes()
    audit = AuditLog(mongo_client, settings.mongo_db)
    await audit.ensure_indexes()
    retention = RetentionSync(nats_client, store, replicas=settings.retention_bucket_replicas)
    servicer = RoomsServicer(
        store,
        verifier,
        EventPublisher(nats_client),
        restrictions=restrictions,
        audit=audit,
        create_rooms_per_minute=settings.create_rooms_per_minute,
        retention=retention,
    )
    server = grpc.aio.server(
        interceptors=[RoomsInterceptor()],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
        ],
    )
    pb_grpc.add_RoomsServicer_to_server(servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_name, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.grpc_port if port is None else port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise RuntimeError(f"cannot bind the gRPC port {address}")
    await server.start()
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("rooms gRPC listening", extra={"port": bound})
    task = asyncio.create_task(retention.run(), name="retention-sync")
    return RunningRooms(
        server=server,
        port=bound,
        store=store,
        health=health,
        retention=retention,
        retention_task=task,
    )


def create_http_app(store: RoomStore) -> FastAPI:
    """The side port: liveness, readiness (MongoDB answers a ping), metrics."""
    return create_service_app("rooms", readiness=store.ping)
