"""Pipeline benchmark: CPU per acknowledged message in every process of the stack.

Starts the whole stack on free ports (nats-server, SecantusDB, auth, rooms, history,
gateways A and B, as ``make up`` does), creates ``--rooms`` rooms, each with one sender
socket on gateway A and one subscribed receiver socket on gateway B, and offers a fixed
total rate (``--rate`` msg/s spread evenly over the rooms, open loop) for
``--duration`` seconds after a short warm-up. Each process's CPU time (utime + stime
from /proc/<pid>/stat) is read before the measured window and again once every message
of the window is acknowledged, delivered on gateway B and stored by history. Gateway A
only receives sends (its sockets subscribe to nothing) and gateway B only delivers, so
the two gateways' figures are the send and the receive side.

In the same run, against the same servers, two ceilings:

- the bus: raw nats-py JetStream publishes per second to a scratch file-storage stream,
  ``--in-flight`` publishes awaiting their acks at once;
- the database: a bare ``insert_many`` of the documents history stored in the window,
  copied to a scratch collection in batches of history's batch size with history's
  durable write concern (w=majority, j=true), with SecantusDB's CPU per document.

    .venv/bin/python bench/pipeline_cost.py [--rooms 100] [--rate 200] [--duration 20]

Prints markdown tables. Compare ratios, not absolutes: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
import websockets
from io_floor import receive_floor, send_floor  # bench/ is the script's directory
from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern

from roomcast.common.subjects import STREAM_NAME
from roomcast.history.store import MESSAGES, META, WATERMARK_ID
from roomcast.load.busceiling import bus_ceiling
from roomcast.load.provision import Rest, UserCred, create_room, join_room, login, register
from roomcast.testing.stack import Stack, StackPorts

# Auth's per-address attempt limits would throttle registering a few hundred users.
STACK_ENV = {
    "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "100000",
    "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "100000",
}
HISTORY_DB = "roomcast_history"
# History's default batch size (services/history settings): the baseline writes the
# same batches.
HISTORY_BATCH = 256
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# How long the end of the window may take to be acked, delivered and stored before the
# run is declared failed: several seconds of backlog on a loaded machine.
DRAIN_TIMEOUT_SECONDS = 120.0
MESSAGE_BYTES = 100
# Database writes per stored message the issue allows, amortised over the window.
MAX_WRITES_PER_MESSAGE = 1.2


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields_after_name = stat.rsplit(")", 1)[1].split()
    return (int(fields_after_name[11]) + int(fields_after_name[12])) / CLOCK_TICKS


@dataclass
class Counters:
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    errors: list[str] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)
    pending: dict[str, float] = field(default_factory=dict)


def send_frame(room: str, client_id: str) -> bytes:
    return orjson.dumps(
        {
            "type": "send",
            "room": room,
            "client_id": client_id,
            "body": {"type": "text", "content": "pipeline cost " + "x" * MESSAGE_BYTES},
        }
    )


async def authed(url: str, token: str) -> Any:
    ws = await websockets.connect(url, max_size=2**22)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    frame = orjson.loads(await ws.recv())
    if frame.get("type") != "ready":
        raise RuntimeError(f"auth refused: {frame}")
    return ws


async def sender_reader(ws: Any, counters: Counters) -> None:
    async for raw in ws:
        frame = orjson.loads(raw)
        if frame.get("type") == "ack":
            started = counters.pending.pop(frame["client_id"], None)
            if started is not None:
                counters.acked += 1
                counters.ack_latencies.append(time.perf_counter() - started)
        elif frame.get("type") == "error":
            counters.errors.append(str(frame))


async def receiver_reader(ws: Any, counters: Counters) -> None:
    async for raw in ws:
        frame = orjson.loads(raw)
        if frame.get("type") == "message":
            counters.delivered += 1


async def offer(senders: list[tuple[Any, str]], rate: float, seconds: float, c: Counters) -> None:
    """Open loop: message i goes out at start + i / rate, round-robin over the rooms."""
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        ws, room = senders[i % len(senders)]
        client_id = uuid.uuid4().hex
        c.pending[client_id] = time.perf_counter()
        c.sent += 1
        await ws.send(send_frame(room, client_id).decode())  # a text frame


async def wait_for(what: str, condition: Any) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def server_writes(mongo: Any) -> int:
    """Write commands the database server has executed, from its own counters (every
    client of the stack included: the window has no other writer than history)."""
    counters = (await mongo.admin.command("serverStatus"))["opcounters"]
    return int(counters["insert"]) + int(counters["update"]) + int(counters["delete"])


async def stream_last_seq(js: Any) -> int:
    info = await js.stream_info(STREAM_NAME)
    return int(info.state.last_seq)


async def insert_ceiling(mongo: Any, mongo_pid: int) -> tuple[int, float, float]:
    """(documents, documents/s, SecantusDB CPU ms per document) of a bare insert_many."""
    docs = [d async for d in mongo[HISTORY_DB][MESSAGES].find({})]
    for d in docs:
        d.pop("_id", None)
    scratch = mongo["bench_pipeline"].get_collection(
        "insert_many", write_concern=WriteConcern(w="majority", j=True)
    )
    await scratch.drop()
    cpu0 = cpu_seconds(mongo_pid)
    began = time.perf_counter()
    for i in range(0, len(docs), HISTORY_BATCH):
        await scratch.insert_many(docs[i : i + HISTORY_BATCH], ordered=True)
    seconds = time.perf_counter() - began
    cpu = cpu_seconds(mongo_pid) - cpu0
    await scratch.drop()
    return len(docs), len(docs) / seconds, cpu * 1000 / max(1, len(docs))


async def provision(gateway: str, rooms: int) -> tuple[list[UserCred], list[UserCred], list[str]]:
    rest = Rest([gateway])
    try:
        tag = f"pc{secrets.token_hex(3)}"
        senders = [UserCred(f"{tag}_s{i}", secrets.token_urlsafe(12)) for i in range(rooms)]
        receivers = [UserCred(f"{tag}_r{i}", secrets.token_urlsafe(12)) for i in range(rooms)]
        sem = asyncio.Semaphore(16)

        async def user(u: UserCred) -> None:
            async with sem:
                await register(rest, u)
                await login(rest, u)

        await asyncio.gather(*(user(u) for u in senders + receivers))
        room_ids = [""] * rooms

        async def room(i: int) -> None:
            async with sem:
                room_ids[i] = await create_room(rest, senders[i].token, f"cost {i}")
                await join_room(rest, receivers[i].token, room_ids[i])

        await asyncio.gather(*(room(i) for i in range(rooms)))
        return senders, receivers, room_ids
    finally:
        await rest.aclose()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(stack: Stack, args: argparse.Namespace) -> None:
    gw_a, gw_b = stack.gateway_urls
    ws_a, ws_b = gw_a.replace("http", "ws") + "/v1/ws", gw_b.replace("http", "ws") + "/v1/ws"
    senders, receivers, room_ids = await provision(gw_a, args.rooms)
    counters = Counters()
    send_socks = [await authed(ws_a, u.token) for u in senders]
    recv_socks = [await authed(ws_b, u.token) for u in receivers]
    for ws, room in zip(recv_socks, room_ids, strict=True):
        await ws.send(orjson.dumps({"type": "subscribe", "room": room}).decode())
        frame = orjson.loads(await ws.recv())
        if frame.get("type") != "subscribed":
            raise RuntimeError(f"subscribe refused: {frame}")
    readers = [asyncio.create_task(sender_reader(ws, counters)) for ws in send_socks]
    readers += [asyncio.create_task(receiver_reader(ws, counters)) for ws in recv_socks]
    pairs = list(zip(send_socks, room_ids, strict=True))
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo.url)  # type: ignore[union-attr]
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    meta = mongo[HISTORY_DB][META]

    async def settled() -> bool:
        if counters.acked < counters.sent or counters.delivered < counters.sent:
            return False
        last = await stream_last_seq(js)
        mark = await meta.find_one({"_id": WATERMARK_ID})
        return mark is not None and int(mark["seq"]) >= last

    parts = stack.parts()
    pids = {
        "gateway A (send side)": parts["gateway-a"].pid,
        "gateway B (receive side)": parts["gateway-b"].pid,
        "history": parts["history"].pid,
        "SecantusDB": stack.mongo.pid,  # type: ignore[union-attr]
        "nats-server": stack.nats.pid,  # type: ignore[union-attr]
        "auth": parts["auth"].pid,
        "rooms": parts["rooms"].pid,
    }
    try:
        # Warm-up: caches (membership, tokens), connections and JIT-free steady state.
        await offer(pairs, args.rate, args.warmup, counters)
        await wait_for("warm-up settled", settled)
        base = counters.acked
        writes_before = await server_writes(mongo)
        before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        counters.ack_latencies.clear()
        profiler = None
        if args.flame is not None:
            # --native pauses the process per sample to unwind C frames (uvloop, picows,
            # orjson); without it the sampler reads Python frames without stopping it.
            mode = ["--native"] if args.flame_native else ["--nonblocking"]
            # A .txt output is py-spy's raw format (collapsed stacks, one per line).
            fmt = "raw" if args.flame.suffix == ".txt" else "flamegraph"
            profiler = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--output",
                str(args.flame),
                "--format",
                fmt,
                "--pid",
                str(pids[args.flame_process]),
                "--duration",
                str(int(args.duration)),
                *mode,
                stdout=asyncio.subprocess.DEVNULL,
            )
        began = time.perf_counter()
        await offer(pairs, args.rate, args.duration, counters)
        offered_seconds = time.perf_counter() - began
        if profiler is not None:
            await profiler.wait()
            # The title names the sampler's path on this machine: keep only its name.
            svg = args.flame.read_text()
            args.flame.write_text(svg.replace(str(Path(sys.executable).parent) + "/", ""))
        await wait_for("window acked, delivered and stored", settled)
        after = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        acked = counters.acked - base
        writes = await server_writes(mongo) - writes_before
        # Other users of the machine: says how noisy the window was.
        load = os.getloadavg()
        print(f"stack on free ports; {args.rooms} rooms, 1 sender (gateway A) and 1 receiver")
        print(f"(gateway B) each; {args.rate:.0f} msg/s offered for {args.duration:.0f} s")
        print(
            f"({offered_seconds:.1f} s actual); load average at the end: "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        print(
            f"acked {acked}, errors {len(counters.errors)}, ack p50 "
            f"{pct(counters.ack_latencies, 0.5) * 1000:.1f} ms, p99 "
            f"{pct(counters.ack_latencies, 0.99) * 1000:.1f} ms\n"
        )
        print("| process | CPU s in window | CPU ms per acked message |")
        print("|---|---|---|")
        total = 0.0
        for name in before:
            used = after[name] - before[name]
            total += used
            print(f"| {name} | {used:.2f} | {used * 1000 / acked:.2f} |")
        per_msg = total * 1000 / acked
        print(f"| **total** | {total:.2f} | **{per_msg:.2f}** |")
        print(
            f"\ndatabase writes per stored message (SecantusDB serverStatus opcounters, "
            f"insert + update + delete over the window): {writes} / {acked} = "
            f"{writes / acked:.3f} (target <= {MAX_WRITES_PER_MESSAGE})"
        )
        cores = os.cpu_count() or 1
        print(f"\nimplied whole-stack ceiling on {cores} cores: {cores * 1000 / per_msg:.0f} msg/s")

        publish_rate = await bus_ceiling(stack.nats_url, args.ceiling_messages, args.in_flight)
        docs, insert_rate, mongo_ms = await insert_ceiling(mongo, pids["SecantusDB"] or 0)
        mongo_pipeline = (after["SecantusDB"] - before["SecantusDB"]) * 1000 / acked
        print("\n| same-run ceiling | figure | ratio |")
        print("|---|---|---|")
        print(
            f"| raw JetStream publish, {args.in_flight} in flight | {publish_rate:.0f} msg/s "
            f"| pipeline offered rate / ceiling = {args.rate / publish_rate:.3f} |"
        )
        print(
            f"| bare insert_many ({docs} docs, batches of {HISTORY_BATCH}, w=majority j=true) "
            f"| {insert_rate:.0f} docs/s, SecantusDB {mongo_ms:.3f} ms CPU/doc "
            f"| SecantusDB per message in pipeline / per doc bare = "
            f"{mongo_pipeline / mongo_ms:.1f}x |"
        )
        print(
            f"| implied whole-stack ceiling vs raw publish | {cores * 1000 / per_msg:.0f} "
            f"vs {publish_rate:.0f} msg/s | {cores * 1000 / per_msg / publish_rate:.3f} |"
        )
        if args.floor_seconds > 0:
            # The I/O the two gateways cannot avoid at this rate, bare (bench/io_floor.py).
            send_ms = await send_floor(stack.nats_url, args.rate, args.floor_seconds, args.rooms)
            recv_ms = await receive_floor(stack.nats_url, args.rate, args.floor_seconds, args.rooms)
            gw_send = (after["gateway A (send side)"] - before["gateway A (send side)"]) * 1000
            gw_recv = (
                after["gateway B (receive side)"] - before["gateway B (receive side)"]
            ) * 1000
            print(
                f"| I/O floor, send: bare uvloop relay, TCP line -> jspublisher -> ack line, "
                f"{args.rooms} conns at {args.rate:.0f}/s | {send_ms:.3f} ms CPU per ack "
                f"| gateway A / floor = {gw_send / acked / send_ms:.2f}x |"
            )
            print(
                f"| I/O floor, receive: bare uvloop, natsinline subscription -> TCP write, "
                f"{args.rooms} conns at {args.rate:.0f}/s | {recv_ms:.3f} ms CPU per message "
                f"| gateway B / floor = {gw_recv / acked / recv_ms:.2f}x |"
            )
    finally:
        for task in readers:
            task.cancel()
        for ws in send_socks + recv_socks:
            await ws.close()
        await nc.close()
        await mongo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="msg/s offered in total")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--ceiling-messages", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument(
        "--floor-seconds",
        type=float,
        default=10.0,
        help="seconds each bare I/O floor (bench/io_floor.py) is measured; 0 skips them",
    )
    parser.add_argument(
        "--flame",
        type=Path,
        help="also record a py-spy flame graph (SVG) of gateway A (the send side) over the "
        "window; the sampler costs CPU, so take figures from a run without it",
    )
    parser.add_argument(
        "--flame-process",
        default="gateway A (send side)",
        choices=["gateway A (send side)", "gateway B (receive side)", "history"],
        help="the process --flame samples",
    )
    parser.add_argument(
        "--flame-native",
        action="store_true",
        help="--flame also samples C frames (uvloop, picows, orjson, the system calls); "
        "pauses the process at each sample, so it costs it more",
    )
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="roomcast-pipeline-"))
    stack = Stack(state, StackPorts.free(), bcrypt_cost=4, extra_env=STACK_ENV)
    print("starting the stack ...", file=sys.stderr, flush=True)
    stack.start()
    try:
        asyncio.run(measure(stack, args))
    finally:
        stack.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
