"""The coordinator side of an idle-socket fleet (roomcast.load.idlefleet): spreads
sockets over gateways, source addresses, users and worker processes, starts the
workers, and sums their per-second snapshots (live sockets per gateway, connection
attempts and readies per 100 ms tick) so a benchmark can wait on them and report the
attempt rate of a reconnect wave."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from roomcast.load.backoff import ReconnectPolicy
from roomcast.load.idlefleet import TICK_SECONDS, FleetPlan, tick_of
from roomcast.load.pipe import EOF_MESSAGE, start_reader
from roomcast.load.plan import MAX_SOCKETS_PER_WORKER

# How long a worker may take to close its sockets and exit after "exit".
WORKER_EXIT_SECONDS = 20.0
# Polling period of Fleet.wait: snapshots arrive once a second, a condition on them
# needs no finer polling than this.
POLL_SECONDS = 0.1
# Ephemeral ports one source address can bind (/proc/sys/net/ipv4/ip_local_port_range
# here: 32768-60999), less some slack for what else uses that address.
PORTS_PER_SOURCE_ADDRESS = 28_000


class FleetError(RuntimeError):
    pass


def spread(
    sockets: int, gateways: int, source_ips: list[str], tokens: int
) -> list[tuple[int, str | None, int]]:
    """(gateway, source address, token index) of each socket: gateways round-robin, the
    source addresses cycling per round of gateways (so every gateway sees every
    address), tokens round-robin (a user's devices)."""
    if gateways < 1 or tokens < 1:
        raise FleetError("a fleet needs at least one gateway and one token")
    per_address = -(-sockets // max(1, len(source_ips)))
    if per_address > PORTS_PER_SOURCE_ADDRESS:
        raise FleetError(
            f"{per_address} sockets per source address: more than the "
            f"{PORTS_PER_SOURCE_ADDRESS} ephemeral ports one address has; add source addresses"
        )
    out: list[tuple[int, str | None, int]] = []
    for i in range(sockets):
        ip = source_ips[(i // gateways) % len(source_ips)] if source_ips else None
        out.append((i % gateways, ip, i % tokens))
    return out


def per_second(ticks: dict[int, int], start: float, end: float) -> list[int]:
    """Counts per whole second from ``start`` to ``end`` (wall clock) out of 100 ms ticks."""
    per_s = round(1 / TICK_SECONDS)
    first = math.floor(start)
    out = [0] * max(1, math.ceil(end) - first)
    for t, n in ticks.items():
        second = t // per_s - first
        if 0 <= second < len(out):
            out[second] += n
    return out


def window_total(ticks: dict[int, int], start: float, end: float) -> int:
    lo, hi = tick_of(start), tick_of(end)
    return sum(n for t, n in ticks.items() if lo <= t <= hi)


class Fleet:
    def __init__(
        self,
        urls: list[str],
        sockets: list[tuple[int, str | None, int]],
        tokens: list[str],
        *,
        workers: int,
        connect_rate: float,
        raw: bool = False,
        policy: ReconnectPolicy | None = None,
        seed: int = 1,
        connect_timeout: float | None = None,
    ) -> None:
        self.urls = urls
        self.n_workers = max(workers, -(-len(sockets) // MAX_SOCKETS_PER_WORKER))
        self.plans = [
            FleetPlan(
                worker=w,
                urls=urls,
                raw=raw,
                connect_rate=connect_rate / self.n_workers,
                tokens=tokens,
                policy=policy or ReconnectPolicy(),
                seed=seed,
            )
            for w in range(self.n_workers)
        ]
        for plan in self.plans:
            if connect_timeout is not None:
                plan.connect_timeout = connect_timeout
        self.expected = [0] * len(urls)
        for i, s in enumerate(sockets):
            self.plans[i % self.n_workers].sockets.append(s)
            self.expected[s[0]] += 1
        self.procs: list[subprocess.Popen[bytes]] = []
        self.conns: list[Connection] = []
        self.latest: dict[int, dict[str, Any]] = {}
        self.attempts: dict[int, int] = {}
        self.readies: dict[int, int] = {}
        self.closes: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        self.dead: list[int] = []
        self.lag_max: dict[int, float] = {}  # wall second -> the workers' worst loop lag

    @property
    def total(self) -> int:
        return sum(self.expected)

    def live(self) -> list[int]:
        """Ready sockets per gateway, as of the workers' last snapshots."""
        out = [0] * len(self.urls)
        for snap in self.latest.values():
            for g, n in enumerate(snap["live"]):
                out[g] += n
        return out

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for plan in self.plans:
            ours, theirs = socket.socketpair()
            proc = subprocess.Popen(
                [sys.executable, "-m", "roomcast.load.idlefleet", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
            )
            theirs.close()
            conn = Connection(ours.detach())
            conn.send(plan)
            self.procs.append(proc)
            self.conns.append(conn)
            start_reader(conn, loop, functools.partial(self._on_message, plan.worker))

    def _on_message(self, worker: int, msg: tuple[Any, ...]) -> None:
        if msg == EOF_MESSAGE:
            self.dead.append(worker)
            return
        if msg[0] != "stats":
            return
        snap = msg[1]
        self.latest[worker] = snap
        for name in ("attempts", "readies", "closes"):
            total: dict[int, int] = getattr(self, name)
            for k, n in snap[name].items():
                total[k] = total.get(k, 0) + n
        for kind, n in snap["errors"].items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        for kind, text in snap["examples"].items():
            self.examples.setdefault(kind, text)
        second = math.floor(snap["t"])
        self.lag_max[second] = max(self.lag_max.get(second, 0.0), snap.get("lag_max", 0.0))

    async def wait(self, condition: Callable[[Fleet], bool], within: float) -> float | None:
        """Seconds until ``condition(self)`` held (None if not within ``within`` s); a
        FleetError if a worker died."""
        started = time.monotonic()
        while not condition(self):
            if self.dead:
                raise FleetError(f"fleet workers {sorted(self.dead)} exited unexpectedly")
            if time.monotonic() - started > within:
                return None
            await asyncio.sleep(POLL_SECONDS)
        return time.monotonic() - started

    async def stop(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("exit",))
        deadline = time.monotonic() + WORKER_EXIT_SECONDS
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for conn in self.conns:
            conn.close()
