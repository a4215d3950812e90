"""The fan-out baseline: the fastest broadcast we know how to write in Python here.

A minimal picows server (uvloop) with no protocol at all: no auth, no rooms, no NATS.
When triggered it frames one payload once (the WebSocket header is built a single time)
and writes the same bytes to every connected socket's transport, exactly the write path
a gateway uses, minus everything else a gateway does.

Two trigger modes:

* relay (default): any text frame received from any socket is broadcast unchanged to
  every connected socket (the sender included). The load tool's "raw" mode sends
  message-shaped frames (with seq/prev and a timestamp), so the receivers do the same
  parsing and accounting as against a gateway;
* ``--interval-ms N``: broadcast a prepared frame of ``--frame-bytes`` every N ms.

It prints ``listening on <port>`` once ready (``--port 0`` picks a free port) and runs
until SIGINT/SIGTERM.

    .venv/bin/python bench/raw_picows_server.py --port 9000
    .venv/bin/python bench/raw_picows_server.py --port 9000 --interval-ms 10 --frame-bytes 100
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import struct
from collections.abc import Callable

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

_SHORT = struct.Struct("!BB").pack
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack


def ws_text(payload: bytes) -> bytes:
    """One complete unmasked text frame (server to client)."""
    n = len(payload)
    if n < 126:
        return _SHORT(0x81, n) + payload
    if n < 65536:
        return _MEDIUM(0x81, 126, n) + payload
    return _LONG(0x81, 127, n) + payload


class Hub:
    def __init__(self) -> None:
        self.writers: dict[WSTransport, Callable[[bytes], object]] = {}
        self.broadcasts = 0

    def broadcast(self, payload: bytes) -> None:
        frame = ws_text(payload)
        for write in self.writers.values():
            write(frame)
        self.broadcasts += 1


class Conn(WSListener):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.hub.writers[transport] = transport.underlying_transport.write

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.hub.writers.pop(transport, None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.hub.broadcast(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def serve(
    host: str, port: int, interval_ms: float, frame_bytes: int, read_buffer: int
) -> None:
    hub = Hub()

    def factory(_request: WSUpgradeRequest) -> WSListener:
        return Conn(hub)

    server = await ws_create_server(factory, host, port, read_buffer_init_size=read_buffer)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ticker = None
    if interval_ms > 0:
        payload = b'{"type":"message","body":"' + b"x" * max(0, frame_bytes - 28) + b'"}'

        async def tick() -> None:
            while True:
                await asyncio.sleep(interval_ms / 1000)
                hub.broadcast(payload)

        ticker = loop.create_task(tick())
    await stop.wait()
    if ticker is not None:
        ticker.cancel()
    server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--interval-ms", type=float, default=0.0)
    p.add_argument("--frame-bytes", type=int, default=100)
    p.add_argument(
        "--read-buffer-bytes",
        type=int,
        default=16384,
        help="picows' initial per-socket read buffer (its default: 16384)",
    )
    args = p.parse_args()
    # uvloop warns once per write to a socket that closed under a broadcast: noise
    # when thousands of receivers disconnect at the end of a run.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    uvloop.run(
        serve(args.host, args.port, args.interval_ms, args.frame_bytes, args.read_buffer_bytes)
    )


if __name__ == "__main__":
    main()
