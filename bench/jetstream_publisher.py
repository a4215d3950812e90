"""Publisher benchmark: roomcast.common.jspublisher vs nats-py's ``js.publish``.

Starts one nats-server with JetStream on a free port, creates a stream shaped like
CHAT (file storage, one replica, one subject per room) and, in the same run, measures
both publishers in turns (js.publish, publisher, js.publish, publisher ...) so a slow
moment of the shared machine hits both:

- ``paced``: ``--paced-rate`` publishes per second, each awaited before the next (the
  gateway's case at a chat rate: one message at a time, nothing to coalesce);
- ``in flight K``: K concurrent senders each awaiting its own ack, as many sockets'
  sends at once, for every K of ``--in-flight``.

Reported: publishes per second and this process's CPU (utime + stime) per publish, and
the ratio publisher / js.publish, on uvloop as the gateway runs. The nats-server's CPU
is not counted: both publishers send it the same messages.

    .venv/bin/python bench/jetstream_publisher.py [--messages 20000] [--in-flight 1,16,256]
        [--paced-rate 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats
import uvloop
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType, StreamConfig

from roomcast.common.jspublisher import JetStreamPublisher
from roomcast.testing.processes import NatsServer

STREAM = "BENCHPUB"
SUBJECT = "benchpub.room."
ROOMS = 100
# The gateway's publish timeout: generous, nothing should time out here.
ACK_TIMEOUT_SECONDS = 5.0
# A chat record's size on the wire (JSON with a 100-byte text body and its envelope).
PAYLOAD = b'{"type":"text","content":"' + b"x" * 200 + b'"}'

Publish = Callable[[str, bytes, dict[str, str]], Awaitable[int]]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Figures:
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def add(self, messages: int, seconds: float, cpu: float) -> None:
        self.rates.append(messages / seconds)
        self.cpu_us.append(cpu * 1e6 / messages)


async def run_paced(publish: Publish, messages: int, rate: float, tag: str) -> tuple[float, float]:
    start = time.perf_counter()
    cpu0 = cpu_seconds()
    for i in range(messages):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await publish(f"{SUBJECT}{i % ROOMS}", PAYLOAD, {"Nats-Msg-Id": f"{tag}-{i}"})
    return time.perf_counter() - start, cpu_seconds() - cpu0


async def run_in_flight(publish: Publish, messages: int, k: int, tag: str) -> tuple[float, float]:
    counter = iter(range(messages))

    async def sender() -> None:
        for i in counter:
            await publish(f"{SUBJECT}{i % ROOMS}", PAYLOAD, {"Nats-Msg-Id": f"{tag}-{i}"})

    start = time.perf_counter()
    cpu0 = cpu_seconds()
    await asyncio.gather(*(sender() for _ in range(k)))
    return time.perf_counter() - start, cpu_seconds() - cpu0


async def measure(url: str, args: argparse.Namespace) -> None:
    nc: NatsClient = await nats.connect(url)
    js = nc.jetstream(timeout=ACK_TIMEOUT_SECONDS)
    await js.add_stream(
        StreamConfig(name=STREAM, subjects=[SUBJECT + "*"], storage=StorageType.FILE)
    )
    publisher = JetStreamPublisher(nc, timeout=ACK_TIMEOUT_SECONDS)
    await publisher.start()

    async def via_js(subject: str, payload: bytes, headers: dict[str, str]) -> int:
        return (await js.publish(subject, payload, headers=headers)).seq

    async def via_publisher(subject: str, payload: bytes, headers: dict[str, str]) -> int:
        return (await publisher.publish(subject, payload, headers)).seq

    contenders: dict[str, Publish] = {"js.publish": via_js, "publisher": via_publisher}
    cases = ["paced"] + [f"in flight {k}" for k in args.in_flight]
    figures = {(case, name): Figures() for case in cases for name in contenders}
    run = 0
    for _ in range(args.rounds):
        for case in cases:
            for name, publish in contenders.items():
                run += 1
                tag = f"r{run}"
                if case == "paced":
                    count = int(args.paced_rate * args.paced_seconds)
                    seconds, cpu = await run_paced(publish, count, args.paced_rate, tag)
                else:
                    count = args.messages
                    k = int(case.rsplit(" ", 1)[1])
                    seconds, cpu = await run_in_flight(publish, count, k, tag)
                figures[case, name].add(count, seconds, cpu)
    await publisher.close()
    await js.delete_stream(STREAM)
    await nc.close()

    load = os.getloadavg()
    print(
        f"nats-server on a free port, file-storage stream, {len(PAYLOAD)}-byte payloads with "
        f"a Nats-Msg-Id header; {args.rounds} rounds, medians; load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    print(
        "| case | js.publish msg/s | publisher msg/s | js.publish CPU µs/msg "
        "| publisher CPU µs/msg | CPU ratio publisher / js.publish |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for case in cases:
        base, new = figures[case, "js.publish"], figures[case, "publisher"]
        base_cpu, new_cpu = statistics.median(base.cpu_us), statistics.median(new.cpu_us)
        label = f"paced {args.paced_rate:.0f}/s, 1 in flight" if case == "paced" else case
        print(
            f"| {label} | {statistics.median(base.rates):,.0f} "
            f"| {statistics.median(new.rates):,.0f} | {base_cpu:.1f} | {new_cpu:.1f} "
            f"| {new_cpu / base_cpu:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="per in-flight run")
    parser.add_argument(
        "--in-flight",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 16, 256],
        help="comma-separated concurrent senders",
    )
    parser.add_argument("--paced-rate", type=float, default=1000.0)
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    server = NatsServer()
    server.start()
    try:
        # The gateway runs on uvloop (roomcast.common.lifecycle): measure on the same loop.
        uvloop.run(measure(server.url, args))
    finally:
        server.cleanup()
        shutil.rmtree(server.store_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
