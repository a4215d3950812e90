"""A terminal chat client on the Roomcast SDK (roomcast.client).

    .venv/bin/python examples/chat_cli.py --username alice --register --create lobby
    .venv/bin/python examples/chat_cli.py --username bob --register \\
        --room <room id printed above>

The password is asked for without echo, or taken from ``ROOMCAST_PASSWORD`` (scripts).
``--password`` also works but puts it on the command line, where every user of the
machine sees it in ``ps``: use it for throwaway test accounts only.
Type a line to send it. Commands: ``/to <username> <text>`` sends a private message,
``/members`` lists the room's members and who is online, ``/help``, ``/quit`` (or
Ctrl-C, Ctrl-D) leaves. A refused command prints one ``!!`` line and the client stays.
Pass ``--gateway`` several times to spread over gateways: the socket resumes on the
next one when a gateway restarts (1012), without losing or duplicating messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import threading
from typing import Any

import orjson

from roomcast.client import (
    ApiError,
    Change,
    ClientError,
    Conflict,
    ErrorFrame,
    Event,
    Message,
    NotFound,
    Presence,
    RoomcastHttp,
    RoomcastSocket,
    Subscribed,
    Unsubscribed,
    connect,
)

DEFAULT_GATEWAYS = ["http://127.0.0.1:8080", "http://127.0.0.1:8090"]
# Where a script puts the password instead of the command line (which ps shows).
PASSWORD_ENV = "ROOMCAST_PASSWORD"  # noqa: S105 (a variable name, not a password)
# Messages of history shown when joining a room: a screenful of context.
HISTORY_LINES = 20
# Members listed by /members: one page (the gateway's maximum page size).
MEMBERS_PAGE = 100
HELP = "commands: /to <username> <text>, /members, /help, /quit"


def problem(exc: BaseException) -> str:
    """One line for a failed command: the server's code and message, never a traceback."""
    if isinstance(exc, ApiError):
        return f"!! {exc.code}: {exc.message}"
    return f"!! {exc}"


class Chat:
    """One user in one room: the socket, the names seen so far and who is online."""

    def __init__(self, http: RoomcastHttp, me: dict[str, Any], room: str) -> None:
        self.http = http
        self.me_id: str = me["id"]
        self.room = room
        self.names: dict[str, str] = {self.me_id: me["username"]}
        self.online: set[str] = set()
        self.sock: RoomcastSocket | None = None

    async def name_of(self, user_id: str) -> str:
        if user_id not in self.names:
            try:
                self.names[user_id] = (await self.http.get_user(user_id))["username"]
            except ClientError:
                return user_id[:8]
        return self.names[user_id]

    async def line_for(
        self, seq: Any, sender: dict[str, Any], to: str | None, content: str | None
    ) -> str:
        """A message as shown, live or from history: ``*`` marks your own, and a private
        message says whom it is for."""
        sender_id = str(sender.get("id", ""))
        if sender_id and sender.get("username"):
            self.names[sender_id] = str(sender["username"])
        mark = "*" if sender_id == self.me_id else " "
        private = ""
        if to:
            private = (
                " (private to you)"
                if to == self.me_id
                else f" (private to {await self.name_of(to)})"
            )
        return f"{mark}[{seq}] {sender.get('username', '?')}{private}: {content}"

    async def show_history(self) -> None:
        page = await self.http.messages(self.room, limit=HISTORY_LINES)
        for row in reversed(page["items"]):
            if row.get("deleted"):
                print(f"  [{row.get('seq')}] (deleted)")
                continue
            body = row.get("body") or {}
            print(
                await self.line_for(
                    row.get("seq"), row.get("sender") or {}, row.get("to"), body.get("content")
                )
            )

    async def show(self, item: object) -> None:
        if isinstance(item, Message):
            sender = {"id": item.sender.id, "username": item.sender.username}
            print(await self.line_for(item.seq, sender, item.to, item.content), flush=True)
        elif isinstance(item, Change):
            what = (
                "deleted"
                if item.kind == "delete"
                else f"edited: {(item.body or {}).get('content')}"
            )
            print(f"  -- {item.sender.username} {what} [#{item.target_seq}]", flush=True)
        elif isinstance(item, Event):
            print(f"  -- {await self.sentence(item)}", flush=True)
        elif isinstance(item, Presence):
            await self.presence(item.data)
        elif isinstance(item, Subscribed):
            note = " (some messages were too old to replay)" if item.truncated else ""
            print(f"  -- reconnected; resumed from message {item.since}{note}", flush=True)
        elif isinstance(item, Unsubscribed):
            print(
                f"  -- you are no longer in this room ({item.reason}); /quit to leave", flush=True
            )
        elif isinstance(item, ErrorFrame):
            print(f"!! {item.code}: {item.message}", flush=True)

    async def sentence(self, event: Event) -> str:
        data = event.data
        who = await self.name_of(str(data.get("user_id", ""))) if data.get("user_id") else "someone"
        if data.get("user_id") == self.me_id:
            who = "you"
        if event.event == "member_joined":
            return f"{who} joined the room"
        if event.event == "member_left":
            return f"{who} left the room"
        if event.event == "member_removed":
            actor = data.get("actor_id")
            by = f" by {await self.name_of(str(actor))}" if actor else ""
            return f"{who} {'were' if who == 'you' else 'was'} removed from the room{by}"
        if event.event == "role_changed":
            return f"{who} {'are' if who == 'you' else 'is'} now {data.get('role', 'a member')}"
        if event.event == "room_updated":
            info = data.get("room_info") or {}
            return (
                f"the room was updated: {info.get('name', '?')} ({info.get('topic') or 'no topic'})"
            )
        if event.event == "room_deleted":
            return "the room was deleted"
        return f"{event.event} {orjson.dumps(data).decode()}"

    async def presence(self, data: dict[str, Any]) -> None:
        if isinstance(data.get("online"), list):  # the answer to a query: the whole set
            self.online = set()
            for user in data["online"]:
                self.names[user["id"]] = user["username"]
                self.online.add(user["id"])
            return
        user = data.get("user") or {}
        user_id = user.get("id")
        if not user_id:
            return
        self.names[user_id] = user.get("username", user_id[:8])
        if data.get("status") == "online":
            self.online.add(user_id)
        else:
            self.online.discard(user_id)
        if user_id != self.me_id:
            state = "is online" if data.get("status") == "online" else "went offline"
            print(f"  -- {self.names[user_id]} {state}", flush=True)

    async def members(self) -> None:
        listing = await self.http.members(self.room, limit=MEMBERS_PAGE)
        shown = []
        for member in listing:
            name = member.get("username") or await self.name_of(member["user_id"])
            self.names[member["user_id"]] = name
            notes = [
                n
                for n, on in (
                    ("you", member["user_id"] == self.me_id),
                    ("online", member["user_id"] in self.online),
                    (member["role"], member["role"] != "member"),
                )
                if on
            ]
            shown.append(f"{name} ({', '.join(notes)})" if notes else name)
        print(f"  members ({len(shown)}): {', '.join(shown)}", flush=True)

    async def command(self, line: str) -> bool:
        """Run one input line; False when the user leaves."""
        assert self.sock is not None
        if line in ("/quit", "/exit"):
            return False
        if line == "/help":
            print(f"  {HELP}")
        elif line == "/members":
            await self.members()
        elif line.startswith("/to"):
            _, name, text = [*line.split(maxsplit=2), "", ""][:3]
            if not name or not text:
                print("!! usage: /to <username> <text>")
                return True
            try:
                target = await self.http.find_user(name)
            except NotFound:
                print(f"!! no user named {name}")
                return True
            self.names[target["id"]] = target["username"]
            await self.sock.send(self.room, text, to=target["id"])
        elif line.startswith("/"):
            print(f"!! unknown command {line.split()[0]}; {HELP}")
        else:
            await self.sock.send(self.room, line)
        return True

    async def printer(self) -> None:
        assert self.sock is not None
        try:
            async for item in self.sock:
                await self.show(item)
        except ClientError as exc:
            print(f"!! disconnected: {exc}", flush=True)


def start_stdin_reader(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines typed, through a daemon thread (blocking reads never hold up exiting, and
    the terminal's file flags are left alone); None at end of input."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for raw in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, raw)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return lines


async def enter_room(http: RoomcastHttp, args: argparse.Namespace) -> str:
    if args.create:
        room = await http.create_room(args.create)
        print(f"created room {room['name']}: {room['id']}")
        return room["id"]
    with contextlib.suppress(Conflict):  # already a member
        await http.join_room(args.room, invite_code=args.invite)
    return str(args.room)


async def chat(args: argparse.Namespace) -> int:
    gateways: list[str] = args.gateway or DEFAULT_GATEWAYS
    async with RoomcastHttp(gateways[0]) as http:
        try:
            if args.register:
                with contextlib.suppress(Conflict):  # already registered: just log in
                    await http.register(args.username, args.password)
            pair = await http.login(args.username, args.password)
            me: dict[str, Any] = dict(pair["user"])
            print(f"logged in as {me['username']} (user id {me['id']})")
            room = await enter_room(http, args)
            session = Chat(http, me, room)
            await session.show_history()
            session.sock = sock = await connect(gateways, http.access_token_provider)
            await sock.subscribe(room)
        except ClientError as exc:
            print(problem(exc), file=sys.stderr)
            return 1
        sock.presence(room)
        printer = asyncio.create_task(session.printer())
        print(f"connected to {sock.url}; type to chat, /help for commands", flush=True)
        lines = start_stdin_reader(asyncio.get_running_loop())
        try:
            while (raw := await lines.get()) is not None:
                line = raw.strip()
                if not line:
                    continue
                try:
                    if not await session.command(line):
                        break
                except ClientError as exc:
                    print(problem(exc), flush=True)
        finally:
            printer.cancel()
            await sock.close()
            if args.stats:
                print(orjson.dumps(sock.stats.as_dict()).decode())
    return 0


def read_password(args: argparse.Namespace) -> str:
    """``--password``, else ``ROOMCAST_PASSWORD``, else a prompt that does not echo."""
    if args.password:
        return str(args.password)
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    return getpass.getpass(f"password for {args.username}: ")


def main() -> None:
    parser = argparse.ArgumentParser(description="Roomcast terminal chat")
    parser.add_argument("--gateway", action="append", help="gateway base URL (repeatable)")
    parser.add_argument("--username", required=True)
    parser.add_argument(
        "--password",
        help=f"visible to everyone in ps: prefer the prompt or ${PASSWORD_ENV}",
    )
    parser.add_argument("--register", action="store_true", help="register the user first")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--room", help="id of the room to join")
    where.add_argument("--create", metavar="NAME", help="create a public room and join it")
    parser.add_argument("--invite", help="invite code of a private room")
    parser.add_argument("--stats", action="store_true", help="print the socket's stats on exit")
    args = parser.parse_args()
    try:
        args.password = read_password(args)
        code = asyncio.run(chat(args))
    except EOFError:  # Ctrl-D at the password prompt
        print()
        code = 1
    except KeyboardInterrupt:  # Ctrl-C: leave quietly (the socket was closed on the way out)
        print()  # past the terminal's echoed ^C
        code = 0
    print("bye")
    sys.exit(code)


if __name__ == "__main__":
    main()
