"""A load-generator process: its share of the sockets, its senders' timetable, and a
stats line to the coordinator every second.

The coordinator talks to a worker over a multiprocessing pipe:

* worker → ``("ready", info)`` once every socket is live (or the connect timeout hit);
* coordinator → ``("go", t0, duration)``: send from wall time ``t0`` for ``duration`` s;
* worker → ``("sent_done", heads)`` after its last scheduled send was acked (or timed
  out): the highest acked seq per room;
* coordinator → ``("heads", heads, timeout)``: every worker's heads merged; the worker
  waits until each member holds its room's head, then → ``("final", data)``;
* coordinator → ``("exit",)`` at any time;
* worker → ``("stats", snapshot)`` every second throughout.

Sending is open-loop: send *i* of a sender is due at ``t0 + offset + i / rate`` whatever
happened to the previous ones, and its latency is measured from that due time, so a
stalled gateway shows up as latency instead of silently slowing the senders down.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from roomcast.load import wire
from roomcast.load.client import Client, Shared, SocketSpec
from roomcast.load.histogram import Histogram
from roomcast.load.pipe import EOF_MESSAGE, start_reader
from roomcast.load.report import SIGNALS

# Stats period: the progress line and the report's timeline have 1 s resolution.
STATS_INTERVAL_SECONDS = 1.0
# How long (at least) to wait for the acks of the last sends: a gateway acks within its
# publish timeout (5 s by default) or errors; a reconnecting sender needs a little more.
# An overloaded gateway queues sends behind each other: the scenario's drain_timeout
# extends the wait.
ACK_WAIT_SECONDS = 15.0
# Condition polling period (the connect phase, the drain): short against a run.
POLL_SECONDS = 0.05
# What a scheduled send of the send phase is: a chat message, a typing notice, a read
# receipt.
_MESSAGE, _TYPING, _READ, _REACT, _INBOX = 0, 1, 2, 3, 4
# One inbox page is what a client shows: the newest 20 (the API's default is 50).
INBOX_PAGE_PATH = "/v1/notifications?limit=20"
# A chat-mix file message's upload: a small attachment (a screenshot-sized 4 KiB), so
# the run loads the upload path (multipart, storage, the share check) and not the
# bandwidth of the machine.
UPLOAD_BYTES = b"x" * 4096


async def poll_until(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll ``condition`` until true or the monotonic ``deadline``. Polling, not an
    Event: the conditions (every socket live, every member at its room's head) change
    on the receive hot path, which must not pay for a check per frame."""
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)
    return True


def first_dues(
    intervals_us: list[int], t0_us: int, end_us: int, rng: random.Random
) -> list[tuple[int, int]]:
    """The timetable's heap of (first due time, sender index): each sender starts at a
    random offset within its first interval, so senders of the same rate do not fire in
    lockstep. A sender whose first turn falls after the end of sending has none: an
    interval longer than the run (an inbox read a minute, a scaled-down rate) must not
    keep the send phase going past ``end_us``."""
    heap = [(t0_us + int(rng.random() * interval), i) for i, interval in enumerate(intervals_us)]
    heap = [entry for entry in heap if entry[0] < end_us]
    heapq.heapify(heap)
    return heap


class Exit(Exception):
    """The coordinator asked this worker to stop."""


@dataclass
class WorkerPlan:
    worker: int
    urls: list[str]  # WebSocket URLs, one per gateway
    rest_urls: list[str]  # for logging in again after a 4001
    raw: bool
    message_bytes: int
    connect_rate: float  # sockets opened per second by this worker
    connect_timeout: float
    sockets: list[SocketSpec] = field(default_factory=list)
    seed: int = 1
    run_id: str = "r"  # prefixes client_ids: a rerun within the gateway's duplicate
    # window (120 s) with the same users must not have its sends deduplicated away
    ack_wait: float = 15.0


class Worker:
    def __init__(self, conn: Connection, plan: WorkerPlan) -> None:
        self.conn = conn
        self.plan = plan
        self.shared = Shared(
            worker=plan.worker,
            urls=plan.urls,
            raw=plan.raw,
            message_bytes=plan.message_bytes,
            run_id=plan.run_id,
        )
        self.shared.relogin = self._relogin
        self.shared.inbox = self._read_inbox
        self.shared.upload = self._upload
        self.clients = [Client(self.shared, spec) for spec in plan.sockets]
        self.commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.lat_all = Histogram()
        self.ack_all = Histogram()
        self._rest: Any = None
        self._tasks: list[asyncio.Task[bool]] = []
        self._main: asyncio.Task[Any] | None = None

    # --- plumbing ---------------------------------------------------------------------

    def _on_message(self, msg: tuple[Any, ...]) -> None:
        if msg == EOF_MESSAGE:
            # The coordinator is gone: stop now, whatever phase this is.
            self.shared.stopping = True
            if self._main is not None:
                self._main.cancel()
            return
        self.commands.put_nowait(msg)

    async def _command(self, *expected: str) -> tuple[Any, ...]:
        cmd = await self.commands.get()
        if cmd[0] == "exit" or cmd[0] not in expected:
            raise Exit
        return cmd

    def _send(self, *msg: Any) -> None:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, OSError):
            self.commands.put_nowait(("exit",))

    async def _relogin(self, spec: SocketSpec) -> None:
        from roomcast.load.provision import Rest, UserCred, login

        if self._rest is None:
            self._rest = Rest(self.plan.rest_urls)
        user = UserCred(spec.username, spec.password)
        await login(self._rest, user)
        spec.token = user.token

    async def _read_inbox(self, spec: SocketSpec) -> bool:
        from roomcast.load.provision import Rest

        if self._rest is None:
            self._rest = Rest(self.plan.rest_urls)
        resp = await self._rest.call("GET", INBOX_PAGE_PATH, token=spec.token)
        return resp.status_code == 200 and isinstance(resp.json().get("items"), list)

    async def _upload(self, spec: SocketSpec, room: str) -> str | None:
        from roomcast.load.provision import Rest

        if self._rest is None:
            self._rest = Rest(self.plan.rest_urls)
        resp = await self._rest.upload(f"/v1/rooms/{room}/files", UPLOAD_BYTES, token=spec.token)
        if resp.status_code >= 300:
            self.shared.error(f"upload:http_{resp.status_code}", resp.text)
            return None
        return str(resp.json()["file"]["id"])

    # --- phases -----------------------------------------------------------------------

    async def run(self) -> None:
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        start_reader(self.conn, loop, self._on_message)
        stats = loop.create_task(self._stats_loop())
        try:
            await self._connect_phase()
            cmd = await self._command("go")
            await self._send_phase(float(cmd[1]), float(cmd[2]))
            heads = await self._await_acks()
            self._send("sent_done", heads)
            cmd = await self._command("heads")
            await self._drain(cmd[1], float(cmd[2]))
            self._tick(send=False)  # the last partial second goes into the totals only
            self._send("final", self._final())
            await self._command()
        except (Exit, asyncio.CancelledError):
            pass
        finally:
            self.shared.stopping = True
            stats.cancel()
            for c in self.clients:
                c.close()
            if self._rest is not None:
                await self._rest.aclose()
            await asyncio.sleep(0.1)  # let the close frames go out

    async def _connect_phase(self) -> None:
        started = time.monotonic()
        rate = max(self.plan.connect_rate, 1.0)
        tasks = []
        for i, client in enumerate(self.clients):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(client.connect_until_up()))
        deadline = started + self.plan.connect_timeout
        total = len(self.clients)
        await poll_until(lambda: self.shared.live >= total, deadline)
        self._tasks = tasks  # keep references: reconnect loops may still be running
        self._send("ready", {"live": self.shared.live, "sockets": total})

    async def _send_phase(self, t0: float, duration: float) -> None:
        rng = random.Random(self.plan.seed * 7919 + self.plan.worker)
        t0_us = int(t0 * 1e6)
        end_us = t0_us + int(duration * 1e6)
        # (client, room, interval in us, what): messages, typing notices, read receipts.
        senders: list[tuple[Client, str, int, int]] = []
        for c in self.clients:
            for room, rate in c.spec.sends:
                room_or_raw = "raw" if self.plan.raw else room
                senders.append((c, room_or_raw, max(1, int(1e6 / rate)), _MESSAGE))
            for room, rate in c.spec.typing:
                senders.append((c, room, max(1, int(1e6 / rate)), _TYPING))
            for room, rate in c.spec.reads:
                senders.append((c, room, max(1, int(1e6 / rate)), _READ))
            for room, rate in c.spec.reacts:
                senders.append((c, room, max(1, int(1e6 / rate)), _REACT))
            if c.spec.inbox_rate:
                senders.append((c, "", max(1, int(1e6 / c.spec.inbox_rate)), _INBOX))
        heap = first_dues([s[2] for s in senders], t0_us, end_us, rng)
        while heap:
            now = wire.now_us()
            due = heap[0][0]
            if due > now:
                await asyncio.sleep((due - now) / 1e6)
                continue
            while heap and heap[0][0] <= now:
                due, i = heapq.heappop(heap)
                client, room, interval, what = senders[i]
                if client.abandoned:
                    pass
                elif what == _MESSAGE:
                    client.send_scheduled(room, due)
                elif what == _TYPING:
                    client.send_typing(room)
                elif what == _READ:
                    client.send_read(room)
                elif what == _REACT:
                    client.send_react(room, due)
                else:
                    client.read_inbox()
                if due + interval < end_us:
                    heapq.heappush(heap, (due + interval, i))
        rest = end_us - wire.now_us()
        if rest > 0:
            await asyncio.sleep(rest / 1e6)

    async def _await_acks(self) -> dict[str, int]:
        await poll_until(
            lambda: not any(c.pending or c.uploading for c in self.clients if not c.abandoned),
            time.monotonic() + max(ACK_WAIT_SECONDS, self.plan.ack_wait),
        )
        return {room: max(seqs) for room, seqs in self.shared.sends.acked_by_room.items() if seqs}

    async def _drain(self, heads: dict[str, int], seconds: float) -> None:
        waiting = [
            (c, m) for c in self.clients for room, m in c.members.items() if heads.get(room, 0)
        ]

        def caught_up() -> bool:
            nonlocal waiting
            waiting = [
                (c, m) for c, m in waiting if not c.abandoned and m.last < heads[m.room.room]
            ]
            return not waiting

        await poll_until(caught_up, time.monotonic() + seconds)

    # --- reporting --------------------------------------------------------------------

    def _tick(self, *, send: bool = True) -> None:
        sh = self.shared
        lat_sec = Histogram()
        if sh.latencies:
            lat_sec.record_many(sh.latencies)
            sh.deliveries += len(sh.latencies)
            del sh.latencies[:]
        snap = {
            "worker": self.plan.worker,
            "t": time.time(),
            "connected": sh.connected,
            "live": sh.live,
            "sockets": len(self.clients),
            "deliveries": sh.deliveries,
            "scheduled": sh.sends.scheduled,
            "sent": sh.sends.sent,
            "resent": sh.sends.resent,
            "acked": sh.sends.acked,
            "reconnects": sh.reconnects,
            "errors": dict(sh.errors) | {f"send:{k}": v for k, v in sh.sends.errors.items()},
            "closes": dict(sh.closes),
            "lat": lat_sec.to_sparse(),
            "ack_lat": sh.ack_sec.to_sparse(),
            "cpu": time.process_time(),
        }
        self.lat_all.merge(lat_sec)
        self.ack_all.merge(sh.ack_sec)
        sh.ack_sec.reset()
        if send:
            self._send("stats", snap)

    async def _stats_loop(self) -> None:
        # On wall-clock second boundaries, so the coordinator (ticking a little after
        # each boundary) gets exactly one snapshot per worker per row.
        while True:
            now = time.time()
            await asyncio.sleep(
                math.floor(now / STATS_INTERVAL_SECONDS + 1) * STATS_INTERVAL_SECONDS - now
            )
            self._tick()

    def _final(self) -> dict[str, Any]:
        for c in self.clients:
            c.finish_replays()
        by_log: dict[str, list[dict[str, Any]]] = {}
        for m in self.shared.members:
            by_log.setdefault(m.room.room, []).append(m.export())
        return {
            "worker": self.plan.worker,
            "sends": self.shared.sends.export(),
            "rooms": [
                (list(self.shared.rooms[room].seqs), members) for room, members in by_log.items()
            ],
            "lat": self.lat_all.to_sparse(),
            "ack_lat": self.ack_all.to_sparse(),
            "ack_by_kind": {k: h.to_sparse() for k, h in self.shared.ack_by_kind.items()},
            "deliveries": self.shared.deliveries,
            "unexpected": self.shared.unexpected,
            "signals": {key: int(getattr(self.shared, key)) for key in SIGNALS},
            "error_examples": self.shared.error_examples,
            "last_delivery_us": self.shared.last_delivery_us,
            "live": self.shared.live,
            "abandoned": sum(1 for c in self.clients if c.abandoned),
            "cpu": time.process_time(),
        }


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_main(conn: Connection, plan: WorkerPlan) -> None:
    _raise_fd_limit()
    # A terminal's Ctrl-C reaches the whole process group: the coordinator handles it,
    # and its exit (the socketpair closing) stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(Worker(conn, plan).run())


def main() -> None:
    """``python -m roomcast.load.worker <fd>``: the coordinator's end of a socketpair is
    ``fd``; the first message on it is the :class:`WorkerPlan`. (A plain subprocess, not
    multiprocessing's spawn: that would re-import the caller's ``__main__``.)"""
    # Run as ``-m``, this module is ``__main__``; the pickled plan refers to the
    # importable module, so use that one's classes throughout.
    from roomcast.load import worker

    conn = Connection(int(sys.argv[1]))
    plan = conn.recv()
    if not isinstance(plan, worker.WorkerPlan):
        raise SystemExit("roomcast.load.worker: expected a WorkerPlan")
    worker.worker_main(conn, plan)


if __name__ == "__main__":
    main()
