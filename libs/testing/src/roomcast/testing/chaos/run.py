"""One chaos run: users and rooms through the public REST API, open-loop chat on raw
sockets spread over both gateways, the faults in turn (each part restarted by the
supervisor), then the checks: every send acked, every receiver holding exactly the acked
messages in one order, history holding each exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roomcast.testing.chaos.faults import (
    SLOW_SECONDS,
    STREAM_FOLLOWER,
    STREAM_LEADER,
    Fault,
    Recovery,
)
from roomcast.testing.chaos.ledger import Ledger
from roomcast.testing.chaos.rest import Api, Unavailable
from roomcast.testing.chaos.wsclient import ChatClient, send_open_loop
from roomcast.testing.stack import Stack
from roomcast.testing.supervisor import Supervisor

# How long the stack may take to heal after one fault before the run fails: a restart
# (~3-10 s under load), reconnects, resends, history catching up; generous for a 2-core
# CI machine shared with other jobs.
FAULT_DEADLINE_SECONDS = 180.0
# After the traffic stops: every resend acked, every delivery in, history caught up.
DRAIN_DEADLINE_SECONDS = 180.0
# Polling interval of the conditions above (no fixed sleeps).
POLL_SECONDS = 0.25
# Between two reads of history's recent pages while a fault heals, and between two full
# reads at the end: each costs a few pages per room.
HISTORY_POLL_SECONDS = 1.0
FINAL_HISTORY_POLL_SECONDS = 2.0
# Where history keeps messages (its defaults), to tell a lost write from a skipped read.
HISTORY_DB = "roomcast_history"
HISTORY_MESSAGES = "messages"


@dataclass(frozen=True)
class ChaosConfig:
    rooms: int = 3
    clients_per_gateway: int = 3  # each subscribes to every room and sends to one
    # Messages/s per sender: 48/s in all with the defaults, each delivered to 6 sockets.
    # Enough that every fault catches sends and history writes in flight, light enough
    # for a 2-core machine that also runs the nine processes of the stack.
    rate_per_sender: float = 8.0
    steady_seconds: float = 3.0  # healthy chat before the first fault and after each
    faults: tuple[Fault, ...] = ()
    rounds: int = 1


@dataclass
class ChaosResult:
    recoveries: list[Recovery]
    problems: list[str]
    sent: int
    acked: int
    delivered: int
    history: int
    transmits: int
    reconnects: int
    seconds: float
    errors: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.sent} sends ({self.transmits} transmissions), {self.acked} acked, "
            f"{self.delivered} deliveries, {self.history} in history, {self.reconnects} "
            f"reconnects, {self.seconds:.0f}s; error frames {self.errors}"
        )


async def _until(condition: Callable[[], Any], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not await condition():
        if time.monotonic() > end:
            raise TimeoutError(f"not within {deadline:.0f}s: {what}")
        await asyncio.sleep(POLL_SECONDS)


@dataclass
class ChaosRun:
    stack: Stack
    supervisor: Supervisor
    config: ChaosConfig
    report: Callable[[str], None] = print
    ledger: Ledger = field(default_factory=Ledger)
    clients: list[ChatClient] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    # room -> a seq up to which history was seen to list every acked message
    _verified: dict[str, int] = field(default_factory=dict)

    async def run(self) -> ChaosResult:
        started = time.monotonic()
        api = Api(self.stack.gateway_urls)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            auditor = await self._setup(api)
            tasks += [asyncio.create_task(c.run()) for c in self.clients]
            await _until(self._all_live, FAULT_DEADLINE_SECONDS, "every client subscribed")
            for i, client in enumerate(self.clients):
                room = self.rooms[i % len(self.rooms)]
                tasks.append(
                    asyncio.create_task(
                        send_open_loop(client, room, self.config.rate_per_sender, stop)
                    )
                )
            await asyncio.sleep(self.config.steady_seconds)  # traffic runs meanwhile
            for _ in range(self.config.rounds):
                for fault in self.config.faults:
                    await self._inject(fault, api, auditor)
            stop.set()
            await _until(self._all_acked, DRAIN_DEADLINE_SECONDS, "every send acked")
            await _until(self._all_delivered, DRAIN_DEADLINE_SECONDS, "every delivery in")
            history = await self._history(api, auditor)
        finally:
            stop.set()
            for client in self.clients:
                await client.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await api.close()
        return self._result(history, time.monotonic() - started)

    # --- setup ------------------------------------------------------------------------

    async def _setup(self, api: Api) -> str:
        tag = uuid.uuid4().hex[:6]
        auditor = f"audit{tag}"
        await api.user(auditor)
        for i in range(self.config.rooms):
            room = await api.call(
                "POST",
                "/v1/rooms",
                auditor,
                json={"name": f"chaos {tag} {i}", "visibility": "public"},
            )
            self.rooms.append(str(room["room"]["id"] if "room" in room else room["id"]))
        ws_urls = [u.replace("http://", "ws://") + "/v1/ws" for u in self.stack.gateway_urls]
        for gateway in range(len(ws_urls)):
            for n in range(self.config.clients_per_gateway):
                username = f"c{tag}g{gateway}n{n}"
                token = await api.user(username)
                for room in self.rooms:
                    await api.call("POST", f"/v1/rooms/{room}/join", username)

                async def login(name: str = username) -> str:
                    return await api.login(name)

                self.clients.append(
                    ChatClient(
                        name=username,
                        urls=ws_urls,
                        gateway=gateway,
                        rooms=list(self.rooms),
                        ledger=self.ledger,
                        token=token,
                        login=login,
                    )
                )
        return auditor

    # --- faults -----------------------------------------------------------------------

    async def _inject(self, fault: Fault, api: Api, auditor: str) -> None:
        part_name = fault.part
        if fault.part in (STREAM_LEADER, STREAM_FOLLOWER):
            part_name = await self._stream_node(leader=fault.part == STREAM_LEADER)
        part = self.stack.parts()[part_name]
        # What history must list once it has recovered: every message acked before now.
        need = {
            room: {seq for seq in acked if seq > self._verified.get(room, 0)}
            for room, acked in self.ledger.acked_by_room().items()
        }
        polled = [0.0]
        t0 = time.monotonic()
        recovery = Recovery(
            f"{fault.label}" + (f" ({part_name})" if part_name != fault.part else ""), part_name, t0
        )
        self.report(f"[chaos] {recovery.label}")
        part.signal(fault.signum)

        async def part_back() -> bool:
            events = self.supervisor.events_of(part_name, "restarted", after=t0)
            if events and recovery.part_back_s is None:
                recovery.part_back_s = events[0].at - t0
            return bool(events)

        async def history_ok() -> bool:
            if time.monotonic() - polled[0] < HISTORY_POLL_SECONDS:
                return False
            polled[0] = time.monotonic()
            for room, seqs in need.items():
                if not seqs:
                    continue
                if await api.history_head(auditor, room) < max(seqs):
                    return False
                try:
                    listed = await api.page_down(auditor, room, floor=min(seqs) - 1)
                except Unavailable:
                    return False
                if not seqs <= {seq for seq, _ in listed}:
                    return False  # a hole: a record history has yet to store
            for room, seqs in need.items():
                if seqs:
                    self._verified[room] = max(seqs)
            recovery.history_ok_s = time.monotonic() - t0
            return True

        async def healed() -> bool:
            # Every condition is polled each time, so each figure is taken when it holds.
            back = await part_back()
            stored = recovery.history_ok_s is not None or await history_ok()
            if not back or recovery.part_back_s is None:
                return False
            now = time.monotonic()
            prompt = all(c.oldest_pending_age(now) < SLOW_SECONDS for c in self.clients)
            # Sends flow again: one scheduled after the part came back was acked (a
            # cluster may still be electing leaders when the process is up).
            flowing = self._acked_after(t0 + recovery.part_back_s)
            return stored and prompt and flowing and await self._all_live()

        try:
            await _until(healed, FAULT_DEADLINE_SECONDS, f"recovery from {recovery.label}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {self._state(recovery)}") from None
        self.report(
            f"[chaos] {recovery.label}: healed after {time.monotonic() - t0:.1f}s "
            f"(part back {recovery.part_back_s:.1f}s, history {recovery.history_ok_s:.1f}s)"
        )
        self.recoveries.append(recovery)
        await asyncio.sleep(self.config.steady_seconds)  # healthy traffic before the next

    async def _stream_node(self, *, leader: bool) -> str:
        """The node leading the CHAT stream, or a node holding one of its replicas."""
        import nats

        nc = await nats.connect(servers=self.stack.nats_url.split(","))
        try:
            info = await nc.jetstream().stream_info("CHAT")
        finally:
            await nc.close()
        cluster = info.cluster
        if cluster is None or cluster.leader is None:
            raise AssertionError("the CHAT stream has no cluster leader")
        if leader:
            return str(cluster.leader)
        followers = [peer.name for peer in cluster.replicas or [] if peer.name]
        if not followers:
            raise AssertionError("the CHAT stream has no follower")
        return str(followers[0])

    # --- conditions -------------------------------------------------------------------

    def _when(self, seq: int) -> str:
        """Where in the schedule a message missing from history was sent and acked."""
        send = next(s for s in self.ledger.sends.values() if s.seq == seq)
        assert send.acked_at is not None
        before = [r for r in self.recoveries if r.injected_at <= send.acked_at]
        fault = before[-1] if before else None
        at = "before the first fault"
        if fault is not None:
            at = f"{send.acked_at - fault.injected_at:.2f}s after {fault.label}"
        return (
            f"  seq {seq} ({send.client_id}, {send.transmits} transmissions): acked {at}, "
            f"{send.acked_at - send.scheduled_at:.2f}s after it was scheduled"
        )

    def _where(self, seq: int) -> str:
        """Whether a message the history API does not list is in history's database
        (then the read path skips it) or not (then the write was lost)."""
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        if self.stack.mongo is None:
            return ""
        client: MongoClient[dict[str, Any]] = MongoClient(
            self.stack.mongo.url, serverSelectionTimeoutMS=5000
        )
        try:
            doc = client[HISTORY_DB][HISTORY_MESSAGES].find_one({"_id": seq}, {"_id": 1})
        except PyMongoError as exc:
            return f"; database not readable ({exc})"
        finally:
            client.close()
        return "; in history's database" if doc else "; not in history's database"

    def _state(self, recovery: Recovery) -> str:
        """What a fault that did not heal left behind, for the failure message."""
        now = time.monotonic()
        live = sum(c.live for c in self.clients)
        pending = sum(c.pending for c in self.clients)
        oldest = max((c.oldest_pending_age(now) for c in self.clients), default=0.0)
        errors: dict[str, int] = {}
        closes: dict[str, int] = {}
        for c in self.clients:
            for code, n in c.errors.items():
                errors[code] = errors.get(code, 0) + n
            for code, n in c.closes.items():
                closes[code] = closes.get(code, 0) + n
        return (
            f"part back after {recovery.part_back_s}s, history ok after "
            f"{recovery.history_ok_s}s, {live}/{len(self.clients)} clients live, "
            f"{pending} sends pending (oldest {oldest:.1f}s), error frames {errors}, "
            f"closes {closes}"
        )

    async def _all_live(self) -> bool:
        return all(c.live for c in self.clients)

    async def _all_acked(self) -> bool:
        return not self.ledger.unacked()

    async def _all_delivered(self) -> bool:
        acked = self.ledger.acked_by_room()
        return all(
            self.ledger.last_seq(c.name, room) >= max(acked.get(room, {0: ""}))
            for c in self.clients
            for room in c.rooms
        )

    def _acked_after(self, since: float) -> bool:
        return any(
            s.acked_at is not None and s.scheduled_at >= since for s in self.ledger.sends.values()
        )

    def _acked_head(self, room: str) -> int:
        return max(self.ledger.acked_by_room().get(room, {0: ""}))

    # --- history ----------------------------------------------------------------------

    async def _history(self, api: Api, user: str) -> dict[str, list[tuple[int, str]]]:
        """Every room's messages, paged through the REST API, once history lists every
        acked message or the deadline passed (then the checks say what is missing). A
        record fetched by a history process that was killed comes back only after the
        consumer's ack wait (30 s): the wait covers it."""
        end = time.monotonic() + DRAIN_DEADLINE_SECONDS
        while True:
            result: dict[str, list[tuple[int, str]]] = {}
            try:
                for room in self.rooms:
                    result[room] = await api.page_down(user, room, floor=0)
            except Unavailable:
                result = {}
            acked = self.ledger.acked_by_room()
            complete = bool(result) and all(
                set(acked.get(room, {})) <= {seq for seq, _ in result[room]} for room in self.rooms
            )
            if complete or time.monotonic() > end:
                return result
            await asyncio.sleep(FINAL_HISTORY_POLL_SECONDS)

    # --- result -----------------------------------------------------------------------

    def _result(self, history: dict[str, list[tuple[int, str]]], seconds: float) -> ChaosResult:
        # Measured once everything is acked: each fault's window ends at the next fault.
        ends = [r.injected_at for r in self.recoveries[1:]] + [time.monotonic()]
        for recovery, end in zip(self.recoveries, ends, strict=True):
            recovery.measure(self.ledger, until=end)
        problems = self.ledger.send_problems()
        problems += self.ledger.delivery_problems({c.name: c.rooms for c in self.clients})
        for room in self.rooms:
            problems += self.ledger.history_problems(room, history.get(room, []))
            stored = {seq for seq, _ in history.get(room, [])}
            lost = sorted(set(self.ledger.acked_by_room().get(room, {})) - stored)
            problems += [self._when(seq) + self._where(seq) for seq in lost[:20]]
        errors: dict[str, int] = {}
        for c in self.clients:
            for code, n in c.errors.items():
                errors[code] = errors.get(code, 0) + n
        sends = self.ledger.sends.values()
        return ChaosResult(
            recoveries=self.recoveries,
            problems=problems,
            sent=len(self.ledger.sends),
            acked=sum(1 for s in sends if s.seq is not None),
            delivered=sum(len(d) for d in self.ledger.deliveries.values()),
            history=sum(len(items) for items in history.values()),
            transmits=sum(s.transmits for s in sends),
            reconnects=sum(max(0, c.connects - 1) for c in self.clients),
            seconds=seconds,
            errors=errors,
        )
