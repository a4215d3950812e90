"""History benchmark: ingest throughput and page latency, each against a same-run baseline.

Starts nats-server, SecantusDB and the history process on free ports, then:

1. live ingest: publishes ``--messages`` chat records to ``--rooms`` rooms through
   JetStream as fast as it can (``--concurrency`` publishers awaiting their acks) while
   history runs; reports the publish rate and the time until every record is stored;
2. backlog ingest: stops history, publishes as many again, starts history and times
   the drain (the consumer's own throughput);
   baseline: the same documents written straight to MongoDB with ``insert_many`` in
   batches of the same size (what the consumer's write costs without NATS);
3. pages: loads one big room straight into MongoDB (``--page-room-size`` documents,
   insert_many, not through NATS), then times ``GET /v1/rooms/{id}/messages?limit=50``
   at random ``before`` positions through the HTTP API (token verification and a
   cached membership check included) against two bare MongoDB queries in the same
   run: the classic ``find({room_id, _id < before}).sort(_id desc).limit(50)`` and
   the bounded-range query history issues.

Run: ``.venv/bin/python bench/history_ingest.py [--messages 20000] [--page-room-size 1000000]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import time
import uuid
from typing import Any

import httpx
import nats
import orjson
from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern

from roomcast.common.chatstream import StreamSettings, ensure_chat_stream
from roomcast.common.tokens import (
    TokenSigner,
    TokenVerifier,
    generate_private_key_pem,
    load_private_key,
)
from roomcast.history.store import MESSAGES, META, ROOMS, WATERMARK_ID, HistoryStore
from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.processes import MongoServer, NatsServer, ServiceProcess, free_port

ISSUER, AUDIENCE = "roomcast-auth", "roomcast"
BATCH = 256
# Where the directly loaded big room's sequences start: far above anything published.
BIG_ROOM_FIRST_SEQ = 10_000_000


def oid() -> str:
    return uuid.uuid4().hex[:24]


def record(room: str, user: str, i: int) -> bytes:
    return orjson.dumps(
        {
            "kind": "message",
            "room": room,
            "sender": {
                "id": user,
                "username": "bench",
                "display_name": "Bench",
                "avatar_url": None,
            },
            "body": {"type": "text", "content": f"benchmark message number {i} " + "x" * 60},
            "sent_at": dt.datetime.now(dt.UTC).isoformat(),
            "client_id": uuid.uuid4().hex,
        }
    )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return (
        f"p50 {pct(values, 50) * 1000:7.2f} ms  p99 {pct(values, 99) * 1000:7.2f} ms  "
        f"mean {statistics.fmean(values) * 1000:7.2f} ms  (n={len(values)})"
    )


async def publish(js: Any, rooms: list[str], user: str, n: int, concurrency: int) -> float:
    """Publish n records round-robin over rooms; returns the elapsed seconds."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            room = rooms[i % len(rooms)]
            await js.publish(
                f"chat.room.{room}",
                record(room, user, i),
                headers={"Nats-Msg-Id": uuid.uuid4().hex},
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def wait_stored(meta: Any, seq: int, within: float) -> float:
    """Wait until history's watermark reaches ``seq`` (every message up to it stored).
    Polls a single-document point read: counting documents on SecantusDB costs a scan,
    and polling a count would slow the very server being measured."""
    deadline = time.perf_counter() + within
    while True:
        mark = await meta.find_one({"_id": WATERMARK_ID})
        if mark is not None and mark["seq"] >= seq:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"watermark {mark} below {seq}")
        await asyncio.sleep(0.01)


def history(env: dict[str, str], port: int) -> ServiceProcess:
    return ServiceProcess("history", env, ready_url=f"http://127.0.0.1:{port}/readyz")


async def main(args: argparse.Namespace) -> None:
    nats_server = NatsServer()
    mongo_server = MongoServer()
    # The big room needs more WiredTiger cache than the tests' 256M default.
    mongo_server.argv[mongo_server.argv.index("256M")] = args.mongo_cache
    nats_server.start()
    mongo_server.start()
    signer = TokenSigner(
        load_private_key(generate_private_key_pem()),
        issuer=ISSUER,
        audience=AUDIENCE,
        access_ttl_seconds=3600,
    )
    jwks = JwksServer(signer.jwks())
    jwks.start()
    rooms_service = FakeRooms(
        TokenVerifier.from_jwks(signer.jwks(), issuer=ISSUER, audience=AUDIENCE)
    )
    await rooms_service.start()
    port = free_port()
    db_name = "bench_history"
    env = {
        "ROOMCAST_HISTORY_PORT": str(port),
        "ROOMCAST_HISTORY_NATS_URL": nats_server.url,
        "ROOMCAST_HISTORY_MONGO_URL": mongo_server.url,
        "ROOMCAST_HISTORY_MONGO_DB": db_name,
        "ROOMCAST_HISTORY_JWKS_URL": jwks.url,
        "ROOMCAST_HISTORY_ROOMS_TARGET": rooms_service.target,
        "ROOMCAST_HISTORY_BATCH_SIZE": str(BATCH),
        "ROOMCAST_HISTORY_LOG_LEVEL": "WARNING",
        # One benchmark user reads hundreds of pages back to back.
        "ROOMCAST_HISTORY_READ_RATE_CAPACITY": "1000000",
    }
    proc = history(env, port)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.url)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream(timeout=30)
    try:
        await ensure_chat_stream(js, StreamSettings(), update=False)
        messages = mongo[db_name][MESSAGES]
        meta = mongo[db_name][META]
        rooms = [oid() for _ in range(args.rooms)]
        user = oid()
        n = args.messages
        print(f"nats-server: {nats_server.binary}; SecantusDB cache {args.mongo_cache}")
        print(f"{n} messages over {len(rooms)} rooms, {args.concurrency} concurrent publishers")

        # 1. live ingest
        await asyncio.to_thread(proc.start)
        started = time.perf_counter()
        publish_seconds = await publish(js, rooms, user, n, args.concurrency)
        stored_at = await wait_stored(meta, n, within=1800)
        live_seconds = stored_at - started
        print(
            f"publish (JetStream, acked):   {n / publish_seconds:9.0f} msg/s  "
            f"({publish_seconds:.2f} s)"
        )
        print(
            f"live ingest (publish→stored): {n / live_seconds:9.0f} msg/s  ({live_seconds:.2f} s)"
        )

        # 2. backlog ingest, and the bare insert_many baseline
        await asyncio.to_thread(proc.stop)
        await publish(js, rooms, user, n, args.concurrency)
        proc = history(env, port)
        await asyncio.to_thread(proc.start)
        # From the first write on (process start-up excluded): the drain rate.
        started = await wait_stored(meta, n + 1, within=60)
        stored = int((await meta.find_one({"_id": WATERMARK_ID}) or {})["seq"])
        stored_at = await wait_stored(meta, 2 * n, within=1800)
        drained = 2 * n - stored
        backlog_rate = drained / (stored_at - started)
        print(
            f"backlog ingest (drain rate, {drained} records): {backlog_rate:9.0f} msg/s  "
            f"({stored_at - started:.2f} s)"
        )
        # History's own write concern (roomcast.common.mongo): journaled, majority.
        scratch = mongo[db_name].get_collection(
            "bare_baseline", write_concern=WriteConcern(w="majority", j=True)
        )
        await scratch.create_index([("room_id", 1), ("_id", -1)])
        sample = await messages.find({}).limit(n).to_list()
        started = time.perf_counter()
        for i in range(0, len(sample), BATCH):
            await scratch.insert_many(sample[i : i + BATCH], ordered=False)
        bare_seconds = time.perf_counter() - started
        print(
            f"baseline bare insert_many ({BATCH}/batch): {len(sample) / bare_seconds:9.0f} doc/s "
            f"({bare_seconds:.2f} s)  → history backlog / bare = "
            f"{backlog_rate / (len(sample) / bare_seconds):.2f}"
        )
        await scratch.drop()

        # 3. pages in a big room
        big = oid()
        size = args.page_room_size
        store = HistoryStore(mongo, db_name)
        await store.ensure_indexes()
        stored_at_dt = dt.datetime.now(dt.UTC)
        body = {"type": "text", "content": "page benchmark " + "y" * 60}
        sender = {"id": user, "username": "bench", "display_name": "Bench", "avatar_url": None}
        started = time.perf_counter()
        chunk = 2000
        for i in range(0, size, chunk):
            docs = [
                {
                    "_id": BIG_ROOM_FIRST_SEQ + j,
                    "room_id": big,
                    "sender": sender,
                    "body": body,
                    "sent_at": "2030-01-01T00:00:00+00:00",
                    "client_id": f"c{j}",
                    "stored_at": stored_at_dt,
                }
                for j in range(i, min(size, i + chunk))
            ]
            await messages.insert_many(docs, ordered=False)
            if (i // chunk) % 50 == 0 and i:
                rate = i / (time.perf_counter() - started)
                print(f"  loaded {i} ({rate:.0f} doc/s)", flush=True)
        load_seconds = time.perf_counter() - started
        last = BIG_ROOM_FIRST_SEQ + size - 1
        await mongo[db_name][ROOMS].insert_one({"_id": big, "first_seq": BIG_ROOM_FIRST_SEQ})
        await mongo[db_name][META].update_one(
            {"_id": WATERMARK_ID}, {"$max": {"seq": last}}, upsert=True
        )
        print(
            f"big room: {size} messages loaded with insert_many in {load_seconds:.1f} s "
            f"({size / load_seconds:.0f} doc/s)"
        )
        rooms_service.add_member(big, user)
        token, _ = signer.issue_access(user_id=user, username="bench", display_name="Bench")
        rng = random.Random(7)
        befores = [None] + [
            rng.randint(BIG_ROOM_FIRST_SEQ + 50, last) for _ in range(args.page_requests - 1)
        ]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            headers = {"Authorization": f"Bearer {token}"}
            for before in befores[:5]:  # warm up: JWKS, membership cache, connections
                params = {"limit": 50} | ({"before": before} if before else {})
                await client.get(f"/v1/rooms/{big}/messages", params=params, headers=headers)
            api: list[float] = []
            for before in befores:
                params = {"limit": 50} | ({"before": before} if before else {})
                t = time.perf_counter()
                response = await client.get(
                    f"/v1/rooms/{big}/messages", params=params, headers=headers
                )
                api.append(time.perf_counter() - t)
                assert response.status_code == 200, response.text
                assert len(response.json()["items"]) == 50
        bounded: list[float] = []
        for before in befores:
            hi = before or last + 1
            t = time.perf_counter()
            docs = (
                await messages.find({"room_id": big, "_id": {"$gte": hi - 102, "$lt": hi}})
                .sort("_id", -1)
                .limit(51)
                .to_list()
            )
            bounded.append(time.perf_counter() - t)
            assert len(docs) == 51
        classic: list[float] = []
        for before in befores[: args.baseline_requests]:
            hi = before or last + 1
            t = time.perf_counter()
            docs = (
                await messages.find({"room_id": big, "_id": {"$lt": hi}})
                .sort("_id", -1)
                .limit(50)
                .to_list()
            )
            classic.append(time.perf_counter() - t)
            assert len(docs) == 50
        print(f"page via history HTTP API:          {ms(api)}")
        print(f"bare bounded-range query (history's): {ms(bounded)}")
        print(f"bare classic query (_id < before, sort, limit): {ms(classic)}")
        print(
            f"ratio API p99 / classic p99: {pct(api, 99) / pct(classic, 99):.3f}; "
            f"API p99 / bounded p99: {pct(api, 99) / pct(bounded, 99):.1f}"
        )
    finally:
        await nc.close()
        await mongo.close()
        proc.stop()
        await rooms_service.stop()
        jwks.stop()
        nats_server.cleanup()
        mongo_server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--page-room-size", type=int, default=1_000_000)
    parser.add_argument("--page-requests", type=int, default=300)
    parser.add_argument(
        "--baseline-requests",
        type=int,
        # Each classic query can take a minute on SecantusDB with a 1 M-message room.
        default=10,
        help="classic-query samples (each can scan the whole room on SecantusDB)",
    )
    parser.add_argument("--mongo-cache", default="1G")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
