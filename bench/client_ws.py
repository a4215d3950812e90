"""Micro-benchmark: per-frame client CPU of picows vs websockets (asyncio client).

The load tool runs thousands of SDK sockets in one process, so the client-side CPU
spent per received (and sent) frame decides how many simulated users one core
can drive. This script starts a picows server in a child process (so its CPU is
not counted) and measures the CPU time of the client process only
(``time.process_time``) while it:

* ``recv-1``: receives N ~100-byte JSON text frames on one connection,
* ``recv-many``: receives M frames on each of C connections (a broadcast),
* ``send-1``: sends N ~100-byte frames on one connection,
* ``sdk-*``: the whole SDK (``RoomcastSocket``: parse, seq chain, gap/duplicate checks,
  Message objects) receiving N ~230-byte chat ``message`` frames, through the ``on_item``
  callback and through ``async for``, next to raw picows+orjson on the same frames,
* ``memory``: Python heap (tracemalloc) per idle open connection: picows vs websockets,
  and a whole ``RoomcastSocket`` (authenticated, one room subscribed).

Each receive scenario runs twice per library: counting frames only, and parsing
every frame with orjson (what the SDK does). Run it with::

    .venv/bin/python bench/client_ws.py [--frames 200000] [--conns 500]

Results are printed as microseconds of client CPU per frame; compare the two
libraries from the same run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import socket
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server
from websockets.asyncio.client import connect as websockets_connect

from roomcast.client import Item, connect

# A chat "message" frame of about 100 bytes, as the gateway would send it.
FRAME = orjson.dumps(
    {"type": "message", "room": "a" * 24, "seq": 123456, "prev": 123455, "body": "hello!"}
)
END = b'{"type":"end"}'
ROOM = "a" * 24


def chat_frame(seq: int) -> bytes:
    """A realistic ``message`` frame (~230 bytes) continuing the room's seq chain."""
    return orjson.dumps(
        {
            "type": "message",
            "room": ROOM,
            "id": f"{seq:024x}",
            "seq": seq,
            "prev": seq - 1,
            "sender": {
                "id": "b" * 24,
                "username": "bob",
                "display_name": "Bob",
                "avatar_url": None,
            },
            "body": {"type": "text", "content": "hello there, how is it going?"},
            "sent_at": "2026-01-01T12:00:00.000Z",
        }
    )


class _BlastServer(WSListener):
    """``blast N`` -> N frames then END; ``count N`` -> END after N more frames."""

    def __init__(self) -> None:
        self._expect = 0
        self._seq = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        data = frame.get_payload_as_bytes()
        if self._expect:
            self._expect -= 1
            if self._expect == 0:
                transport.send(WSMsgType.TEXT, END)
            return
        if data.startswith(b"{"):
            self._protocol(transport, orjson.loads(data))
            return
        verb, _, count = data.partition(b" ")
        if verb == b"chain":
            self._chain(transport, int(count))
            transport.send(WSMsgType.TEXT, END)
        elif verb == b"blast":
            for _ in range(int(count)):
                transport.send(WSMsgType.TEXT, FRAME)
            transport.send(WSMsgType.TEXT, END)
        elif verb == b"count":
            self._expect = int(count)

    def _chain(self, transport: WSTransport, count: int) -> None:
        for _ in range(count):
            self._seq += 1
            transport.send(WSMsgType.TEXT, chat_frame(self._seq))

    def _protocol(self, transport: WSTransport, frame: dict[str, Any]) -> None:
        """Just enough of the gateway protocol for RoomcastSocket."""
        kind = frame["type"]
        if kind == "auth":
            user = {"id": "c" * 24, "username": "carol"}
            transport.send(WSMsgType.TEXT, orjson.dumps({"type": "ready", "user": user}))
        elif kind == "subscribe":
            reply = {"type": "subscribed", "room": frame["room"], "seq": self._seq}
            transport.send(WSMsgType.TEXT, orjson.dumps(reply))
        elif kind == "send":  # the body asks for N chained messages, then the ack
            self._chain(transport, int(frame["body"]["content"]))
            ack = {"type": "ack", "client_id": frame["client_id"], "id": "x", "seq": self._seq}
            transport.send(WSMsgType.TEXT, orjson.dumps(ack))


def _serve(port: int) -> None:
    # the server outruns the client on purpose; its write-buffer notices are noise here
    logging.getLogger("picows").setLevel(logging.ERROR)

    async def main() -> None:
        server = await ws_create_server(lambda _request: _BlastServer(), "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------- picows client


class _PicowsCounter(WSListener):
    def __init__(self, parse: bool) -> None:
        self.parse = parse
        self.count = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        if self.parse:
            item = orjson.loads(frame.get_payload_as_memoryview())
            if item["type"] == "end":
                self.done.set_result(None)
                return
        else:
            payload = frame.get_payload_as_bytes()
            if payload == END:
                self.done.set_result(None)
                return
        self.count += 1


async def picows_recv(url: str, conns: int, frames: int, parse: bool) -> float:
    pairs = [await ws_connect(lambda: _PicowsCounter(parse), url) for _ in range(conns)]
    started = time.process_time()
    for transport, _ in pairs:
        transport.send(WSMsgType.TEXT, b"blast %d" % frames)
    for _, listener in pairs:
        await listener.done  # type: ignore[attr-defined]
    spent = time.process_time() - started
    assert sum(listener.count for _, listener in pairs) == conns * frames  # type: ignore[attr-defined]
    for transport, _ in pairs:
        transport.disconnect()
    return spent


async def picows_chain(url: str, frames: int) -> float:
    """Raw picows + orjson over the same chat frames the SDK scenarios receive."""
    transport, listener = await ws_connect(lambda: _PicowsCounter(True), url)
    started = time.process_time()
    transport.send(WSMsgType.TEXT, b"chain %d" % frames)
    await listener.done  # type: ignore[attr-defined]
    spent = time.process_time() - started
    assert listener.count == frames  # type: ignore[attr-defined]
    transport.disconnect()
    return spent


async def sdk_recv(url: str, frames: int, iterate: bool) -> float:
    """RoomcastSocket receiving chained messages (callback mode or ``async for``)."""
    received = 0

    def on_item(_item: Item) -> None:
        nonlocal received
        received += 1

    sock = await connect(url, "token", on_item=None if iterate else on_item, ping_interval=None)
    await sock.subscribe(ROOM)
    started = time.process_time()
    ack = sock.send_future(ROOM, str(frames))
    if iterate:
        async for _item in sock:
            received += 1
            if received == frames:
                break
    await ack
    spent = time.process_time() - started
    assert received == frames, received
    assert sock.stats.gaps == 0, sock.stats
    await sock.close()
    return spent


async def picows_send(url: str, frames: int) -> float:
    transport, listener = await ws_connect(lambda: _PicowsCounter(False), url)
    transport.send(WSMsgType.TEXT, b"count %d" % frames)
    started = time.process_time()
    for _ in range(frames):
        transport.send(WSMsgType.TEXT, FRAME)
    await listener.done  # type: ignore[attr-defined]
    spent = time.process_time() - started
    transport.disconnect()
    return spent


# ------------------------------------------------------------ websockets client


async def websockets_recv(url: str, conns: int, frames: int, parse: bool) -> float:
    sockets = [await websockets_connect(url, compression=None) for _ in range(conns)]

    async def drain(ws: Any) -> int:
        count = 0
        async for data in ws:
            if parse:
                if orjson.loads(data)["type"] == "end":
                    return count
            elif data == END.decode():
                return count
            count += 1
        return count

    started = time.process_time()
    for ws in sockets:
        await ws.send(f"blast {frames}")
    counts = await asyncio.gather(*(drain(ws) for ws in sockets))
    spent = time.process_time() - started
    assert sum(counts) == conns * frames
    for ws in sockets:
        await ws.close()
    return spent


async def websockets_send(url: str, frames: int) -> float:
    ws = await websockets_connect(url, compression=None)
    await ws.send(f"count {frames}")
    text = FRAME.decode()
    started = time.process_time()
    for _ in range(frames):
        await ws.send(text)
    await ws.recv()
    spent = time.process_time() - started
    await ws.close()
    return spent


async def memory_per_connection(url: str, conns: int) -> None:
    """KiB of Python heap per open idle connection (C buffers of picows not included)."""

    async def measure(open_one: Callable[[], Awaitable[Any]], close: Callable[[Any], Any]) -> float:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        held = [await open_one() for _ in range(conns)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        for item in held:
            await close(item)
        return (after - before) / conns / 1024

    async def open_sdk() -> Any:
        sock = await connect(url, "token", ping_interval=None)
        await sock.subscribe(ROOM)
        return sock

    async def close_picows(pair: Any) -> None:
        pair[0].disconnect()

    async def close_ws(ws: Any) -> None:
        await ws.close()

    async def close_sdk(sock: Any) -> None:
        await sock.close()

    picows_kib = await measure(lambda: ws_connect(lambda: _PicowsCounter(True), url), close_picows)
    ws_kib = await measure(lambda: websockets_connect(url, compression=None), close_ws)
    sdk_kib = await measure(open_sdk, close_sdk)
    print(f"\nPython heap per idle connection ({conns} open, tracemalloc):")
    print(f"  picows {picows_kib:.1f} KiB, websockets {ws_kib:.1f} KiB", end=", ")
    print(f"RoomcastSocket {sdk_kib:.1f} KiB")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError("benchmark server did not start")


async def run(frames: int, conns: int, per_conn: int) -> None:
    port = _free_port()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    try:
        await _wait_listening(port)
        url = f"ws://127.0.0.1:{port}/"
        scenarios: list[
            tuple[str, int, Callable[[], Awaitable[float]], Callable[[], Awaitable[float]]]
        ]
        scenarios = [
            (
                f"recv-1 x{frames} count",
                frames,
                lambda: picows_recv(url, 1, frames, False),
                lambda: websockets_recv(url, 1, frames, False),
            ),
            (
                f"recv-1 x{frames} +orjson",
                frames,
                lambda: picows_recv(url, 1, frames, True),
                lambda: websockets_recv(url, 1, frames, True),
            ),
            (
                f"recv-many {conns}x{per_conn} +orjson",
                conns * per_conn,
                lambda: picows_recv(url, conns, per_conn, True),
                lambda: websockets_recv(url, conns, per_conn, True),
            ),
            (
                f"sdk-recv x{frames} on_item (vs raw)",
                frames,
                lambda: picows_chain(url, frames),
                lambda: sdk_recv(url, frames, iterate=False),
            ),
            (
                f"sdk-recv x{frames} async-for (vs raw)",
                frames,
                lambda: picows_chain(url, frames),
                lambda: sdk_recv(url, frames, iterate=True),
            ),
            (
                f"send-1 x{frames}",
                frames,
                lambda: picows_send(url, frames),
                lambda: websockets_send(url, frames),
            ),
        ]
        print("client CPU per frame; the sdk-* rows compare the SDK (right) to raw picows (left)")
        print(f"{'scenario':38} {'picows us/frame':>16} {'other us/frame':>15} {'ratio':>7}")
        for name, count, picows_fn, websockets_fn in scenarios:
            await picows_fn()  # warm-up (imports, allocator)
            picows_cpu = min([await picows_fn() for _ in range(3)])
            websockets_cpu = min([await websockets_fn() for _ in range(3)])
            p_us = picows_cpu / count * 1e6
            w_us = websockets_cpu / count * 1e6
            print(f"{name:38} {p_us:16.2f} {w_us:15.2f} {w_us / p_us:6.1f}x")
        await memory_per_connection(url, conns)
    finally:
        server.terminate()
        server.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--conns", type=int, default=500)
    parser.add_argument("--per-conn", type=int, default=400)
    args = parser.parse_args()
    uvloop.run(run(args.frames, args.conns, args.per_conn))


if __name__ == "__main__":
    main()
