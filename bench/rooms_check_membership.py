"""Benchmark: CheckMembership (the gateways' hot path) against the MongoDB reads it makes.

Starts SecantusDB, nats-server and ``python -m roomcast.rooms`` on free ports (tokens
verified from a static JWKS file: ROOMCAST_ROOMS_JWKS_FILE, dev/bench only), creates a
room with a member, then runs each phase for a fixed time with N concurrent callers:

1. ``find_one`` on memberships by (room_id, user_id): the one read CheckMembership
   makes for a member (the membership document carries the room's visibility);
2. that read plus the room's, concurrently: what a non-member check costs (and
   what every check cost before memberships carried the visibility);
3. ``CheckMembership`` over gRPC: token check (cached after the first call),
   validation, the read, protobuf, HTTP/2, interceptor and metrics.

Everything runs on this machine (client, service, database): the ratios between the
phases are the figure to compare across runs, not the absolute rates.

    .venv/bin/python bench/rooms_check_membership.py [--concurrency 50] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import uvloop
from bson import ObjectId
from pymongo import AsyncMongoClient

from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.tokens import TokenSigner, generate_private_key_pem, load_private_key
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc as pb_grpc
from roomcast.testing.processes import MongoServer, NatsServer, ServiceProcess, free_port

DB = "rooms_bench"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_phase(
    name: str,
    op: Callable[[], Awaitable[Any]],
    concurrency: int,
    seconds: float,
    pids: dict[str, int],
) -> dict[str, float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            await op()
            latencies.append(time.perf_counter() - start)

    # Warm up (connection pools, JIT-free but caches) before measuring.
    await asyncio.gather(*(op() for _ in range(concurrency)))
    cpu_before = {k: cpu_seconds(pid) for k, pid in pids.items()}
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    cpu = {k: cpu_seconds(pid) - cpu_before[k] for k, pid in pids.items()}
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    result = {
        "calls": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }
    for k, used in cpu.items():
        result[f"{k}_cpu_us_per_call"] = used / len(latencies) * 1e6
    cpu_text = "  ".join(f"{k} {used / len(latencies) * 1e6:5.0f} us" for k, used in cpu.items())
    print(
        f"{name:<32} {result['per_second']:>6.0f}/s  p50 {result['p50_ms']:6.1f} ms"
        f"  p99 {result['p99_ms']:6.1f} ms  ({result['calls']} calls; CPU/call: {cpu_text})",
        flush=True,
    )
    return result


async def bench(concurrency: int, seconds: float) -> None:
    mongo_server, nats_server = MongoServer(), NatsServer()
    signer = TokenSigner(
        load_private_key(generate_private_key_pem()),
        issuer="roomcast-auth",
        audience="roomcast",
        access_ttl_seconds=3600,
    )
    workdir = Path(tempfile.mkdtemp(prefix="roomcast-bench-"))
    jwks_file = workdir / "jwks.json"
    jwks_file.write_text(json.dumps(signer.jwks()))
    grpc_port, http_port = free_port(), free_port()
    rooms = ServiceProcess(
        "rooms",
        {
            "ROOMCAST_ROOMS_MONGO_URL": mongo_server.url,
            "ROOMCAST_ROOMS_MONGO_DB": DB,
            "ROOMCAST_ROOMS_NATS_URL": nats_server.url,
            "ROOMCAST_ROOMS_JWKS_FILE": str(jwks_file),
            "ROOMCAST_ROOMS_GRPC_PORT": str(grpc_port),
            "ROOMCAST_ROOMS_HTTP_PORT": str(http_port),
            "ROOMCAST_ROOMS_LOG_LEVEL": "WARNING",
        },
        ready_url=f"http://127.0.0.1:{http_port}/readyz",
    )
    mongo: AsyncMongoClient[dict[str, Any]] | None = None
    try:
        mongo_server.start()
        nats_server.start()
        rooms.start()
        owner_id, member_id = str(ObjectId()), str(ObjectId())
        owner_md = bearer_metadata(
            signer.issue_access(user_id=owner_id, username="owner", display_name="Owner")[0]
        )
        member_md = bearer_metadata(
            signer.issue_access(user_id=member_id, username="member", display_name="Member")[0]
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.RoomsStub(channel)
            room = (
                await stub.CreateRoom(
                    pb.CreateRoomRequest(name="bench", visibility=pb.VISIBILITY_PUBLIC),
                    metadata=owner_md,
                )
            ).room
            await stub.JoinRoom(pb.JoinRoomRequest(room_id=room.id), metadata=member_md)

            mongo = AsyncMongoClient(mongo_server.url, maxPoolSize=concurrency)
            members = mongo[DB]["memberships"]
            rooms_coll = mongo[DB]["rooms"]
            oid = ObjectId(room.id)

            async def membership_find_one() -> None:
                doc = await members.find_one(
                    {"room_id": oid, "user_id": member_id}, projection={"_id": False, "role": True}
                )
                assert doc is not None

            async def both_reads() -> None:
                room_doc, doc = await asyncio.gather(
                    rooms_coll.find_one(
                        {"_id": oid}, projection={"_id": False, "visibility": True}
                    ),
                    members.find_one(
                        {"room_id": oid, "user_id": member_id},
                        projection={"_id": False, "role": True},
                    ),
                )
                assert room_doc is not None
                assert doc is not None

            request = pb.CheckMembershipRequest(room_id=room.id)

            async def check_membership() -> None:
                resp = await stub.CheckMembership(request, metadata=member_md)
                assert resp.member

            pids = {"secantusdb": _pid(mongo_server), "rooms": _pid(rooms)}
            print(f"concurrency {concurrency}, {seconds:.0f} s per phase", flush=True)
            base = await run_phase(
                "mongo find_one (membership)", membership_find_one, concurrency, seconds, pids
            )
            pair = await run_phase(
                "mongo room + membership reads", both_reads, concurrency, seconds, pids
            )
            rpc = await run_phase(
                "gRPC CheckMembership", check_membership, concurrency, seconds, pids
            )
            print(
                f"CheckMembership = {rpc['per_second'] / base['per_second']:.2f}x the calls/s of "
                f"a bare find_one ({rpc['per_second'] / pair['per_second']:.2f}x of two reads); "
                f"p99 {rpc['p99_ms'] / base['p99_ms']:.2f}x "
                f"({rpc['p99_ms'] / pair['p99_ms']:.2f}x)",
                flush=True,
            )
    finally:
        if mongo is not None:
            await mongo.close()
        code = rooms.stop()
        nats_server.cleanup()
        mongo_server.cleanup()
        print(f"rooms exited with {code}", flush=True)


def _pid(process: ServiceProcess | MongoServer) -> int:
    assert process.proc is not None
    return process.proc.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    uvloop.run(bench(args.concurrency, args.seconds))


if __name__ == "__main__":
    main()
