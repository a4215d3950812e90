"""A terminal chat client on the Roomcast SDK (roomcast.client).

    .venv/bin/python examples/chat_cli.py --username alice --password 'correct horse' \\
        --register --create lobby
    .venv/bin/python examples/chat_cli.py --username bob --password 'battery staple' \\
        --register --room <room id printed above>

Type a line to send it; ``/to <user id> <text>`` sends a private message, ``/quit``
leaves. Pass ``--gateway`` several times to spread over gateways: the socket resumes
on the next one when a gateway restarts (1012), without losing or duplicating messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import orjson

from roomcast.client import (
    Conflict,
    ErrorFrame,
    Event,
    Message,
    RoomcastHttp,
    RoomcastSocket,
    Subscribed,
    Unsubscribed,
    connect,
)

DEFAULT_GATEWAYS = ["http://127.0.0.1:8080", "http://127.0.0.1:8090"]
# Messages of history shown when joining a room.
HISTORY_LINES = 20


def show(item: object, me: str) -> None:
    if isinstance(item, Message):
        private = f" (to {item.to})" if item.to else ""
        mark = "*" if item.sender.id == me else " "
        print(f"{mark}[{item.seq}] {item.sender.username}{private}: {item.content}")
    elif isinstance(item, Event):
        print(f"  -- {item.event} {orjson.dumps(item.data).decode()}")
    elif isinstance(item, Subscribed):
        note = " (some messages were too old to replay)" if item.truncated else ""
        print(f"  -- resumed {item.room} from seq {item.since}{note}")
    elif isinstance(item, Unsubscribed):
        print(f"  -- left {item.room}: {item.reason}")
    elif isinstance(item, ErrorFrame):
        print(f"  !! {item.code}: {item.message}")


async def print_incoming(sock: RoomcastSocket, me: str) -> None:
    async for item in sock:
        show(item, me)


async def read_lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def chat(args: argparse.Namespace) -> None:
    gateways: list[str] = args.gateway or DEFAULT_GATEWAYS
    async with RoomcastHttp(gateways[0]) as http:
        if args.register:
            with contextlib.suppress(Conflict):  # already registered: just log in
                await http.register(args.username, args.password)
        pair = await http.login(args.username, args.password)
        me = pair["user"]["id"] if "user" in pair else ""
        if args.create:
            room_id = (await http.create_room(args.create))["id"]
            print(f"created room {room_id}")
        else:
            room_id = args.room
            with contextlib.suppress(Conflict):  # already a member
                await http.join_room(room_id, invite_code=args.invite)
        history = await http.messages(room_id, limit=HISTORY_LINES)
        for row in reversed(history["items"]):
            sender = row.get("sender", {}).get("username", "?")
            print(f" [{row.get('seq')}] {sender}: {row.get('body', {}).get('content')}")

        sock = await connect(gateways, http.access_token_provider)
        try:
            await sock.subscribe(room_id)
            print(f"connected to {sock.url}; type to chat, /quit to leave")
            printer = asyncio.create_task(print_incoming(sock, me))
            lines = await read_lines()
            while line := (await lines.readline()).decode().strip():
                if line == "/quit":
                    break
                to = None
                if line.startswith("/to "):
                    _, to, line = [*line.split(" ", 2), ""][:3]
                if line:
                    await sock.send(room_id, line, to=to)
            printer.cancel()
        finally:
            await sock.close()
            print(orjson.dumps(sock.stats.as_dict()).decode())


def main() -> None:
    parser = argparse.ArgumentParser(description="Roomcast terminal chat")
    parser.add_argument("--gateway", action="append", help="gateway base URL (repeatable)")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--register", action="store_true", help="register the user first")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--room", help="id of the room to join")
    where.add_argument("--create", metavar="NAME", help="create a public room and join it")
    parser.add_argument("--invite", help="invite code of a private room")
    asyncio.run(chat(parser.parse_args()))


if __name__ == "__main__":
    main()
