"""NATS benchmark: what ``sync_interval: always`` (fsync before every ack) costs.

Production NATS (deploy/k8s/components/nats-cluster/nats.conf) and the compose server
(deploy/compose/nats.conf) fsync each message before acknowledging it, because the
default (flush every 2 minutes) loses acknowledged messages on a power cut. This
measures the price in the same run: two nats-server processes on free ports, each with
file storage in its own temporary directory, one with the default configuration and
one with ``sync_interval: always``. Against each, a stream shaped like CHAT (file
storage, one replica, one subject per room) receives ``--messages`` JetStream publishes
of ``--payload-bytes`` each, with K publishes awaiting their ack at once, for each K
of ``--in-flight``. The two servers take turns (default, always, default, always ...)
for ``--rounds`` rounds, so a slow moment of the machine hits both. With ``--cluster``
each of the two is a 3-node JetStream cluster on loopback (6 processes) and the stream
has 3 replicas, as in production; all nodes then share this machine's disk and cores.

Reported per K: acked messages per second and ack latency (p50, p99) for each server,
and the ratio always / default. The server's own /varz shows which sync mode it runs.

    .venv/bin/python bench/nats_sync_cost.py [--messages 5000] [--in-flight 1,16,128]
        [--cluster]

The nats-server is ROOMCAST_NATS_SERVER or the virtualenv's (2.10+ is needed:
older servers refuse ``sync_interval``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from roomcast.testing.processes import (
    START_TIMEOUT_SECONDS,
    ManagedProcess,
    free_port,
    port_accepts,
    wait_until,
)

STREAM = "BENCH"
SUBJECT_PREFIX = "bench.room."
# Rooms the messages are spread over: one subject per room, like CHAT.
ROOMS = 50
MODES = ("default", "always")


def server_binary() -> str:
    configured = os.environ.get("ROOMCAST_NATS_SERVER")
    if configured:
        return configured
    return str(Path(sys.executable).with_name("nats-server"))


@dataclass
class Server:
    """One nats-server with its configuration file and store in a temporary directory."""

    mode: str
    name: str = "n0"
    cluster_port: int = field(default_factory=free_port)
    routes: tuple[int, ...] = ()
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nats-sync-")))
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    def start(self) -> None:
        sync = "  sync_interval: always\n" if self.mode == "always" else ""
        cluster = ""
        if self.routes:
            routes = ", ".join(f"nats://127.0.0.1:{port}" for port in self.routes)
            cluster = (
                f"cluster {{\n  name: bench-{self.mode}\n"
                f"  listen: 127.0.0.1:{self.cluster_port}\n  routes: [{routes}]\n}}\n"
            )
        conf = self.root / "nats.conf"
        conf.write_text(
            f"server_name: {self.mode}-{self.name}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f"jetstream {{\n  store_dir: {self.root / 'js'}\n{sync}}}\n{cluster}"
        )
        self.process = ManagedProcess(
            f"nats-{self.mode}-{self.name}", [server_binary(), "-c", str(conf)]
        )
        self.process.start()
        process = self.process
        wait_until(
            lambda: process.check_alive() and port_accepts("127.0.0.1", self.port),
            timeout=START_TIMEOUT_SECONDS,
            what=f"nats-server ({self.mode}) on {self.port}",
        )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def jetstream_config(self) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.monitor_port}/varz"
        with urllib.request.urlopen(url, timeout=5) as response:
            varz = json.load(response)
        return dict(varz.get("jetstream", {}).get("config", {}))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Result:
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def group(mode: str, nodes: int) -> list[Server]:
    """One server, or a cluster of ``nodes`` whose routes name every node."""
    servers = [Server(mode, name=f"n{i}") for i in range(nodes)]
    if nodes > 1:
        for server in servers:
            server.routes = tuple(s.cluster_port for s in servers)
    return servers


async def create_stream(url: str, replicas: int) -> None:
    """The stream, retried until a fresh cluster has elected its meta leader."""
    config = StreamConfig(
        name=STREAM,
        subjects=[SUBJECT_PREFIX + "*"],
        storage=StorageType.FILE,
        num_replicas=replicas,
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            nc = await nats.connect(url)
            try:
                await nc.jetstream().add_stream(config)
                return
            finally:
                await nc.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def publish_all(
    url: str, messages: int, in_flight: int, payload: bytes, replicas: int
) -> Result:
    """``messages`` publishes, ``in_flight`` workers each awaiting its ack before the
    next: K acks outstanding at any time. A fresh stream per run."""
    await create_stream(url, replicas)
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        latencies: list[float] = []
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < messages:
                i = next_index
                next_index += 1
                started = time.perf_counter()
                await js.publish(f"{SUBJECT_PREFIX}{i % ROOMS}", payload)
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        seconds = time.perf_counter() - began
        await js.delete_stream(STREAM)
        return Result(seconds, latencies)
    finally:
        await nc.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="publishes per run")
    parser.add_argument(
        "--in-flight", default="1,16,128", help="comma list of K (acks outstanding at once)"
    )
    parser.add_argument("--payload-bytes", type=int, default=400, help="a chat record's size")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two servers")
    parser.add_argument(
        "--cluster", action="store_true", help="3-node clusters and 3 stream replicas"
    )
    args = parser.parse_args()
    ks = [int(k) for k in args.in_flight.split(",")]
    payload = b"x" * args.payload_bytes

    nodes = 3 if args.cluster else 1
    groups = {mode: group(mode, nodes) for mode in MODES}
    servers = {mode: members[0] for mode, members in groups.items()}
    try:
        for members in groups.values():
            for server in members:
                server.start()
        for mode, server in servers.items():
            config = server.jetstream_config()
            shown = {k: v for k, v in config.items() if "sync" in k} or "no sync option set"
            print(f"{mode}: {server_binary()} JetStream config {shown}")
        print(
            f"{args.messages} publishes per run, {args.payload_bytes} B each, "
            f"{args.rounds} rounds, {nodes} node(s) per server and stream replicas, "
            f"on {os.cpu_count()} cores"
        )
        print()
        print(
            "| K in flight | default msg/s | always msg/s | always / default "
            "| default p50 / p99 ms | always p50 / p99 ms |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for k in ks:
            runs: dict[str, list[Result]] = {mode: [] for mode in MODES}
            for _ in range(args.rounds):
                for mode in MODES:
                    runs[mode].append(
                        await publish_all(servers[mode].url, args.messages, k, payload, nodes)
                    )
            rate = {m: statistics.median(r.rate for r in runs[m]) for m in MODES}
            lat = {m: [x for r in runs[m] for x in r.latencies] for m in MODES}
            p = {
                m: f"{percentile(lat[m], 0.5) * 1e3:.2f} / {percentile(lat[m], 0.99) * 1e3:.2f}"
                for m in MODES
            }
            print(
                f"| {k} | {rate['default']:,.0f} | {rate['always']:,.0f} "
                f"| {rate['always'] / rate['default']:.2f}x | {p['default']} | {p['always']} |"
            )
    finally:
        for members in groups.values():
            for server in members:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main())
