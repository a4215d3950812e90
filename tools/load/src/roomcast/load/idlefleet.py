"""A worker process holding many idle authenticated WebSockets, each reconnecting with
the SDKs' policy (roomcast.load.backoff) when its gateway goes away.

Leaner than the scenario clients (roomcast.load.client): an idle socket has no rooms,
no sends and no accounting, so one process holds 10k+ of them. Each socket is pinned to
one gateway URL (a client behind one address): after a gateway restart it comes back to
the same port, which is what the reconnect measurement of bench/idle_50k.py needs.

Messages with the coordinator (roomcast.load.fleet) over a socketpair:

* worker -> ``("stats", snapshot)`` every second: live sockets per gateway, and since the
  previous snapshot the connection attempts and readies per 100 ms tick, close codes and
  errors;
* coordinator -> ``("exit",)``: close every socket and stop.
"""

from __future__ import annotations

import asyncio
import math
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import uvloop
from orjson import loads
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from roomcast.load import wire
from roomcast.load.backoff import ReconnectPolicy
from roomcast.load.pipe import EOF_MESSAGE, start_reader

# Attempts and readies are counted per tick of this length: fine enough to see a burst
# (a storm lands within a few hundred ms), coarse enough to stay a small dict.
TICK_SECONDS = 0.1
STATS_INTERVAL_SECONDS = 1.0
# TCP connect, then the upgrade, each as the SDKs' connect timeout
# (roomcast.client.connector): a SYN dropped by a full accept queue is retried by the
# kernel for minutes, a client gives up and backs off long before.
CONNECT_TIMEOUT_SECONDS = 10.0
HANDSHAKE_TIMEOUT_SECONDS = 10.0
# picows' initial per-socket read buffer: idle sockets get small frames; 4 KiB (the
# gateway's own size) instead of 16 KiB keeps 12k client sockets in ~50 MB less.
READ_BUFFER_BYTES = 4096
ABNORMAL_CLOSE = 1006
_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE


def tick_of(t: float) -> int:
    return math.floor(t / TICK_SECONDS)


@dataclass
class FleetPlan:
    worker: int
    urls: list[str]  # WebSocket URLs, one per gateway
    raw: bool  # the raw picows server: no auth frame, live once connected
    connect_rate: float  # first attempts per second, this worker
    tokens: list[str]
    # (gateway index, source address or None, index into tokens), one per socket
    sockets: list[tuple[int, str | None, int]] = field(default_factory=list)
    policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    seed: int = 1
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS + HANDSHAKE_TIMEOUT_SECONDS


class Counters:
    """What the sockets of one worker report; reset after each snapshot but ``live``."""

    def __init__(self, gateways: int) -> None:
        self.live = [0] * gateways
        self.connected = 0
        self.attempts: dict[int, int] = {}
        self.readies: dict[int, int] = {}
        self.closes: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        self.lag_max = 0.0  # the longest the event loop was late for a tick, s

    def attempt(self) -> None:
        t = tick_of(time.time())
        self.attempts[t] = self.attempts.get(t, 0) + 1

    def ready(self, gateway: int) -> None:
        self.live[gateway] += 1
        t = tick_of(time.time())
        self.readies[t] = self.readies.get(t, 0) + 1

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.examples.setdefault(kind, detail[:200])

    def snapshot(self, worker: int) -> dict[str, Any]:
        snap = {
            "worker": worker,
            "t": time.time(),
            "live": list(self.live),
            "connected": self.connected,
            "attempts": self.attempts,
            "readies": self.readies,
            "closes": self.closes,
            "errors": self.errors,
            "examples": self.examples,
            "lag_max": self.lag_max,
        }
        self.attempts, self.readies, self.closes, self.errors = {}, {}, {}, {}
        self.lag_max = 0.0
        return snap


class IdleSocket(WSListener):
    def __init__(self, fleet: FleetWorker, gateway: int, source_ip: str | None, token: str):
        self.fleet = fleet
        self.gateway = gateway
        self.source_ip = source_ip
        self.token = token
        self.transport: WSTransport | None = None
        self.ready = False
        self.failures = 0  # consecutive attempts that did not reach ready
        self.close_code: int | None = None
        self.upgraded = False  # this attempt reached on_ws_connected
        # An attempt is under way: only then is an upgraded connection this socket's
        # (one that completes after its attempt timed out is closed at once).
        self.connecting = False

    def start(self, delay: float) -> None:
        asyncio.get_running_loop().create_task(self._connect(delay))

    async def _connect(self, delay: float) -> None:
        fleet = self.fleet
        url = fleet.plan.urls[self.gateway]
        kwargs: dict[str, Any] = {}
        if self.source_ip:
            kwargs["local_addr"] = (self.source_ip, 0)
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            if fleet.stopping:
                return
            fleet.counters.attempt()
            self.close_code = None
            self.upgraded = False
            self.connecting = True
            try:
                async with asyncio.timeout(fleet.plan.connect_timeout):
                    await ws_connect(
                        lambda: self,
                        url,
                        websocket_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
                        read_buffer_init_size=READ_BUFFER_BYTES,
                        **kwargs,
                    )
                if self.upgraded:
                    return  # on_ws_disconnected takes over from here
                # picows returns normally when the TCP connection is lost before the
                # upgrade answer (and calls no listener method): a failed attempt.
                fleet.counters.error("connect:lost_before_upgrade", url)
            except Exception as exc:  # every failure is counted and retried
                fleet.counters.error(f"connect:{_error_kind(exc)}", str(exc))
            finally:
                self.connecting = False
            self.failures += 1
            delay = fleet.plan.policy.after_failure(self.failures, None, fleet.rng)

    def on_ws_connected(self, transport: WSTransport) -> None:
        if not self.connecting or self.transport is not None:
            transport.disconnect()  # a stale attempt's: never counted, never ours
            return
        self.transport = transport
        self.upgraded = True
        self.fleet.counters.connected += 1
        if self.fleet.plan.raw:
            self._go_ready()
        else:
            transport.send(_TEXT, wire.auth_frame(self.token))

    def _go_ready(self) -> None:
        self.ready = True
        self.failures = 0
        self.fleet.counters.ready(self.gateway)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if transport is not self.transport:
            return
        if frame.msg_type == _TEXT:
            msg = loads(frame.get_payload_as_memoryview())
            kind = msg.get("type")
            if kind == "ready" and not self.ready:
                self._go_ready()
            elif kind == "error":
                self.fleet.counters.error(f"frame:{msg.get('code')}", str(msg.get("message")))
        elif frame.msg_type == _CLOSE:
            self.close_code = int(frame.get_close_code().value)
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if transport is not self.transport:
            return
        fleet = self.fleet
        counters = fleet.counters
        counters.connected -= 1
        was_ready = self.ready
        if was_ready:
            counters.live[self.gateway] -= 1
        self.ready = False
        self.transport = None
        if fleet.stopping:
            return
        code = self.close_code if self.close_code is not None else ABNORMAL_CLOSE
        counters.closes[code] = counters.closes.get(code, 0) + 1
        policy = fleet.plan.policy
        if was_ready:
            delay = policy.after_ready(code, fleet.rng)
        else:
            self.failures += 1
            delay = policy.after_failure(self.failures, code, fleet.rng)
        self.start(delay)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()


class FleetWorker:
    def __init__(self, conn: Connection, plan: FleetPlan) -> None:
        self.conn = conn
        self.plan = plan
        self.rng = random.Random(plan.seed * 7919 + plan.worker)
        self.counters = Counters(len(plan.urls))
        self.stopping = False
        self.sockets = [IdleSocket(self, g, ip, plan.tokens[t]) for g, ip, t in plan.sockets]
        self._done = asyncio.Event()

    def _on_message(self, msg: tuple[Any, ...]) -> None:
        if msg == EOF_MESSAGE or msg[0] == "exit":
            self._done.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start_reader(self.conn, loop, self._on_message)
        rate = max(self.plan.connect_rate, 1.0)
        for i, s in enumerate(self.sockets):
            s.start(i / rate)
        stats = loop.create_task(self._stats_loop())
        lag = loop.create_task(self._lag_loop())
        try:
            await self._done.wait()
        finally:
            self.stopping = True
            stats.cancel()
            lag.cancel()
            for s in self.sockets:
                s.close()
            await asyncio.sleep(0.2)  # let the close frames go out

    async def _lag_loop(self) -> None:
        """How late the loop runs a TICK_SECONDS sleep: a process too busy (or blocked
        in the kernel) to read its sockets shows here, not in the gateways' figures."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + TICK_SECONDS
            await asyncio.sleep(TICK_SECONDS)
            self.counters.lag_max = max(self.counters.lag_max, loop.time() - due)

    async def _stats_loop(self) -> None:
        while True:
            now = time.time()
            await asyncio.sleep(math.floor(now + 1) - now)
            try:
                self.conn.send(("stats", self.counters.snapshot(self.plan.worker)))
            except OSError:
                self._done.set()
                return


def _error_kind(exc: BaseException) -> str:
    status = getattr(getattr(exc, "response", None), "status", None)
    if status is not None:
        return f"http_{int(status)}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"errno_{exc.errno}"
    return type(exc).__name__


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (each socket is a descriptor); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def main() -> None:
    """``python -m roomcast.load.idlefleet <fd>``: the first message on ``fd`` is the
    :class:`FleetPlan` (a plain subprocess, like roomcast.load.worker)."""
    from roomcast.load import idlefleet

    raise_fd_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator handles Ctrl-C
    conn = Connection(int(sys.argv[1]))
    plan = conn.recv()
    if not isinstance(plan, idlefleet.FleetPlan):
        raise SystemExit("roomcast.load.idlefleet: expected a FleetPlan")
    uvloop.run(idlefleet.FleetWorker(conn, plan).run())


if __name__ == "__main__":
    main()
