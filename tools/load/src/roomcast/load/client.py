"""One simulated client: a picows WSListener speaking the gateway protocol.

Kept deliberately thin, because receivers must never be the bottleneck: a frame is
parsed once with orjson, a ``message`` costs a dict lookup, the accounting step, one
histogram increment and a few counters. A client outlives its connections: when one
closes (a gateway restart's 1012, a network error) it reconnects to the next gateway
URL, authenticates, resubscribes every room with ``since=<last seq>`` and retransmits
every unacknowledged send with its original client_id (the gateway deduplicates).
"""

from __future__ import annotations

import asyncio
import random
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from time import time_ns
from typing import Any

from orjson import loads
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from roomcast.load import wire
from roomcast.load.accounting import MemberLog, RoomLog, SendLog
from roomcast.load.histogram import Histogram

_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
# Reconnect backoff: the first retry is quick (a restarting gateway's sockets should
# move to another replica at once), later ones back off so a down stack is not
# hammered; jitter spreads thousands of sockets' retries.
RECONNECT_FIRST_SECONDS = 0.05
RECONNECT_MAX_SECONDS = 2.0
# Before the first reconnect attempt: a random pause up to this long, so the sockets of
# a restarting gateway do not all hit the next one in the same millisecond (as a
# well-behaved client SDK would).
RECONNECT_JITTER_SECONDS = 0.25
# A send refused with one of these codes is retried (same client_id) after this delay:
# the gateway's rate limiter refills 20 tokens/s, 1 s is always enough for one.
RETRY_SEND_SECONDS = 1.0
# What a send goes through besides the publish, for the ack latency split: a plain
# send, a reply (the gateway reads its parent from the stream), a mention (a username
# lookup at auth), a file message (a share check at history), a send in a slow-mode room
# (the shared pace in NATS key-value) and a reaction.
SEND_KINDS = ("plain", "reply", "mention", "file", "slow_mode", "reaction")
RETRYABLE_SEND_ERRORS = frozenset(
    {"rate_limited", "unavailable", "dependency_unavailable", "timeout", "internal"}
)
# A send refused because the gateway is draining stays pending: the 1012 close follows,
# and the reconnect to another gateway retransmits it.
RESEND_AFTER_RECONNECT_ERRORS = frozenset({"gateway_restarting"})
# Close codes after which reconnecting cannot help.
FATAL_CLOSE_CODES = frozenset({4003})
HANDSHAKE_TIMEOUT_SECONDS = 10.0
ABNORMAL_CLOSE = 1006
# One emoji for every reaction: the gateway's and history's work does not depend on
# which, and a single one per (user, message) keeps history's aggregates small.
REACTION_EMOJI = "👍"


@dataclass
class SocketSpec:
    index: int
    gateway: int
    source_ip: str | None
    rooms: list[str]
    sends: list[tuple[str, float]]  # (room id, messages/s)
    typing: list[tuple[str, float]] = field(default_factory=list)  # (room id, notices/s)
    reads: list[tuple[str, float]] = field(default_factory=list)  # (room id, receipts/s)
    reacts: list[tuple[str, float]] = field(default_factory=list)  # (room id, reactions/s)
    # room id -> (share of sends that reply, share that mention, the username mentioned)
    threads: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    files: dict[str, float] = field(default_factory=dict)  # room id -> share of file sends
    # rooms in slow mode: their sends pass the gateways' shared pace check (the report
    # splits ack latency by what a send goes through, roomcast.load.report)
    slow_rooms: frozenset[str] = frozenset()
    inbox_rate: float = 0.0  # inbox reads/s
    user: int = 0
    username: str = ""
    password: str = ""
    token: str = ""


@dataclass
class Shared:
    """State of one worker process that its clients update."""

    worker: int
    urls: list[str]
    raw: bool
    message_bytes: int
    run_id: str = "r"
    relogin: Callable[[SocketSpec], Any] | None = None  # async: refresh spec.token
    deliveries: int = 0  # counted from ``latencies`` once per second
    typing_sent: int = 0
    reads_sent: int = 0
    typing_received: int = 0  # other members' typing notices
    reads_received: int = 0  # read receipts announced to the room
    replies_sent: int = 0  # messages sent with reply_to
    mentions_sent: int = 0  # messages sent naming another member
    reactions_sent: int = 0
    reactions_acked: int = 0
    reactions_received: int = 0  # reaction frames, live or replayed
    inbox_reads: int = 0  # inbox pages answered
    inbox_errors: int = 0
    inbox: Callable[[SocketSpec], Any] | None = None  # async: read spec's inbox -> bool
    files_sent: int = 0  # file sends (after their upload succeeded)
    files_acked: int = 0
    files_received: int = 0  # file messages, live or replayed
    file_upload_errors: int = 0  # the file send of a failed upload is never sent
    upload: Callable[[SocketSpec, str], Any] | None = None  # async: (spec, room) -> file id
    latencies: array[int] = field(default_factory=lambda: array("q"))  # this second's, us
    unexpected: int = 0
    connected: int = 0  # open WebSockets
    live: int = 0  # authenticated and subscribed to every room
    connects: int = 0
    reconnects: int = 0
    stopping: bool = False
    raw_seq: int = 0
    last_delivery_us: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)
    ack_sec: Histogram = field(default_factory=Histogram)
    # the whole run's ack latency by send kind (SEND_KINDS): which path a tail comes from
    ack_by_kind: dict[str, Histogram] = field(
        default_factory=lambda: {kind: Histogram() for kind in SEND_KINDS}
    )
    sends: SendLog = field(default_factory=SendLog)
    rooms: dict[str, RoomLog] = field(default_factory=dict)
    members: list[MemberLog] = field(default_factory=list)
    live_listeners: list[Callable[[Client], None]] = field(default_factory=list)

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if kind not in self.error_examples:  # the first message of each kind, for the report
            self.error_examples[kind] = detail[:200]

    def room_log(self, room: str) -> RoomLog:
        log = self.rooms.get(room)
        if log is None:
            log = self.rooms[room] = RoomLog(room)
        return log


class Client(WSListener):
    def __init__(self, shared: Shared, spec: SocketSpec) -> None:
        self.shared = shared
        self.spec = spec
        self.gateway = spec.gateway
        self.transport: WSTransport | None = None
        self.live = False
        self.abandoned = False
        self.close_code: int | None = None
        self.closing = False
        self.rooms = ["raw"] if shared.raw else list(spec.rooms)
        self.members: dict[str, MemberLog] = {}
        for room in self.rooms:
            m = MemberLog(shared.room_log(room), f"{shared.worker}-{spec.index}")
            self.members[room] = m
            shared.members.append(m)
        self._awaiting = 0
        self._replay: dict[str, list[int]] = {}  # room -> [head, replayed so far]
        self._since: dict[str, int] = {}
        # client_id -> [room, sched_us, frame, sent before, last sent at (us)]
        self.pending: dict[str, list[Any]] = {}
        self._n = 0
        self._sweep = False
        self.recent: dict[str, int] = {}  # room -> newest message seq received
        self._reacts: set[str] = set()  # client_ids of reactions not acked yet
        self._files: set[str] = set()  # client_ids of file sends not acked yet
        self.uploading = 0  # uploads in flight, whose file sends are still to come
        self._rng = random.Random(spec.index)
        self._inbox_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None

    # --- connecting -------------------------------------------------------------------

    async def connect(self) -> bool:
        url = self.shared.urls[self.gateway % len(self.shared.urls)]
        kwargs: dict[str, Any] = {}
        if self.spec.source_ip:
            kwargs["local_addr"] = (self.spec.source_ip, 0)
        self.close_code = None
        try:
            await ws_connect(
                lambda: self,
                url,
                websocket_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
                max_frame_size=1 << 20,
                **kwargs,
            )
        except Exception as exc:  # every failure is counted and retried
            self.shared.error(f"connect:{_error_kind(exc)}", str(exc))
            return False
        self.shared.connects += 1
        return True

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.shared.connected += 1
        if self.shared.raw:
            for m in self.members.values():
                m.subscribed(0)
            self._go_live()
        else:
            transport.send(_TEXT, wire.auth_frame(self.spec.token))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.shared.connected -= 1
        if self.live:
            self.shared.live -= 1
        self.transport = None
        self.live = False
        self.finish_replays()
        if self.closing:
            return
        code = self.close_code if self.close_code is not None else ABNORMAL_CLOSE
        key = str(code)
        self.shared.closes[key] = self.shared.closes.get(key, 0) + 1
        if code in FATAL_CLOSE_CODES:
            self._abandon()
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect(code))

    async def _reconnect(self, code: int) -> None:
        if code == 4001 and not await self._relogin():
            return
        self.shared.reconnects += 1
        await asyncio.sleep(random.random() * RECONNECT_JITTER_SECONDS)
        # Another replica first: the old one may be restarting.
        await self.connect_until_up(rotate=True)

    async def connect_until_up(self, *, rotate: bool = False) -> bool:
        """Connect, retrying with backoff (and the next gateway URL each time)."""
        attempt = 0
        while not self.shared.stopping and not self.abandoned:
            if attempt or rotate:
                self.gateway += 1
            if attempt:
                delay = min(RECONNECT_MAX_SECONDS, RECONNECT_FIRST_SECONDS * (2**attempt))
                await asyncio.sleep(delay * (0.5 + random.random()))
            attempt += 1
            if await self.connect():
                return True
        return False

    async def _relogin(self) -> bool:
        relogin = self.shared.relogin
        if relogin is None or not self.spec.password:
            self._abandon()
            return False
        try:
            await relogin(self.spec)
        except Exception as exc:  # a failed login ends this client; counted
            self.shared.error(f"relogin:{_error_kind(exc)}", str(exc))
            self._abandon()
            return False
        return True

    def _abandon(self) -> None:
        self.abandoned = True
        for m in self.members.values():
            m.abandoned = True

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()

    # --- frames -----------------------------------------------------------------------

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == _TEXT:
            msg = loads(frame.get_payload_as_memoryview())
            kind = msg["type"]
            if kind == "message":
                now = time_ns() // 1000
                room = msg["room"]
                m = self.members.get(room)
                shared = self.shared
                if m is None:
                    shared.unexpected += 1
                    return
                seq = msg["seq"]
                m.deliver(seq, msg["prev"])
                self.recent[room] = seq
                if self._replay:
                    self._replayed(room, seq)
                body = msg["body"]
                text = body.get("content")
                if text is None:  # a file message: the stamp is in its caption
                    text = body["caption"]
                    shared.files_received += 1
                # One append per delivery; the worker bins these once per second.
                shared.latencies.append(now - int(text[:16]))
                shared.last_delivery_us = now
            elif kind == "ack":
                self._on_ack(msg)
            elif kind == "typing":
                self.shared.typing_received += 1
            elif kind == "read":
                self.shared.reads_received += 1
            elif kind == "reaction":
                # A reaction takes a place in the room's chain: delivered like a skip
                # (no body to time), so the chain stays whole and every member must get it.
                self.shared.reactions_received += 1
                m = self.members.get(msg["room"])
                if m is not None:
                    m.deliver(msg["seq"], msg["prev"], skip=True)
                    if self._replay:
                        self._replayed(msg["room"], msg["seq"])
            elif kind == "skip":
                m = self.members.get(msg["room"])
                if m is not None:
                    m.deliver(msg["seq"], msg["prev"], skip=True)
                    if self._replay:
                        self._replayed(msg["room"], msg["seq"])
            else:
                self._on_control(msg)
        elif frame.msg_type == _CLOSE:
            code = frame.get_close_code()
            self.close_code = int(code.value)
            key = f"close:{self.close_code}"
            if key not in self.shared.error_examples:
                self.shared.error_examples[key] = frame.get_close_message().decode(errors="replace")
            transport.send_close(code)
            transport.disconnect()

    def _on_control(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "ready":
            self._subscribe_all()
        elif kind == "subscribed":
            room = msg["room"]
            m = self.members.get(room)
            if m is None:
                return
            head = int(msg["seq"])
            m.subscribed(head)
            since = self._since.pop(room, None)
            if since is not None:
                truncated = bool(msg.get("truncated"))
                if head > since:
                    self._replay[room] = [head, 0, int(truncated)]
                else:
                    m.resumed(0, truncated=truncated)
            self._awaiting -= 1
            if self._awaiting == 0:
                self._go_live()
        elif kind == "unsubscribed":
            # The gateway ended a subscription (membership changed...): the member
            # misses what follows, which the accounting counts; make the cause visible.
            self.shared.error(f"unsubscribed:{msg.get('reason')}", str(msg.get("room")))
        elif kind == "error":
            self._on_error(str(msg.get("code")), msg.get("ref"), str(msg.get("message", "")))

    def _on_error(self, code: str, ref: object, message: str) -> None:
        if ref is None and code == "rate_limited" and self.pending and not self._sweep:
            # The gateway's frame rate limit names no frame: retransmit whatever is still
            # unacked a moment later (same client_ids: deduplicated if it did arrive).
            self._sweep = True
            asyncio.get_running_loop().call_later(RETRY_SEND_SECONDS, self._resend_stale)
        if isinstance(ref, str) and ref in self.pending:
            self.shared.sends.on_error(code)
            if code in RETRYABLE_SEND_ERRORS:
                asyncio.get_running_loop().call_later(RETRY_SEND_SECONDS, self._retry, ref)
            elif code not in RESEND_AFTER_RECONNECT_ERRORS:
                self.pending.pop(ref, None)  # refused for good (forbidden, invalid...)
            return
        self.shared.error(f"frame:{code}", message)
        if not self.live and self._awaiting > 0 and isinstance(ref, str) and ref in self.members:
            # A subscribe that failed: do not wait for it forever.
            self._since.pop(ref, None)
            self._awaiting -= 1
            if self._awaiting == 0:
                self._go_live()

    def _replayed(self, room: str, seq: int) -> None:
        state = self._replay.get(room)
        if state is None:
            return
        if seq <= state[0]:
            state[1] += 1
        if seq >= state[0]:
            del self._replay[room]
            self.members[room].resumed(state[1], truncated=bool(state[2]))

    def finish_replays(self) -> None:
        for room, state in list(self._replay.items()):
            self.members[room].resumed(state[1], truncated=bool(state[2]))
        self._replay.clear()

    def _subscribe_all(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if not self.rooms:
            self._go_live()
            return
        self._awaiting = len(self.rooms)
        for room in self.rooms:
            m = self.members[room]
            since = m.last if m.start is not None else None
            if since is not None:
                self._since[room] = since
            transport.send(_TEXT, wire.subscribe_frame(room, since))

    def _go_live(self) -> None:
        if not self.live:
            self.shared.live += 1
        self.live = True
        transport = self.transport
        if transport is not None:
            for entry in self.pending.values():
                self._transmit(transport, entry)
        for listener in self.shared.live_listeners:
            listener(self)

    # --- sending ----------------------------------------------------------------------

    def send_typing(self, room: str) -> None:
        """A typing notice (nothing answers it); skipped while disconnected."""
        if self.transport is not None and self.live:
            self.transport.send(_TEXT, wire.typing_frame(room))
            self.shared.typing_sent += 1

    def send_read(self, room: str) -> None:
        """A read receipt up to the last seq this socket received in ``room``."""
        m = self.members.get(room)
        if self.transport is not None and self.live and m is not None and m.last > 0:
            self.transport.send(_TEXT, wire.read_frame(room, m.last))
            self.shared.reads_sent += 1

    def read_inbox(self) -> None:
        """One inbox page (GET /v1/notifications), at most one in flight per socket."""
        inbox = self.shared.inbox
        if inbox is None or not self.live or self._inbox_task is not None:
            return
        self._inbox_task = asyncio.get_running_loop().create_task(self._read_inbox(inbox))

    async def _read_inbox(self, inbox: Callable[[SocketSpec], Any]) -> None:
        try:
            if await inbox(self.spec):
                self.shared.inbox_reads += 1
            else:
                self.shared.inbox_errors += 1
        except Exception as exc:  # counted like every other failure of the run
            self.shared.inbox_errors += 1
            self.shared.error(f"inbox:{_error_kind(exc)}", str(exc))
        finally:
            self._inbox_task = None

    def send_react(self, room: str, sched_us: int) -> None:
        """A reaction to the newest message received in ``room``: sent, acked and
        delivered like a message (it takes a place in the chain), counted apart."""
        target = self.recent.get(room)
        if target is None or self.shared.raw:
            return
        shared = self.shared
        shared.sends.on_schedule()
        self._n += 1
        cid = f"{shared.run_id}w{shared.worker}s{self.spec.index}r{self._n}"
        frame = wire.react_frame(room, cid, target, REACTION_EMOJI)
        self._reacts.add(cid)
        shared.reactions_sent += 1
        entry = [room, sched_us, frame, False, 0, "reaction"]
        self.pending[cid] = entry
        if self.live and self.transport is not None:
            self._transmit(self.transport, entry)

    def send_scheduled(self, room: str, sched_us: int) -> None:
        shared = self.shared
        shared.sends.on_schedule()
        self._n += 1
        cid = f"{shared.run_id}w{shared.worker}s{self.spec.index}n{self._n}"
        if shared.raw:
            shared.raw_seq += 1
            seq = shared.raw_seq
            frame = wire.raw_message_frame(seq, seq - 1, sched_us, shared.message_bytes)
            if self.transport is not None:
                self.transport.send(_TEXT, frame)
                shared.sends.on_sent()
                shared.sends.on_ack(room, cid, seq)
            return
        file_share = self.spec.files.get(room)
        if file_share and shared.upload is not None and self._rng.random() < file_share:
            self.uploading += 1
            asyncio.get_running_loop().create_task(self._send_file(shared.upload, room, cid))
            return
        reply_to: int | None = None
        mention: str | None = None
        thread = self.spec.threads.get(room)
        if thread is not None:
            reply_share, mention_share, name = thread
            if self._rng.random() < reply_share:
                reply_to = self.recent.get(room)
                shared.replies_sent += reply_to is not None
            if self._rng.random() < mention_share:
                mention = name
                shared.mentions_sent += 1
        frame = wire.send_frame(
            room, cid, sched_us, shared.message_bytes, reply_to=reply_to, mention=mention
        )
        if room in self.spec.slow_rooms:
            kind = "slow_mode"
        elif reply_to is not None:
            kind = "reply"
        elif mention is not None:
            kind = "mention"
        else:
            kind = "plain"
        entry = [room, sched_us, frame, False, 0, kind]
        self.pending[cid] = entry
        if self.live and self.transport is not None:
            self._transmit(self.transport, entry)

    async def _send_file(
        self, upload: Callable[[SocketSpec, str], Any], room: str, cid: str
    ) -> None:
        """A small upload, then the ``file`` send sharing it, acked and delivered like a
        message. Its clock starts when the send goes out: the upload's time is not part
        of the delivery latency. A failed upload leaves the send unsent (counted)."""
        shared = self.shared
        try:
            file_id = await upload(self.spec, room)
        except Exception as exc:  # counted like every other failure of the run
            file_id = None
            shared.error(f"upload:{_error_kind(exc)}", str(exc))
        finally:
            self.uploading -= 1
        if file_id is None:
            shared.file_upload_errors += 1
            return
        sched_us = time_ns() // 1000
        frame = wire.file_frame(room, cid, file_id, sched_us, shared.message_bytes)
        self._files.add(cid)
        shared.files_sent += 1
        entry = [room, sched_us, frame, False, 0, "file"]
        self.pending[cid] = entry
        if self.live and self.transport is not None:
            self._transmit(self.transport, entry)

    def _transmit(self, transport: WSTransport, entry: list[Any]) -> None:
        transport.send(_TEXT, entry[2])
        self.shared.sends.on_sent(resend=entry[3])
        entry[3] = True
        entry[4] = time_ns() // 1000

    def _resend_stale(self) -> None:
        self._sweep = False
        transport = self.transport
        if not self.live or transport is None:
            return  # going live again retransmits everything pending
        older = time_ns() // 1000 - int(RETRY_SEND_SECONDS * 1e6)
        for entry in self.pending.values():
            if entry[4] <= older:
                self._transmit(transport, entry)

    def _retry(self, cid: str) -> None:
        entry = self.pending.get(cid)
        if entry is not None and self.live and self.transport is not None:
            self._transmit(self.transport, entry)

    def _on_ack(self, msg: dict[str, Any]) -> None:
        cid = msg["client_id"]
        entry = self.pending.pop(cid, None)
        shared = self.shared
        if cid in self._reacts:
            self._reacts.discard(cid)
            shared.reactions_acked += 1
        elif cid in self._files:
            self._files.discard(cid)
            shared.files_acked += 1
        if entry is None:
            shared.sends.on_late_ack(cid, int(msg["seq"]), duplicate=bool(msg.get("duplicate")))
            return
        shared.sends.on_ack(entry[0], cid, int(msg["seq"]), duplicate=bool(msg.get("duplicate")))
        waited = time_ns() // 1000 - entry[1]
        shared.ack_sec.record(waited)
        shared.ack_by_kind[entry[5]].record(waited)


def _error_kind(exc: BaseException) -> str:
    status = getattr(getattr(exc, "response", None), "status", None)
    if status is not None:
        return f"http_{int(status)}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"errno_{exc.errno}"
    return type(exc).__name__
