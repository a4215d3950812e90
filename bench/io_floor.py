"""The I/O floor of a gateway's send and receive paths, measured in the same run.

At 200 msg/s spread over 100 sockets a message arrives every 5 ms, so nothing can be
coalesced: per acknowledged send a gateway is woken by the client's frame, writes the
publish to NATS (waking nats-server), is woken again by the JetStream ack and writes
the ack (waking the client); per live message the receiving gateway is woken by NATS
and writes the frame to the socket. On a virtual machine each of those wake-ups costs
tens of microseconds of CPU before any Python runs. These two bare processes do only
that I/O, with nothing else, so the gateway's figures can be read against them:

- **send floor**: a uvloop TCP server; each line a client sends is published with
  roomcast.common.jspublisher (the gateway's publisher) to a scratch file-storage
  stream, and ``ack`` is written back to that connection when JetStream acks it.
  No WebSocket framing, JSON, validation, membership, metrics or task per message.
- **receive floor**: a uvloop process subscribed (roomcast.common.natsinline, no task
  hop) to core NATS subjects, one per connection; each message is written to its
  TCP connection as it is parsed.

Both are driven open loop at the pipeline's rate over the same number of connections;
the figure is the bare process's CPU (utime + stime) per message.

    .venv/bin/python bench/io_floor.py --nats nats://127.0.0.1:4222 [--rate 200]

pipeline_cost.py runs both after its window against the stack's nats-server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nats
import uvloop
from nats.js.api import StorageType, StreamConfig

FLOOR_STREAM = "BENCHFLOOR"
FLOOR_SUBJECT = "benchfloor.send."
LIVE_SUBJECT = "benchfloor.live."
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A bare process answers within milliseconds; this bounds a run that went wrong.
DRAIN_TIMEOUT_SECONDS = 60.0
LINE = b"x" * 300 + b"\n"  # about the size of a send frame and of a stored record


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# --- the bare servers (child processes) --------------------------------------------------


async def serve_send(nats_url: str) -> None:
    from roomcast.common.jspublisher import JetStreamPublisher

    nc = await nats.connect(nats_url)
    publisher = JetStreamPublisher(nc, timeout=10.0)
    await publisher.start()
    counter = 0

    class Relay(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            nonlocal counter
            self.buffer += data
            while b"\n" in self.buffer:
                line, _, self.buffer = self.buffer.partition(b"\n")
                counter += 1
                future = publisher.publish(
                    f"{FLOOR_SUBJECT}{counter % 100}", line, {"Nats-Msg-Id": str(counter)}
                )
                future.add_done_callback(self._acked)

        def _acked(self, future: asyncio.Future[object]) -> None:
            if not future.exception():
                self.transport.write(b"ack\n")

    server = await asyncio.get_running_loop().create_server(Relay, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


async def serve_receive(nats_url: str, conns: int) -> None:
    from roomcast.common.natsinline import subscribe_inline

    nc = await nats.connect(nats_url)
    writers: list[asyncio.Transport] = []
    ready = asyncio.Event()

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            writers.append(transport)  # type: ignore[arg-type]
            if len(writers) == conns:
                ready.set()

    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await ready.wait()
    for i, transport in enumerate(writers):
        await subscribe_inline(
            nc, f"{LIVE_SUBJECT}{i}", lambda msg, t=transport: t.write(msg.data + b"\n")
        )
    await nc.flush()
    print("subscribed", flush=True)
    await asyncio.Event().wait()


# --- the drivers ---------------------------------------------------------------------------


async def spawn(mode: str, nats_url: str, conns: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", mode, "--nats", nats_url, "--conns", str(conns),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def next_line(proc: asyncio.subprocess.Process) -> str:
    """The bare server's next line on stdout: its port, then "subscribed"."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), DRAIN_TIMEOUT_SECONDS)
    if not line:
        raise RuntimeError("bare server exited")
    return line.decode().strip()


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.kill()
    await proc.wait()


async def _count_lines(reader: asyncio.StreamReader, box: list[int]) -> None:
    while await reader.readline():
        box[0] += 1


async def _offer(rate: float, seconds: float, send: Callable[[int], object]) -> int:
    """Open loop: call i at start + i / rate."""
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        send(i)
    return total


async def _settle(box: list[int], want: int) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while box[0] < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{box[0]} of {want} answered")
        await asyncio.sleep(0.02)


async def _measure(
    proc: asyncio.subprocess.Process,
    answered: list[int],
    rate: float,
    seconds: float,
    send: Callable[[int], object],
) -> float:
    """CPU ms of ``proc`` per message over an open-loop window, after a 1 s warm-up."""
    await _settle(answered, await _offer(rate, 1.0, send))
    before = cpu_seconds(proc.pid)
    base = answered[0]
    sent = await _offer(rate, seconds, send)
    await _settle(answered, base + sent)
    return (cpu_seconds(proc.pid) - before) * 1000 / sent


async def send_floor(nats_url: str, rate: float, seconds: float, conns: int) -> float:
    """CPU ms per acked publish of the bare relay."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name=FLOOR_STREAM, subjects=[FLOOR_SUBJECT + "*"], storage=StorageType.FILE)
    )
    proc = await spawn("send", nats_url, conns)
    readers: list[asyncio.Task[None]] = []
    try:
        port = int(await next_line(proc))
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(conns)]
        acked = [0]
        readers = [asyncio.create_task(_count_lines(r, acked)) for r, _ in streams]
        writers = [w for _, w in streams]
        return await _measure(proc, acked, rate, seconds, lambda i: writers[i % conns].write(LINE))
    finally:
        for task in readers:
            task.cancel()
        await stop(proc)
        await js.delete_stream(FLOOR_STREAM)
        await nc.close()


async def receive_floor(nats_url: str, rate: float, seconds: float, conns: int) -> float:
    """CPU ms per message the bare receiver relays from NATS to a socket."""
    nc = await nats.connect(nats_url)
    proc = await spawn("receive", nats_url, conns)
    readers: list[asyncio.Task[None]] = []
    try:
        port = int(await next_line(proc))
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(conns)]
        await next_line(proc)  # "subscribed"
        got = [0]
        readers = [asyncio.create_task(_count_lines(r, got)) for r, _ in streams]
        payload = LINE[:-1]
        publishing: set[asyncio.Task[None]] = set()

        def publish(i: int) -> None:
            # nats-py's publish is a coroutine that only buffers; its flusher writes.
            task = asyncio.ensure_future(nc.publish(f"{LIVE_SUBJECT}{i % conns}", payload))
            publishing.add(task)
            task.add_done_callback(publishing.discard)

        return await _measure(proc, got, rate, seconds, publish)
    finally:
        for task in readers:
            task.cancel()
        await stop(proc)
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--serve", choices=["send", "receive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "send":
        uvloop.run(serve_send(args.nats))
        return
    if args.serve == "receive":
        uvloop.run(serve_receive(args.nats, args.conns))
        return
    send = asyncio.run(send_floor(args.nats, args.rate, args.duration, args.conns))
    receive = asyncio.run(receive_floor(args.nats, args.rate, args.duration, args.conns))
    print(f"send floor: {send:.3f} ms CPU per acked publish; receive floor: {receive:.3f} ms")


if __name__ == "__main__":
    main()
