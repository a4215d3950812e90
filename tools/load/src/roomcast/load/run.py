"""The coordinator: provisions users and rooms, starts the worker processes, drives
the phases (connect, send, drain), restarts stack services on schedule, aggregates the
per-second stats and reconciles the accounting into a report."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from roomcast.load import plan as planning
from roomcast.load import wire
from roomcast.load.accounting import Accounting, reconcile
from roomcast.load.client import SocketSpec
from roomcast.load.dbtop import TopReading, top_table, try_read_top
from roomcast.load.histogram import Histogram
from roomcast.load.pipe import EOF_MESSAGE, start_reader
from roomcast.load.proccpu import Reading, cpu_table, read_all
from roomcast.load.promtext import scrape_gateway
from roomcast.load.provision import (
    Rest,
    UserCred,
    provision_rooms,
    provision_users,
    refresh_tokens,
)
from roomcast.load.report import build_report
from roomcast.load.scenario import Scenario
from roomcast.load.timeline import Timeline, progress_line
from roomcast.load.worker import ACK_WAIT_SECONDS, WorkerPlan

# The coordinator's tick: the progress line and timeline rows, this long after each
# wall-clock second (when the workers' snapshots of that second have arrived).
TICK_SECONDS = 1.0
TICK_LAG_SECONDS = 0.3
# Delay between "go" and the first scheduled send, so every worker has the command
# before its timetable starts.
GO_DELAY_SECONDS = 0.5
# How long a worker may take to exit after "exit" before it is terminated.
WORKER_EXIT_SECONDS = 10.0
# Slack on top of each phase's own bound before the coordinator declares a worker hung:
# worker start-up (interpreter, imports) and a busy machine.
PHASE_SLACK_SECONDS = 60.0


# Rows of the load generator's own processes in the per-process CPU table.
COORDINATOR_ROW = "load coordinator"
WORKER_ROW = "load worker"


class RunError(RuntimeError):
    pass


@dataclass
class RunConfig:
    scenario: Scenario
    gateways: list[str]  # gateway base URLs (http(s)://host:port) or ws(s):// URLs
    workers: int = 1
    source_ips: list[str] = field(default_factory=list)
    users_file: Path | None = None
    raw: bool = False  # the raw picows baseline server instead of gateways (benchmarks)
    progress: bool = True
    stack: Any = None  # roomcast.testing.stack.Stack, for restarts
    users: list[UserCred] | None = None  # already provisioned
    room_ids: list[str] | None = None
    label: str = ""
    # Reads each target's memory before and after the connect phase (scenarios with
    # [memory] measure = true); default: the gateways' /metrics. Benchmarks of the raw
    # server pass one reading /proc.
    memory_probe: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None
    # The stack's processes by name (pid, or None when not running), read at both ends
    # of the window for the per-process CPU table; the load generator's own processes
    # are always added. --start-stack passes the started stack's.
    stack_pids: Callable[[], dict[str, int | None]] | None = None
    # The stack's database, read with ``top`` at both ends of the window for the
    # database-time-by-namespace table (roomcast.load.dbtop); --start-stack passes it.
    mongo_url: str | None = None


@dataclass
class _Worker:
    index: int
    process: Any
    conn: Connection
    alive: bool = True


class Coordinator:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.scenario = cfg.scenario
        self.layout = planning.build_layout(cfg.scenario)
        self.n_workers = planning.check_workers(len(self.layout.sockets), cfg.workers)
        self.workers: list[_Worker] = []
        self.inbox: asyncio.Queue[tuple[int, tuple[Any, ...]]] = asyncio.Queue()
        self.t_start = time.time()
        self.timeline = Timeline(self.t_start)
        self.run_lat = Histogram()
        self._next_tick = math.floor(time.time()) + TICK_SECONDS + TICK_LAG_SECONDS
        self._tty = sys.stderr.isatty()
        self.restarts: list[dict[str, Any]] = []
        self.phase = "setup"
        self.run_id = secrets.token_hex(3)
        self.t_connect = self.t_start
        self.load_before = os.getloadavg()
        # What provisioning gave (or was given): a rate ladder's next step reuses them.
        self.users: list[UserCred] = []
        self.room_ids: list[str] = []

    def _pids(self) -> dict[str, int | None]:
        """Every process of the CPU table: the stack's, then the load generator's."""
        pids = dict(self.cfg.stack_pids()) if self.cfg.stack_pids is not None else {}
        pids[COORDINATOR_ROW] = os.getpid()
        for w in self.workers:
            pids[f"{WORKER_ROW} {w.index}"] = w.process.pid
        return pids

    def _load_generator_rows(self) -> frozenset[str]:
        return frozenset([COORDINATOR_ROW, *(f"{WORKER_ROW} {w.index}" for w in self.workers)])

    def say(self, text: str) -> None:
        if self.cfg.progress:
            print(text, file=sys.stderr, flush=True)

    def _progress(self, label: str, done: int, total: int) -> None:
        if self.cfg.progress and (done == total or done % 200 == 0):
            self.say(f"  {label}: {done}/{total}")

    # --- setup ------------------------------------------------------------------------

    async def provision(self) -> tuple[list[UserCred], list[str]]:
        if self.cfg.raw:
            return [], []
        bases = [wire.http_base(u) if "://" in u else u for u in self.cfg.gateways]
        rest = Rest(bases)
        try:
            if self.cfg.users is not None and self.cfg.room_ids is not None:
                # Provisioned by an earlier run (a rate ladder's previous step): only
                # the tokens may need renewing.
                await refresh_tokens(rest, self.cfg.users)
                return self.cfg.users, self.cfg.room_ids
            t = time.monotonic()
            users = await provision_users(
                rest,
                self.layout.users,
                users_file=self.cfg.users_file,
                progress=self._progress,
            )
            label = self.cfg.label or f"load {self.scenario.name}"
            room_ids = await provision_rooms(
                rest, self.layout, users, label=label, progress=self._progress
            )
            self.say(
                f"provisioned {len(users)} users, {len(room_ids)} rooms in "
                f"{time.monotonic() - t:.1f}s ({rest.retries} retries, "
                f"{rest.rate_limited} rate-limited waits)"
            )
            return users, room_ids
        finally:
            await rest.aclose()

    def worker_plans(self, users: list[UserCred], room_ids: list[str]) -> list[WorkerPlan]:
        cfg = self.cfg
        n = self.n_workers
        urls = [wire.ws_url(g, raw=cfg.raw) for g in cfg.gateways]
        rest_urls = [wire.http_base(g) for g in cfg.gateways]
        plans = [
            WorkerPlan(
                worker=w,
                urls=urls,
                rest_urls=rest_urls,
                raw=cfg.raw,
                message_bytes=self.scenario.message_bytes,
                connect_rate=self.scenario.connect_rate / n,
                connect_timeout=self.scenario.connect_timeout,
                seed=self.scenario.seed,
                run_id=self.run_id,
                ack_wait=self.scenario.drain_timeout,
            )
            for w in range(n)
        ]
        for s in self.layout.sockets:
            user = users[s.user] if users else UserCred("", "")
            spec = SocketSpec(
                index=s.index,
                gateway=planning.gateway_of(s.index, n, len(urls)),
                source_ip=planning.source_ip_of(s.index, n, len(urls), cfg.source_ips),
                rooms=[room_ids[r] for r in s.rooms] if room_ids else [],
                sends=[(room_ids[r] if room_ids else "raw", rate) for r, rate in s.sends],
                typing=[(room_ids[r], rate) for r, rate in s.typing] if room_ids else [],
                reads=[(room_ids[r], rate) for r, rate in s.reads] if room_ids else [],
                reacts=[(room_ids[r], rate) for r, rate in s.reacts] if room_ids else [],
                threads={
                    room_ids[r]: (reply, mention, users[self.layout.sockets[o].user].username)
                    for r, (reply, mention, o) in s.threads.items()
                }
                if room_ids and users
                else {},
                files={room_ids[r]: share for r, share in s.files.items()} if room_ids else {},
                slow_rooms=frozenset(
                    room_ids[r] for r, _ in s.sends if self.layout.rooms[r].slow_mode_seconds
                )
                if room_ids
                else frozenset(),
                inbox_rate=self.scenario.inbox_rate if users else 0.0,
                user=s.user,
                username=user.username,
                password=user.password,
                token=user.token,
            )
            plans[planning.worker_of(s.index, n)].sockets.append(spec)
        return plans

    def start_workers(self, plans: list[WorkerPlan]) -> None:
        loop = asyncio.get_running_loop()
        for p in plans:
            ours, theirs = socket.socketpair()
            proc = subprocess.Popen(
                [sys.executable, "-m", "roomcast.load.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
            )
            theirs.close()
            conn = Connection(ours.detach())
            w = _Worker(p.worker, proc, conn)
            self.workers.append(w)
            conn.send(p)
            start_reader(conn, loop, functools.partial(self._on_message, w))

    def _on_message(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        if msg == EOF_MESSAGE:
            w.alive = False
            msg = ("dead",)
        self.inbox.put_nowait((w.index, msg))

    def broadcast(self, *msg: Any) -> None:
        for w in self.workers:
            if w.alive:
                with contextlib.suppress(BrokenPipeError, OSError):
                    w.conn.send(msg)

    # --- the event pump ---------------------------------------------------------------

    def _tick(self) -> None:
        row = self.timeline.tick(time.time(), self.phase)
        overall = self.run_lat.percentile(99) / 1000 if self.run_lat.total else None
        if self.cfg.progress:
            line = progress_line(row, len(self.layout.sockets), overall)
            if self._tty:  # one line, rewritten in place
                print("\r" + line + "\x1b[K", end="", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)

    async def pump(
        self,
        *,
        kind: str | None = None,
        until: Callable[[], bool] | None = None,
        within: float | None = None,
    ) -> dict[int, tuple[Any, ...]]:
        """Process worker messages and ticks until every worker sent ``kind``, or
        ``until()`` is true; a RunError if that takes more than ``within`` seconds."""
        got: dict[int, tuple[Any, ...]] = {}
        deadline = None if within is None else time.monotonic() + within
        while True:
            if kind is not None and len(got) >= len(self.workers):
                return got
            if until is not None and until():
                return got
            if deadline is not None and time.monotonic() > deadline:
                missing = sorted(set(range(len(self.workers))) - set(got))
                raise RunError(f"workers {missing} sent no {kind!r} within {within:.0f}s")
            timeout = max(0.0, self._next_tick - time.time())
            try:
                w, msg = await asyncio.wait_for(self.inbox.get(), min(timeout, 0.2))
            except TimeoutError:
                if time.time() >= self._next_tick:
                    self._next_tick = math.floor(time.time()) + TICK_SECONDS + TICK_LAG_SECONDS
                    self._tick()
                continue
            if msg[0] == "stats":
                self.timeline.on_stats(msg[1])
                self.run_lat.merge_sparse(msg[1]["lat"])
            elif msg[0] == "dead":
                raise RunError(f"worker {w} exited unexpectedly")
            elif msg[0] == kind:
                got[w] = msg[1:]

    # --- phases -----------------------------------------------------------------------

    async def memory_snapshot(self) -> list[dict[str, Any]]:
        if self.cfg.memory_probe is not None:
            return await self.cfg.memory_probe()
        if self.cfg.raw:
            return []
        async with httpx.AsyncClient(timeout=10.0) as client:
            return [await scrape_gateway(client, wire.http_base(g)) for g in self.cfg.gateways]

    async def _restart(self, service: str, at: float) -> None:
        stack = self.cfg.stack
        started = time.time()
        entry: dict[str, Any] = {"service": service, "at": at}
        try:
            await asyncio.to_thread(stack.restart, service)
            entry["ready_after_s"] = round(time.time() - started, 2)
        except Exception as exc:  # reported, and fails the run's expectations
            entry["error"] = str(exc)
        entry["t"] = round(started - self.t_start, 2)
        self.restarts.append(entry)

    async def _rolling_restarts(self, t0: float) -> None:
        """One service at a time, each at its scheduled time (or when the previous
        restart finished, if that is later)."""
        for r in self.scenario.restarts:
            delay = t0 + r.at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._restart(r.service, r.at)

    async def run(self) -> dict[str, Any]:
        sc = self.scenario
        if sc.restarts and self.cfg.stack is None:
            raise RunError(f"scenario {sc.name} restarts services: run it with --start-stack")
        users, room_ids = await self.provision()
        self.users, self.room_ids = users, room_ids
        memory_before = await self.memory_snapshot() if sc.measure_memory else []
        plans = self.worker_plans(users, room_ids)
        self.phase = "connect"
        self.say(
            f"{sc.name}: {len(self.layout.sockets)} sockets, {len(self.layout.rooms)} rooms, "
            f"{self.n_workers} workers, gateways {', '.join(self.cfg.gateways)}"
        )
        self.t_connect = time.time()
        self.start_workers(plans)
        try:
            return await self._phases(memory_before)
        finally:
            await self.stop_workers()

    async def _phases(self, memory_before: list[dict[str, Any]]) -> dict[str, Any]:
        sc = self.scenario
        ready = await self.pump(kind="ready", within=sc.connect_timeout + PHASE_SLACK_SECONDS)
        live = sum(int(r[0]["live"]) for r in ready.values())
        connect_s = time.time() - self.t_connect
        self.say(f"\nconnected: {live}/{len(self.layout.sockets)} live after {connect_s:.1f}s")
        memory_after: list[dict[str, Any]] = []
        if sc.measure_memory:
            settle_until = time.monotonic() + sc.memory_settle
            self.phase = "settle"
            await self.pump(until=lambda: time.monotonic() >= settle_until)
            memory_after = await self.memory_snapshot()
        top_before = await self._db_top()
        cpu_before = read_all(self._pids())
        t_cpu = time.monotonic()
        t0 = time.time() + GO_DELAY_SECONDS
        self.broadcast("go", t0, sc.duration)
        self.phase = "send"
        restarts = asyncio.create_task(self._rolling_restarts(t0))
        t_go = time.time()
        ack_wait = max(ACK_WAIT_SECONDS, sc.drain_timeout)
        done = await self.pump(
            kind="sent_done",
            within=GO_DELAY_SECONDS + sc.duration + ack_wait + PHASE_SLACK_SECONDS,
        )
        self.phase = "drain"
        heads: dict[str, int] = {}
        for (h,) in done.values():
            for room, seq in h.items():
                heads[room] = max(heads.get(room, 0), seq)
        self.broadcast("heads", heads, sc.drain_timeout)
        finals = await self.pump(kind="final", within=sc.drain_timeout + PHASE_SLACK_SECONDS)
        cpu_after = read_all(self._pids())
        cpu_seconds = time.monotonic() - t_cpu
        top_after = await self._db_top()
        await restarts
        if self.cfg.progress and self._tty:
            print(file=sys.stderr)
        data = [f[0] for f in finals.values()]
        accounting = reconcile(
            [d["sends"] for d in data], [pair for d in data for pair in d["rooms"]]
        )
        report = build_report(
            scenario=sc,
            layout=self.layout,
            cfg_gateways=self.cfg.gateways,
            workers=self.n_workers,
            source_ips=self.cfg.source_ips,
            raw=self.cfg.raw,
            t_start=self.t_start,
            t_go=t_go,
            t0=t0,
            connect_seconds=connect_s,
            live_after_connect=live,
            finals=data,
            accounting=accounting,
            timeline=self.timeline,
            memory_before=memory_before,
            memory_after=memory_after,
            restarts=self.restarts,
            process_cpu=self._cpu_table(cpu_before, cpu_after, accounting, cpu_seconds),
            load_average=[self.load_before, os.getloadavg()],
        )
        if top_before is not None and top_after is not None:
            report["database_top"] = top_table(
                top_before, top_after, acked=int(accounting.totals()["acked"])
            )
        return report

    async def _db_top(self) -> TopReading | str | None:
        if self.cfg.mongo_url is None:
            return None
        return await asyncio.to_thread(try_read_top, self.cfg.mongo_url)

    def _cpu_table(
        self,
        before: dict[str, Reading],
        after: dict[str, Reading],
        accounting: Accounting,
        seconds: float,
    ) -> dict[str, Any]:
        return cpu_table(
            before,
            after,
            acked=int(accounting.totals()["acked"]),
            seconds=seconds,
            load_generator=self._load_generator_rows(),
        )

    async def stop_workers(self) -> None:
        self.broadcast("exit")
        deadline = time.monotonic() + WORKER_EXIT_SECONDS
        for w in self.workers:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.to_thread(w.process.wait, remaining)
            except subprocess.TimeoutExpired:
                w.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(w.process.wait, 5.0)
            w.conn.close()


async def run_scenario(cfg: RunConfig) -> dict[str, Any]:
    return await Coordinator(cfg).run()
