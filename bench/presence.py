"""Presence benchmark: what presence costs in NATS messages and latency.

Setup: one nats-server (with its monitoring port, for ``/varz``), the JWKS and the fake
rooms service in this process, ``--gateways`` gateway processes (default 4) and
``--users`` users (default 1000), one socket each, spread round-robin over the gateways
and all subscribed to one room: everyone online in it. A subscriber on ``>`` in this
process classifies every NATS message by subject (heartbeat, ephemeral = presence
deltas and typing, query = snapshot requests, inbox = snapshot replies, other).

Measured, each with a same-run baseline:

1. **query**: ``--queries`` presence queries (answer: the 1000 users, ~100 KB) from one
   socket per gateway in turn: round-trip latency p50/p99, against the WebSocket
   ping/pong round trip to the same gateways and a bare NATS request/reply round trip;
   NATS messages published during the queries (``/varz in_msgs`` delta; presence
   messages by subject class; heartbeats, which flow regardless, shown apart).
2. **join/leave**: one more user subscribes to / unsubscribes from the room on gateway
   0, ``--joins`` times; latency until an observer on the last gateway gets the
   ``online`` / ``offline`` event, and the NATS messages per join and per leave.
3. **room open**: the same, in a room gateway 0 does not hold yet (observers on the
   other gateways): the first local subscriber costs a snapshot (request + replies).
4. **dead gateway**: the last gateway is SIGKILLed; time until the observer on gateway 0
   has the first ``offline`` event (detection; default heartbeat settings 2 s x 3,
   checked every 0.5 s, so 4.5-6.5 s) and one for each of its users (detection plus
   the fan-out of those events to every remaining socket).

Every socket lives in this one process, so a presence event in the big room costs it
``--users`` frames to read: the join/leave latency in that room is mostly the clients'.
The room-open rows (4 sockets in the room) show the path itself.

    .venv/bin/python bench/presence.py [--users 1000] [--gateways 4] [--json out.json]

The machine is shared and noisy: compare latencies to the same-run baselines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import uvloop
from nats.aio.msg import Msg
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from roomcast.common.subjects import is_object_id
from roomcast.common.tokens import (
    TokenSigner,
    TokenVerifier,
    generate_private_key_pem,
    load_private_key,
)
from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.processes import (
    NatsServer,
    ServiceProcess,
    free_port,
    port_accepts,
    wait_until,
)

ISSUER, AUDIENCE = "roomcast-auth", "roomcast"
# Sockets connecting at once during setup (each costs a handshake, a token check and a
# membership lookup in the gateways).
CONNECT_CONCURRENCY = 50
# Sockets that take turns joining and leaving (each may send 20 frames/s, burst 40).
JOINERS = 10
# Longest wait for one expected frame.
FRAME_TIMEOUT = 60.0


def new_id() -> str:
    return uuid.uuid4().hex[:24]


class MonitoredNats(NatsServer):
    """nats-server with its HTTP monitoring port (``/varz``)."""

    def __init__(self) -> None:
        super().__init__()
        self.monitor_port = free_port()
        self.argv += ["-m", str(self.monitor_port)]

    def start(self) -> None:
        super().start()
        wait_until(lambda: port_accepts("127.0.0.1", self.monitor_port), timeout=10, what="varz")

    async def varz(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            body: dict[str, Any] = (
                await client.get(f"http://127.0.0.1:{self.monitor_port}/varz")
            ).json()
        return body


class SubjectCounter:
    """Counts every NATS message by subject class (a subscriber on ``>``)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    async def on_msg(self, msg: Msg) -> None:
        subject = msg.subject
        if subject == "presence.heartbeat":
            kind = "heartbeat"
        elif subject.startswith("ephemeral.room."):
            kind = "ephemeral"
        elif subject.startswith("presence.query."):
            kind = "query"
        elif subject.startswith("_INBOX."):
            # presence snapshot replies: _INBOX.<gateway inbox>.<room id>.<nonce>;
            # other inbox traffic is request/reply of JetStream reads (the live path)
            parts = subject.split(".")
            kind = "inbox" if len(parts) == 4 and is_object_id(parts[2]) else "other"
        else:
            kind = "other"
        self.counts[kind] += 1

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)


class Client(WSListener):
    """A lean WebSocket client: counts frames, decodes only while someone waits."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: WSTransport | None = None
        self.frames = 0
        self.waiters: list[
            tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]
        ] = []
        self.keep: Callable[[dict[str, Any]], bool] | None = None
        self.kept: list[tuple[float, dict[str, Any]]] = []
        self.closed = False
        self.close_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        for _, future in self.waiters:
            if not future.done():
                future.set_exception(ConnectionError(f"socket closed: {self.close_code}"))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code())
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        self.frames += 1
        if not self.waiters and self.keep is None:
            return
        data = orjson.loads(frame.get_payload_as_bytes())
        if self.keep is not None and self.keep(data):
            self.kept.append((time.perf_counter(), data))
        for entry in list(self.waiters):
            predicate, future = entry
            if not future.done() and predicate(data):
                future.set_result(data)
                self.waiters.remove(entry)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, orjson.dumps(obj))

    async def request(
        self, obj: dict[str, Any] | None, predicate: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.append((predicate, future))
        if obj is not None:
            self.send(obj)
        return await asyncio.wait_for(future, FRAME_TIMEOUT)


async def open_client(url: str, token: str, room: str | None) -> Client:
    _, listener = await ws_connect(Client, url, max_frame_size=16 * 1024 * 1024)
    assert isinstance(listener, Client)
    await listener.request({"type": "auth", "token": token}, lambda f: f.get("type") == "ready")
    if room is not None:
        await subscribe(listener, room)
    return listener


async def subscribe(client: Client, room: str) -> None:
    frame = await client.request(
        {"type": "subscribe", "room": room},
        lambda f: f.get("room") == room and f.get("type") in ("subscribed", "error"),
    )
    assert frame["type"] == "subscribed", frame


def is_answer(room: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f.get("type") == "presence" and f.get("room") == room and "online" in f


def is_event(room: str, user: str, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: (
        f.get("type") == "presence"
        and f.get("room") == room
        and f.get("status") == status
        and f["user"]["id"] == user
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values) * 1000, 3),
        "p99": round(pct(values, 0.99) * 1000, 3),
        "n": len(values),
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.signer = TokenSigner(
            load_private_key(generate_private_key_pem()),
            issuer=ISSUER,
            audience=AUDIENCE,
            access_ttl_seconds=3600,
        )
        self.nats = MonitoredNats()
        self.jwks = JwksServer(self.signer.jwks())
        self.rooms = FakeRooms(
            TokenVerifier.from_jwks(self.signer.jwks(), issuer=ISSUER, audience=AUDIENCE)
        )
        self.gateways: list[ServiceProcess] = []
        self.urls: list[str] = []
        self.counter = SubjectCounter()
        self.results: dict[str, Any] = {}
        self.askers: list[Client] = []

    def token(self, user: str) -> str:
        token, _ = self.signer.issue_access(
            user_id=user, username=f"u{user[:8]}", display_name=f"User {user[:6]}", ttl_seconds=3600
        )
        return token

    async def start(self) -> None:
        self.nats.start()
        self.jwks.start()
        await self.rooms.start()
        for i in range(self.args.gateways):
            port = free_port()
            env = {
                "ROOMCAST_GATEWAY_NATS_URL": self.nats.url,
                "ROOMCAST_GATEWAY_JWKS_URL": self.jwks.url,
                "ROOMCAST_GATEWAY_ROOMS_TARGET": self.rooms.target,
                "ROOMCAST_GATEWAY_PORT": str(port),
                "ROOMCAST_GATEWAY_INSTANCE_NAME": f"bench-{i}",
                "ROOMCAST_GATEWAY_LOG_LEVEL": "WARNING",
            }
            gw = ServiceProcess(
                "gateway", env, ready_url=f"http://127.0.0.1:{port}/readyz", name=f"gw{i}"
            )
            await asyncio.to_thread(gw.start)
            self.gateways.append(gw)
            self.urls.append(f"ws://127.0.0.1:{port}/v1/ws")

    async def stop(self) -> None:
        for gw in self.gateways:
            await asyncio.to_thread(gw.stop)
        await self.rooms.stop()
        self.jwks.stop()
        self.nats.cleanup()

    async def run(self) -> None:
        args = self.args
        nc = await nats.connect(self.nats.url)
        await nc.subscribe(">", cb=self.counter.on_msg)
        room = new_id()
        users = [new_id() for _ in range(args.users)]
        for user in users:
            self.rooms.add_member(room, user)
        print(f"connecting {args.users} sockets to {args.gateways} gateways...", flush=True)
        started = time.perf_counter()
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(i: int, user: str) -> Client:
            async with sem:
                return await open_client(self.urls[i % len(self.urls)], self.token(user), room)

        clients = await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
        observers = clients[: len(self.urls)]  # client i is on gateway i % gateways
        # queries and pings rotate over every socket: one socket sending hundreds of
        # frames in a row would hit the per-socket rate limit (20/s, burst 40)
        self.askers = list(clients)
        setup = time.perf_counter() - started
        # everyone online everywhere (polling: the last deltas may still be in flight)
        for obs in observers:
            while True:
                answer = await obs.request({"type": "presence", "room": room}, is_answer(room))
                if answer["count"] == args.users:
                    break
                await asyncio.sleep(0.1)
        print(f"  setup {setup:.1f} s; all {args.users} online on every gateway", flush=True)
        self.results["setup_seconds"] = round(setup, 1)
        self.results["presence_frames_received_in_setup"] = sum(c.frames for c in clients)

        await self.baselines(nc, observers)
        await self.queries(observers, room)
        # Joiners on gateway 0, used in turn: each join/leave is 2 frames, and one socket
        # may send 20 frames/s (burst 40).
        extras = [new_id() for _ in range(JOINERS)]
        fresh = new_id()
        joiners = []
        for extra in extras:
            self.rooms.add_member(room, extra)
            self.rooms.add_member(fresh, extra)
            joiners.append((await open_client(self.urls[0], self.token(extra), None), extra))
        await self.join_leave("join_leave", joiners, observers[-1], room)
        watchers = []
        for i in range(1, len(self.urls)):
            watcher_id = new_id()
            self.rooms.add_member(fresh, watcher_id)
            watchers.append(await open_client(self.urls[i], self.token(watcher_id), fresh))
        await self.join_leave("room_open", joiners, watchers[-1], fresh, query=True)
        await self.dead_gateway(observers[0], room, users)
        await nc.close()

    async def window(self, coro: Any) -> tuple[Any, int, Counter[str], float]:
        """Run ``coro``; its result, in_msgs published meanwhile, by class, seconds."""
        before_varz = (await self.nats.varz())["in_msgs"]
        before = self.counter.snapshot()
        started = time.perf_counter()
        result = await coro
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.2)  # let the last messages of the window reach the counter
        published = (await self.nats.varz())["in_msgs"] - before_varz
        return result, published, self.counter.snapshot() - before, elapsed

    async def baselines(self, nc: nats.NATS, observers: list[Client]) -> None:
        responder = await nats.connect(self.nats.url)

        async def echo(msg: Msg) -> None:
            await responder.publish(msg.reply, msg.data)

        await responder.subscribe("bench.echo", cb=echo)
        await responder.flush()
        rtts = []
        for _ in range(self.args.queries):
            t = time.perf_counter()
            await nc.request("bench.echo", b"x" * 64, timeout=5)
            rtts.append(time.perf_counter() - t)
        await responder.close()
        pings = []
        for i in range(self.args.queries):
            obs = self.askers[i % len(self.askers)]
            t = time.perf_counter()
            await obs.request({"type": "ping"}, lambda f: f.get("type") == "pong")
            pings.append(time.perf_counter() - t)
        self.results["baseline_nats_request_reply_ms"] = ms(rtts)
        self.results["baseline_ws_ping_ms"] = ms(pings)
        print(f"  baseline NATS request/reply {ms(rtts)}, WS ping {ms(pings)}", flush=True)

    async def queries(self, observers: list[Client], room: str) -> None:
        async def run() -> list[float]:
            latencies = []
            for i in range(self.args.queries):
                obs = self.askers[-1 - i % len(self.askers)]
                t = time.perf_counter()
                answer = await obs.request({"type": "presence", "room": room}, is_answer(room))
                latencies.append(time.perf_counter() - t)
                assert answer["count"] == self.args.users
            return latencies

        latencies, published, by_kind, elapsed = await self.window(run())
        presence_msgs = by_kind["ephemeral"] + by_kind["query"] + by_kind["inbox"]
        self.results["query"] = {
            "latency_ms": ms(latencies),
            "answer_users": self.args.users,
            "nats_in_msgs_total": published,
            "nats_presence_msgs": presence_msgs,
            "nats_presence_msgs_per_query": presence_msgs / len(latencies),
            "nats_heartbeats_meanwhile": by_kind["heartbeat"],
            "seconds": round(elapsed, 2),
        }
        print(f"  query: {self.results['query']}", flush=True)

    async def join_leave(
        self,
        name: str,
        joiners: list[tuple[Client, str]],
        observer: Client,
        room: str,
        *,
        query: bool = False,
    ) -> None:
        """``query``: the joiner asks who is online before leaving (for a room its gateway
        just opened, that waits for the snapshot, whose messages are then counted)."""
        first_queries: list[float] = []

        async def run() -> tuple[list[float], list[float]]:
            joins, leaves = [], []
            for i in range(self.args.joins):
                joiner, user = joiners[i % len(joiners)]
                t = time.perf_counter()
                seen = observer.request(None, is_event(room, user, "online"))
                joiner.send({"type": "subscribe", "room": room})
                await seen
                joins.append(time.perf_counter() - t)
                if query:
                    t = time.perf_counter()
                    await joiner.request({"type": "presence", "room": room}, is_answer(room))
                    first_queries.append(time.perf_counter() - t)
                t = time.perf_counter()
                seen = observer.request(None, is_event(room, user, "offline"))
                joiner.send({"type": "unsubscribe", "room": room})
                await seen
                leaves.append(time.perf_counter() - t)
            return joins, leaves

        (joins, leaves), published, by_kind, elapsed = await self.window(run())
        n = self.args.joins
        presence = {k: by_kind[k] / (2 * n) for k in ("ephemeral", "query", "inbox")}
        other = by_kind["other"] / (2 * n)
        self.results[name] = {
            "join_to_remote_online_event_ms": ms(joins),
            "leave_to_remote_offline_event_ms": ms(leaves),
            "nats_presence_msgs_per_join_or_leave": presence,
            "nats_in_msgs_per_join_or_leave_incl_heartbeats": round(published / (2 * n), 2),
            "nats_other_msgs_per_join_or_leave": round(other, 2),
            "nats_heartbeats_meanwhile": by_kind["heartbeat"],
            "seconds": round(elapsed, 2),
        }
        if first_queries:
            self.results[name]["first_query_ms"] = ms(first_queries)
        print(f"  {name}: {self.results[name]}", flush=True)

    async def dead_gateway(self, observer: Client, room: str, users: list[str]) -> None:
        victim_index = len(self.gateways) - 1
        victims = {u for i, u in enumerate(users) if i % len(self.gateways) == victim_index}
        gone: set[str] = set()
        done = asyncio.get_running_loop().create_future()
        first: list[float] = []

        def keep(frame: dict[str, Any]) -> bool:
            if (
                frame.get("type") == "presence"
                and frame.get("room") == room
                and frame.get("status") == "offline"
            ):
                gone.add(frame["user"]["id"])
                if not first:
                    first.append(time.perf_counter())
                if victims <= gone and not done.done():
                    done.set_result(None)
            return False

        observer.keep = keep
        killed = time.perf_counter()
        await asyncio.to_thread(self.gateways[victim_index].kill)
        await asyncio.wait_for(done, 60)
        elapsed = time.perf_counter() - killed
        observer.keep = None
        self.results["dead_gateway"] = {
            "users_on_it": len(victims),
            "first_offline_after_s": round(first[0] - killed, 2),
            "all_offline_after_s": round(elapsed, 2),
            "documented_detection_bound_s": 6.5,
        }
        print(f"  dead gateway: {self.results['dead_gateway']}", flush=True)


def report(results: dict[str, Any]) -> str:
    base = results["baseline_nats_request_reply_ms"]["p50"]
    ping = results["baseline_ws_ping_ms"]["p50"]
    q = results["query"]
    rows = [
        "| measure | p50 ms | p99 ms | NATS msgs | vs baseline |",
        "|---|---|---|---|---|",
        f"| baseline: NATS request/reply | {base} | "
        f"{results['baseline_nats_request_reply_ms']['p99']} | 2 | 1 |",
        f"| baseline: WS ping/pong | {ping} | {results['baseline_ws_ping_ms']['p99']} | 0 | 1 |",
        f"| presence query ({q['answer_users']} users) | {q['latency_ms']['p50']} | "
        f"{q['latency_ms']['p99']} | {q['nats_presence_msgs_per_query']:.2f}/query | "
        f"{q['latency_ms']['p50'] / ping:.1f}x ping |",
    ]
    for name in ("join_leave", "room_open"):
        r = results[name]
        msgs = sum(r["nats_presence_msgs_per_join_or_leave"].values())
        rows.append(
            f"| {name}: join → remote online | {r['join_to_remote_online_event_ms']['p50']} | "
            f"{r['join_to_remote_online_event_ms']['p99']} | {msgs:.2f}/join-or-leave | "
            f"{r['join_to_remote_online_event_ms']['p50'] / base:.1f}x NATS rtt |"
        )
        rows.append(
            f"| {name}: leave → remote offline | {r['leave_to_remote_offline_event_ms']['p50']} | "
            f"{r['leave_to_remote_offline_event_ms']['p99']} | | "
            f"{r['leave_to_remote_offline_event_ms']['p50'] / base:.1f}x NATS rtt |"
        )
    d = results["dead_gateway"]
    rows.append(
        f"| dead gateway ({d['users_on_it']} users) → first / all offline | "
        f"{d['first_offline_after_s'] * 1000:.0f} / {d['all_offline_after_s'] * 1000:.0f} | | | "
        f"detection bound {d['documented_detection_bound_s']} s |"
    )
    return "\n".join(rows)


async def amain(args: argparse.Namespace) -> None:
    bench = Bench(args)
    try:
        await bench.start()
        await bench.run()
    finally:
        await bench.stop()
    print()
    print(report(bench.results))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(bench.results, indent=2))  # noqa: ASYNC240


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--joins", type=int, default=50)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
