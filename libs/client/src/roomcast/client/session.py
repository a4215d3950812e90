"""``RoomcastSocket``: a self-healing WebSocket session with resume and exactly-once sends.

* per room, the last ``seq`` seen (``message`` and ``skip`` frames): a reconnect
  re-subscribes with ``since=<last seq>`` and the gateway replays what was missed;
* a frame whose ``prev`` is not that last seq is a gap (counted, reported); a frame whose
  ``seq`` is not above it is a duplicate (counted, dropped);
* a send stays pending until acked and is re-sent after a reconnect with the SAME
  ``client_id``; the gateway de-duplicates on it, so the message is stored exactly once.
  The server deduplicates only within its window (``resend_window`` below it): an older
  unacked send is first looked for in its room's resume and re-sent only if absent
  (docs/client.md, "Resending"). Reacts and unreacts get the same treatment (their
  ``reaction`` record carries the client_id too).

The connection loop lives in connector.py, frame handling in state.py, the picows
listener in wire.py; this module is the public API.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from .connector import FATAL_CLOSE_CODES, Connector, TokenSource
from .errors import ConnectionClosed, RequestRejected
from .models import Ack, Subscribed
from .state import PendingSend, RoomState
from .wire import CLOSE_ABNORMAL, CLOSE_NORMAL

log = logging.getLogger("roomcast.client")

__all__ = ["FATAL_CLOSE_CODES", "RoomcastSocket", "TokenSource", "connect"]

# The gateway's rule for client ids (they become part of the NATS Nats-Msg-Id header).
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class RoomcastSocket(Connector):
    """A resumable WebSocket session to one of several gateways.

    ``urls``: gateway base URLs (``http://host:8080``) or WebSocket URLs, tried round
    robin. ``token``: an access token, or an async callable returning a valid one (called
    before every connect and to renew the token on a live socket). ``on_item``: receive
    items through a callback instead of ``async for`` (cheapest; the load tool uses it).
    ``on_gap``: called on every gap. Timing options are documented in connector.py.
    """

    async def __aenter__(self) -> RoomcastSocket:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True between ``ready`` and the next disconnect."""
        return self._wire is not None

    @property
    def url(self) -> str | None:
        """The WebSocket URL currently connected to."""
        return self._wire.url if self._wire is not None else None

    @property
    def rooms(self) -> list[str]:
        """The rooms this session keeps subscribed (and resumes after reconnects)."""
        return list(self._rooms)

    def last_seq(self, room: str) -> int | None:
        """The last seq held for a subscribed room (what a resume would use as ``since``)."""
        state = self._rooms.get(room)
        return state.last_seq if state is not None else None

    # ------------------------------------------------------------ requests

    async def subscribe(self, room: str, since: int | None = None) -> Subscribed:
        """Subscribe (or re-subscribe) to a room; with ``since``, replay what came after it.

        Raises RequestRejected when the gateway refuses (``forbidden``, ``not_found``...).
        While disconnected the subscribe waits for the next connection.
        """
        self._check_usable()
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = RoomState(room, since)
        elif since is not None:
            state.last_seq = since
        waiter: asyncio.Future[Subscribed] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        if self._wire is not None:
            self._send_subscribe(self._wire, state)
        return await waiter

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving a room (and stop resuming it after reconnects)."""
        self._fail_held(room)
        state = self._rooms.pop(room, None)
        if state is None:
            return
        for waiter in state.waiters:
            if not waiter.done():
                waiter.set_exception(RequestRejected("unsubscribed", "unsubscribed", room))
        wire = self._wire
        if wire is None or not wire.send(orjson.dumps({"type": "unsubscribe", "room": room})):
            return
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unsub_waiters.setdefault(room, []).append(confirmed)
        # The room is already forgotten locally; the confirmation only tells us the
        # gateway stopped sending. A silent gateway must not hang the caller.
        try:
            async with asyncio.timeout(self._ready_timeout):
                await confirmed
        except TimeoutError:
            log.warning("no unsubscribed confirmation for room %s", room)

    def send_future(
        self,
        room: str,
        content: str,
        *,
        to: str | None = None,
        client_id: str | None = None,
        reply_to: int | None = None,
    ) -> asyncio.Future[Ack]:
        """Queue a message; the future resolves with its Ack (pipelining without a task).

        Cancelling the future stops re-sending it.
        """
        frame: dict[str, Any] = {
            "type": "send",
            "room": room,
            "body": {"type": "text", "content": content},
        }
        if to is not None:
            frame["to"] = to
        if reply_to is not None:
            frame["reply_to"] = reply_to
        return self._queue(frame, client_id)

    def _queue(self, frame: dict[str, Any], client_id: str | None) -> asyncio.Future[Ack]:
        """Keep an acked frame (send, edit, delete) until its ack; re-sent verbatim,
        same client_id, after reconnects (the gateway stores it at most once)."""
        self._check_usable()
        cid = client_id if client_id is not None else uuid.uuid4().hex
        if _CLIENT_ID.fullmatch(cid) is None:
            raise ValueError("client_id must be 1-64 characters of A-Z a-z 0-9 _ -")
        if cid in self._pending:
            raise ValueError(f"a send with client_id {cid!r} is already pending")
        frame["client_id"] = cid
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        pending = PendingSend(
            cid, orjson.dumps(frame), future, room=frame["room"], kind=frame["type"]
        )
        self._pending[cid] = pending
        future.add_done_callback(lambda _f: self._forget_send(pending))
        self.stats.sent += 1
        if self._wire is not None and self._wire.send(pending.frame):
            pending.mark_sent()
        return future

    async def edit(self, room: str, seq: int, content: str, *, client_id: str | None = None) -> Ack:
        """Replace the text of your message ``seq``; acked like a send (exactly once)."""
        frame = {
            "type": "edit",
            "room": room,
            "seq": seq,
            "body": {"type": "text", "content": content},
        }
        return await self._queue(frame, client_id)

    async def delete(self, room: str, seq: int, *, client_id: str | None = None) -> Ack:
        """Delete message ``seq`` (yours, or any as a room admin/owner)."""
        return await self._queue({"type": "delete", "room": room, "seq": seq}, client_id)

    async def send(
        self,
        room: str,
        content: str,
        *,
        to: str | None = None,
        client_id: str | None = None,
        reply_to: int | None = None,
    ) -> Ack:
        """Send a text message (private to ``to`` if given; a reply in the thread of
        message ``reply_to`` if given) and wait for its ack.

        The wait spans reconnects: an unacked send is re-sent with the same client_id and
        the gateway stores it once. Pass your own ``client_id`` to make YOUR retries
        (after a RequestRejected ``unavailable``, or a crash) idempotent too.
        """
        return await self.send_future(room, content, to=to, client_id=client_id, reply_to=reply_to)

    async def send_file(
        self,
        room: str,
        file_id: str,
        *,
        caption: str | None = None,
        to: str | None = None,
        client_id: str | None = None,
        reply_to: int | None = None,
    ) -> Ack:
        """Share a file uploaded with ``RoomcastHttp.upload_file`` (a ``file`` body),
        privately to ``to`` if given (only the two of you see it and may download it);
        acked, re-sent and stored exactly once like ``send``."""
        body: dict[str, Any] = {"type": "file", "file_id": file_id}
        if caption is not None:
            body["caption"] = caption
        frame: dict[str, Any] = {"type": "send", "room": room, "body": body}
        if to is not None:
            frame["to"] = to
        if reply_to is not None:
            frame["reply_to"] = reply_to
        return await self._queue(frame, client_id)

    async def react(self, room: str, seq: int, emoji: str, *, client_id: str | None = None) -> Ack:
        """Add ``emoji`` to message ``seq``; acked like a send (stored exactly once: a
        react whose ack was lost but whose reaction was seen, or replayed by the resume,
        is acked from it, ``duplicate=True``, without being sent again)."""
        frame = {"type": "react", "room": room, "seq": seq, "emoji": emoji}
        return await self._queue(frame, client_id)

    async def unreact(
        self, room: str, seq: int, emoji: str, *, client_id: str | None = None
    ) -> Ack:
        """Remove your ``emoji`` from message ``seq``."""
        frame = {"type": "unreact", "room": room, "seq": seq, "emoji": emoji}
        return await self._queue(frame, client_id)

    async def ping(self) -> float:
        """Round trip of an application ``ping``/``pong`` in seconds."""
        wire = self._wire
        if wire is None:
            raise ConnectionClosed(CLOSE_ABNORMAL, "not connected")
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings.append((time.perf_counter(), waiter))
        wire.send(b'{"type":"ping"}')
        return await waiter

    def typing(self, room: str) -> bool:
        """Tell the room you are typing (ephemeral; False when not connected)."""
        return self._send_now({"type": "typing", "room": room})

    def read(self, room: str, seq: int) -> bool:
        """Mark the room read up to ``seq`` (False when not connected)."""
        return self._send_now({"type": "read", "room": room, "seq": seq})

    def presence(self, room: str) -> bool:
        """Ask who is online in a room; the answer arrives as a Presence item."""
        return self._send_now({"type": "presence", "room": room})

    def _send_now(self, frame: dict[str, Any]) -> bool:
        wire = self._wire
        return wire is not None and wire.send(orjson.dumps(frame))

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ConnectionClosed(CLOSE_NORMAL, "closed by client")

    def _forget_send(self, pending: PendingSend) -> None:
        if self._pending.get(pending.client_id) is pending:
            del self._pending[pending.client_id]


async def connect(urls: str | Sequence[str], token: TokenSource, **options: Any) -> RoomcastSocket:
    """Open a RoomcastSocket and wait until it is ready (options: see RoomcastSocket)."""
    sock = RoomcastSocket(urls, token, **options)
    await sock.start()
    return sock
