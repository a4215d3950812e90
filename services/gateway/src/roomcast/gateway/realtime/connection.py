"""One WebSocket client: a picows listener with its auth state, rate limit and rooms.

Frames arrive in ``on_ws_frame`` (synchronous). Cheap work (parsing, validation, rate
limiting, ping) happens there; commands that wait on something (auth, subscribe,
unsubscribe, send) go to a per-socket queue worked by one task at a time, so a client's
commands take effect in the order it sent them (its messages in one room are stored in
send order). The task exists only while the queue is non-empty.

A plain text send whose checks are answered from the caches (a cached membership that
is neither muted nor slow-moded; no recipient, reply, file or mention to look up) is
not queued: it is published from ``on_ws_frame`` itself, with no task or coroutine, and
its ack is written when JetStream's ack comes back (:class:`_InlineSend`). Several such
sends of one socket are in flight at once (pipelined): they are published in arrival
order with the socket as the publisher's ``key``, so JetStream stores them in that
order, and their ack and error frames are written strictly in arrival order (a later
send's answer waits for the earlier ones'). Any other command waits until the inline
sends before it are answered, and an inline send never starts while a queued command
is pending, so every command still takes effect in the order the client sent it.

Writes go straight to the transport (``write``) with frames built by protocol.py. The
transport's high-water mark is the send-buffer limit: crossing it calls
``pause_writing``, which closes the socket with 4009 outside the fan-out loop; replays
instead wait for the socket to drain.

A socket exists only once NATS is up (the handshake policy refuses it before), so it
gets every collaborator at construction, each through a small Protocol below
(:class:`SocketServices`): the socket registry, token verifier, membership caches, the
stream, the fan-out, presence, read receipts, edits/deletes and the drain state. It
knows none of their modules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from picows import WSFrame, WSListener, WSMsgType, WSTransport
from prometheus_client import Counter

from roomcast.common.errors import DependencyUnavailable, RoomcastError, Unauthenticated
from roomcast.common.jspublisher import Ack
from roomcast.common.ratelimit import TokenBucket
from roomcast.common.tokens import AccessClaims
from roomcast.gateway import metrics
from roomcast.gateway.errors import (
    ClientIdReused,
    CloseCode,
    Draining,
    FrameRateLimited,
    InvalidFrame,
    SessionUserMismatch,
    SlowModeRefused,
    TooManySubscriptions,
    Unavailable,
    close_code_for,
)
from roomcast.gateway.realtime.fanout import RoomChannel
from roomcast.gateway.realtime.protocol import (
    PONG_FRAME,
    Auth,
    Command,
    Delete,
    Edit,
    FrameError,
    Ping,
    Presence,
    React,
    Read,
    Send,
    Subscribe,
    Typing,
    Unsubscribe,
    ack_frame,
    command_ref,
    error_frame,
    message_record,
    parse_frame,
    ready_frame,
    record_headers,
    unsubscribed_frame,
    ws_text,
)
from roomcast.gateway.realtime.reactions import ReactionTargets, publish_reaction
from roomcast.gateway.realtime.replies import reply_recipient
from roomcast.gateway.realtime.stream import PublishResult, publish_error
from roomcast.gateway.settings import Settings

log = logging.getLogger(__name__)

# Commands waiting behind a slow one (a send while NATS is slow) before more are refused;
# the rate limit keeps a well-behaved client far below it.
MAX_QUEUED_COMMANDS = 64
# After the gateway's close frame, how long the client has to answer with its own before
# the TCP connection is aborted. Closing TCP at once would make the client's in-flight
# frames draw a RST that can destroy the close frame unread; a reader that stopped
# reading (4009) must not hold the connection open either.
CLOSE_LINGER_SECONDS = 5.0
# How long a replay waits for a socket over its send-buffer limit to drain before the
# socket counts as too slow.
DRAIN_TIMEOUT_SECONDS = 10.0
# Close reasons are capped to fit the 123-byte limit of a close frame.
MAX_CLOSE_REASON_BYTES = 120


# The send counter's child per result, looked up once (labels() takes a lock and hashes
# the label values on every call). Results are a bounded set: ok, duplicate, error codes.
_SENT_BY_RESULT: dict[str, Counter] = {}


def _noop_write(_: bytes) -> None:
    return None


def _count_sent(result: str) -> None:
    sent = _SENT_BY_RESULT.get(result)
    if sent is None:
        sent = _SENT_BY_RESULT[result] = metrics.MESSAGES_SENT.labels(result)
    sent.inc()


class _InlineSend:
    """A send published from ``on_ws_frame``, awaiting its answer (the module docstring).

    ``answer`` is the ack frame, or the error, once known; the socket writes answers
    strictly in the order of its sends."""

    __slots__ = ("answer", "command", "drain", "started")

    def __init__(self, command: Send, drain: AbstractContextManager[None]) -> None:
        self.command = command
        self.drain = drain  # entered while the publish awaits its ack
        self.started = time.perf_counter()
        self.answer: bytes | RoomcastError | None = None


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a finished helper task's outcome retrieved (it records its own errors)."""
    if not task.cancelled():
        task.exception()


def _ref_of(data: bytes, max_body_chars: int) -> str | None:
    """The ref of a frame refused before it was executed (None if it does not parse)."""
    try:
        return command_ref(parse_frame(data, max_body_chars=max_body_chars))
    except FrameError as exc:
        return exc.ref


class SocketIndex(Protocol):
    """The socket registry (sockets.py)."""

    def add(self, conn: Connection) -> None: ...

    def authenticated(self, conn: Connection) -> None: ...

    def remove(self, conn: Connection) -> None: ...


class Verifier(Protocol):
    """Access-token verification (roomcast.common.tokens; revoked sessions refused)."""

    async def verify(self, token: str) -> AccessClaims: ...


class MembershipCheck(Protocol):
    """The caller's own membership, cached (membership.py)."""

    async def require_member(self, claims: AccessClaims, room_id: str) -> object: ...


class RecipientCheck(Protocol):
    """A private message's recipient is a member (recipients.py)."""

    async def require_member(self, claims: AccessClaims, room_id: str, user_id: str) -> None: ...


class MentionLookup(Protocol):
    """The room members a text mentions (mentions.py)."""

    async def resolve(self, claims: AccessClaims, room: str, content: str) -> tuple[str, ...]: ...


class MessageStore(Protocol):
    """The CHAT stream's publish side (stream.py)."""

    async def publish(self, room: str, record: bytes, headers: dict[str, str]) -> PublishResult: ...

    def publish_started(
        self, room: str, record: bytes, headers: dict[str, str], *, key: Hashable
    ) -> asyncio.Future[Ack] | None: ...

    async def is_stored(self, room: str, seq: int) -> bool: ...

    async def stored_record(self, room: str, seq: int) -> bytes | None: ...


class RoomSubscriptions(Protocol):
    """Live room subscriptions with resume (fanout.py)."""

    async def subscribe(self, subscriber: Connection, room_id: str, since: int | None) -> None: ...

    def unsubscribe(self, subscriber: Connection, room_id: str) -> bool: ...

    def detach_all(self, subscriber: Connection) -> None: ...


class PresenceTracker(Protocol):
    """Presence and typing across gateways (presence.py)."""

    def sync(self, conn: Connection, room: str) -> None: ...

    def forget(self, conn: Connection) -> None: ...

    def typing(self, conn: Connection, room: str) -> None: ...

    async def query(self, conn: Connection, room: str) -> None: ...


class ReadMarker(Protocol):
    """Read positions (receipts.py)."""

    async def mark(self, conn: Connection, room: str, seq: int) -> None: ...


class ChangeService(ReactionTargets, Protocol):
    """Edits and deletes of stored messages (changes.py)."""

    async def publish(self, claims: AccessClaims, command: Edit | Delete) -> PublishResult: ...


class PostingCheck(Protocol):
    """A room's moderation applied to what a socket posts: mutes, slow mode
    (moderation.py)."""

    async def check_send(self, claims: AccessClaims, room: str, client_id: str) -> None: ...

    async def check_post(self, claims: AccessClaims, room: str) -> object: ...

    def send_cleared(self, claims: AccessClaims, room: str) -> bool: ...


class FileLookup(Protocol):
    """The metadata of a file the sender uploaded into the room (fileshares.py)."""

    async def metadata(self, claims: AccessClaims, room: str, file_id: str) -> dict[str, Any]: ...


class DrainGate(Protocol):
    """Whether the gateway is draining; publishes in flight (drain.py)."""

    @property
    def draining(self) -> bool: ...

    def publishing(self) -> AbstractContextManager[None]: ...


@dataclass(frozen=True, slots=True)
class SocketServices:
    """Everything a socket talks to, built once NATS is up (live.py)."""

    settings: Settings
    sockets: SocketIndex
    drain: DrainGate
    verifier: Verifier
    membership: MembershipCheck
    recipients: RecipientCheck
    stream: MessageStore
    rooms: RoomSubscriptions
    presence: PresenceTracker
    receipts: ReadMarker
    changes: ChangeService
    moderation: PostingCheck
    # The check before a ``file`` send (fileshares.py); None: file sends unavailable.
    files: FileLookup | None = None
    # ``@username`` resolution for text sends (mentions.py); None: no mentions.
    mentions: MentionLookup | None = None


class Connection(WSListener):
    def __init__(self, services: SocketServices) -> None:
        super().__init__()
        self.services = services
        self.settings = settings = services.settings
        self.loop = asyncio.get_running_loop()
        self.transport: WSTransport | None = None
        self.write: Callable[[bytes], object] = _noop_write
        self.claims: AccessClaims | None = None
        self.user_id = ""
        self.rooms: dict[str, RoomChannel] = {}
        self.closed = False
        self.paused = False
        self._auth_started = False
        self._bucket = TokenBucket.full(
            settings.rate_limit_burst, settings.rate_limit_per_second, time.monotonic()
        )
        self._violations: deque[float] = deque()
        self._queue: deque[Command] = deque()
        self._inline: deque[_InlineSend] = deque()  # in send order
        self._worker: asyncio.Task[None] | None = None
        self._fragments: bytearray | None = None
        self._fragment_type = WSMsgType.TEXT
        self._auth_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._writable: asyncio.Future[None] | None = None
        self._replaying = 0

    # --- picows callbacks ----------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        underlying = transport.underlying_transport
        underlying.set_write_buffer_limits(high=self.settings.max_send_buffer_bytes)
        self.write = underlying.write
        self.services.sockets.add(self)
        self._auth_timer = self.loop.call_later(
            self.settings.auth_timeout_seconds, self._auth_timed_out
        )

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.closed:
            # Closing: the client's close frame completes the handshake.
            if frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()
            return
        try:
            self._on_frame(transport, frame)
        except Exception:
            log.exception("frame handling failed")
            self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed:
            self.closed = True
            self._cleanup()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._wake_writers()

    def pause_writing(self) -> None:
        self.paused = True
        if not self._replaying:
            self.too_slow()

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writers()

    # --- frames --------------------------------------------------------------------

    def _on_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            if self._fragments is not None:
                self.close(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
            elif frame.fin:
                self._on_message(kind, frame.get_payload_as_bytes())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
                self._fragment_type = kind
        elif kind == WSMsgType.CONTINUATION:
            if self._fragments is None:
                self.close(CloseCode.PROTOCOL_ERROR, "continuation without a message")
                return
            self._fragments += frame.get_payload_as_memoryview()
            if len(self._fragments) > self.settings.max_frame_bytes:
                self._fragments = None
                self.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
            elif frame.fin:
                data, self._fragments = bytes(self._fragments), None
                self._on_message(self._fragment_type, data)
        elif kind == WSMsgType.CLOSE:
            # The client closes: echo its code (RFC 6455), or 1000 when it sent none
            # or one that must not appear on the wire (1005, 1006, 1015).
            self.closed = True
            self._cleanup()
            code = int(frame.get_close_code().value)
            if not 1000 <= code <= 4999 or code in (1005, 1006, 1015):
                code = CloseCode.NORMAL
            transport.send_close(code)  # type: ignore[arg-type]
            transport.disconnect()

    def _on_message(self, kind: WSMsgType, data: bytes) -> None:
        if not self._within_rate(data if kind == WSMsgType.TEXT else b""):
            return
        if kind == WSMsgType.BINARY:
            if not self._auth_started:
                self._reject_unauthenticated("the first frame must be an auth frame")
            else:
                self._error(InvalidFrame("frames must be JSON text"), None)
            return
        try:
            command = parse_frame(data, max_body_chars=self.settings.max_body_chars)
        except FrameError as exc:
            if not self._auth_started and isinstance(exc.error, Unauthenticated):
                # An auth frame with a missing or malformed token: say so (4001).
                self._error(exc.error, None)
                self.close(CloseCode.UNAUTHENTICATED, exc.error.message)
            elif not self._auth_started:
                self._reject_unauthenticated("the first frame must be an auth frame")
            else:
                self._error(exc.error, exc.ref)
            return
        if not self._auth_started:
            if not isinstance(command, Auth):
                self._reject_unauthenticated("the first frame must be an auth frame")
                return
            self._auth_started = True
        if isinstance(command, Ping):
            self.send_payload(PONG_FRAME)
        elif len(self._queue) + len(self._inline) >= MAX_QUEUED_COMMANDS:
            self._error(FrameRateLimited("too many commands in flight"), command_ref(command))
        elif (
            isinstance(command, Send)
            and self._worker is None
            and not self._queue
            and self._send_inline(command)
        ):
            return
        else:
            self._queue.append(command)
            if self._worker is None and not self._inline:
                self._worker = self.loop.create_task(self._work())

    def _within_rate(self, data: bytes) -> bool:
        now = time.monotonic()
        if self._bucket.take(now) == 0.0:
            return True
        metrics.RATE_LIMITED.inc()
        settings = self.settings
        window_start = now - settings.rate_limit_violation_window_seconds
        violations = self._violations
        while violations and violations[0] < window_start:
            violations.popleft()
        violations.append(now)
        if len(violations) >= settings.rate_limit_max_violations:
            self.close(CloseCode.RATE_LIMITED, "rate limit exceeded")
        else:
            # The refused command's ref (client_id of a send, else its room), so a client
            # knows which one to retry; parsed only for refused frames, which the
            # violation limit above bounds.
            ref = _ref_of(data, settings.max_body_chars) if data else None
            self._error(FrameRateLimited("too many frames, slow down"), ref)
        return False

    # --- commands ------------------------------------------------------------------

    async def _work(self) -> None:
        try:
            queue = self._queue
            while queue and not self.closed:
                command = queue[0]
                if isinstance(command, Send) and self._send_inline(command):
                    queue.popleft()
                    continue
                if self._inline:
                    # Inline sends before it still await their answers: _answer_inline
                    # starts the worker again once they are written.
                    return
                queue.popleft()
                try:
                    await self._execute(command)
                except RoomcastError as exc:
                    self._fail(exc, command_ref(command))
                except Exception:
                    log.exception("command failed")
                    self._error(RoomcastError("internal error"), command_ref(command))
        finally:
            self._worker = None

    async def _execute(self, command: Command) -> None:
        if isinstance(command, Send):
            await self._send(command)
        elif isinstance(command, Subscribe):
            await self._subscribe(command)
        elif isinstance(command, Unsubscribe):
            self.services.rooms.unsubscribe(self, command.room)
            self._sync_presence(command.room)
            self.send_payload(unsubscribed_frame(command.room))
        elif isinstance(command, Auth):
            await self._authenticate(command.token)
        elif isinstance(command, Edit | Delete):
            assert self.claims is not None
            if isinstance(command, Edit):
                await self.services.moderation.check_post(self.claims, command.room)
            published = await self.services.changes.publish(self.claims, command)
            self.send_payload(
                ack_frame(command.client_id, published.seq, duplicate=published.duplicate)
            )
        elif isinstance(command, React):
            assert self.claims is not None
            await self.services.moderation.check_post(self.claims, command.room)
            published = await publish_reaction(self.services.changes, self.claims, command)
            self.send_payload(
                ack_frame(command.client_id, published.seq, duplicate=published.duplicate)
            )
        elif isinstance(command, Read):
            await self.services.receipts.mark(self, command.room, command.seq)
        elif isinstance(command, Typing):
            assert self.claims is not None
            await self.services.moderation.check_post(self.claims, command.room)
            self.services.presence.typing(self, command.room)
        elif isinstance(command, Presence):
            await self.services.presence.query(self, command.room)

    def _sync_presence(self, room: str) -> None:
        """Presence follows subscriptions: a user is online in a room while one of their
        sockets is subscribed to it (presence.py)."""
        self.services.presence.sync(self, room)

    async def _authenticate(self, token: str) -> None:
        first = self.claims is None
        try:
            # Also refuses a revoked session's tokens (session_revoked): the verifier
            # follows the shared revocation list (roomcast.common.verifier, revocations.py).
            claims = await self.services.verifier.verify(token)
        except Unauthenticated as exc:
            if first:
                self._error(exc, None)
                self.close(CloseCode.UNAUTHENTICATED, exc.message)
            else:
                self._error(exc, None)  # the current token stays valid until it expires
            return
        except DependencyUnavailable:
            if first:
                self._error(Unavailable("cannot verify tokens right now"), None)
                self.close(CloseCode.TRY_AGAIN_LATER, "token verification unavailable")
            else:
                self._error(Unavailable("cannot verify tokens right now"), None)
            return
        if self.closed:
            return
        if first:
            if self._auth_timer is not None:
                self._auth_timer.cancel()
                self._auth_timer = None
            self.claims = claims
            self.user_id = claims.user_id
            self.services.sockets.authenticated(self)
        elif claims.user_id != self.user_id:
            raise SessionUserMismatch("a socket stays with the user it authenticated as")
        else:
            self.claims = claims
        self._schedule_expiry(claims.valid_until)
        self.send_payload(ready_frame(claims))

    async def _subscribe(self, command: Subscribe) -> None:
        services = self.services
        if services.drain.draining:
            raise Draining("gateway restarting")
        limit = self.settings.max_subscriptions_per_connection
        if command.room not in self.rooms and len(self.rooms) >= limit:
            raise TooManySubscriptions(f"at most {limit} subscriptions")
        assert self.claims is not None
        await services.membership.require_member(self.claims, command.room)
        if self.closed:
            return
        self._replaying += 1
        try:
            await services.rooms.subscribe(self, command.room, command.since)
        finally:
            self._replaying -= 1
            self._sync_presence(command.room)
        if self.paused and not self._replaying:
            await self.wait_writable()

    # --- sends answered from the caches (the module docstring) -------------------------

    def _send_inline(self, command: Send) -> bool:
        """Publish ``command`` now if every check is answered without an await; False
        (nothing done) when it needs the queued path, which also reports any refusal."""
        services = self.services
        claims = self.claims
        if (
            claims is None
            or command.to is not None
            or command.reply_to is not None
            or command.file_id is not None
            or (services.mentions is not None and "@" in command.content)
            or services.drain.draining
            or not services.moderation.send_cleared(claims, command.room)
        ):
            return False
        try:
            record = message_record(
                room=command.room,
                sender=claims,
                content=command.content,
                to=None,
                client_id=command.client_id,
            )
        except RoomcastError:
            return False  # refused by the queued path, with its error
        headers = record_headers(sender_id=self.user_id, client_id=command.client_id, to=None)
        future = services.stream.publish_started(command.room, record, headers, key=self)
        if future is None:
            return False
        drain = services.drain.publishing()
        drain.__enter__()
        entry = _InlineSend(command, drain)
        self._inline.append(entry)
        future.add_done_callback(lambda done: self._on_inline_ack(entry, done))
        return True

    def _on_inline_ack(self, entry: _InlineSend, done: asyncio.Future[Ack]) -> None:
        entry.drain.__exit__(None, None, None)
        command = entry.command
        if done.cancelled() or done.exception() is not None:
            exc: BaseException = (
                asyncio.CancelledError() if done.cancelled() else done.exception()  # type: ignore[assignment]
            )
            error = publish_error(exc)
            if error.code == "internal":
                log.error("send failed", exc_info=exc)
            _count_sent(error.code)
            entry.answer = error
        else:
            ack = done.result()
            metrics.PUBLISH_SECONDS.observe(time.perf_counter() - entry.started)
            if ack.duplicate:
                # The key user:client_id may be another room's message: checked by the
                # queued path's rule, off the read loop.
                task = self.loop.create_task(self._confirm_duplicate(entry, ack.seq))
                task.add_done_callback(_retrieve)
                return
            _count_sent("ok")
            entry.answer = ack_frame(command.client_id, ack.seq, duplicate=False)
        self._answer_inline()

    async def _confirm_duplicate(self, entry: _InlineSend, seq: int) -> None:
        command = entry.command
        try:
            if not await self.services.stream.is_stored(command.room, seq):
                raise ClientIdReused("client_id already used for another message")
        except RoomcastError as exc:
            _count_sent(exc.code)
            entry.answer = exc
        except Exception:
            log.exception("duplicate check failed")
            _count_sent("error")
            entry.answer = RoomcastError("internal error")
        else:
            _count_sent("duplicate")
            entry.answer = ack_frame(command.client_id, seq, duplicate=True)
        finally:
            if entry.answer is None:  # cancelled
                entry.answer = RoomcastError("internal error")
            self._answer_inline()

    def _answer_inline(self) -> None:
        """Write the answers now known, in send order; then run the queued commands."""
        inline = self._inline
        while inline and inline[0].answer is not None:
            entry = inline.popleft()
            answer = entry.answer
            if isinstance(answer, RoomcastError):
                self._fail(answer, entry.command.client_id)
            else:
                assert answer is not None
                self.send_payload(answer)
        if not inline and self._queue and self._worker is None and not self.closed:
            self._worker = self.loop.create_task(self._work())

    async def _send(self, command: Send) -> None:
        services = self.services
        assert self.claims is not None
        result = "error"
        try:
            if services.drain.draining:
                raise Draining("gateway restarting")
            stream = services.stream
            # Membership, mutes and slow mode from one cached membership answer.
            await services.moderation.check_send(self.claims, command.room, command.client_id)
            to = command.to
            if command.reply_to is not None:
                to = await reply_recipient(
                    stream,
                    room=command.room,
                    parent_seq=command.reply_to,
                    sender_id=self.user_id,
                    to=to,
                )
            if to is not None:
                await services.recipients.require_member(self.claims, command.room, to)
            file = None
            if command.file_id is not None:
                if services.files is None:
                    raise Unavailable("file messages are not available")
                file = await services.files.metadata(self.claims, command.room, command.file_id)
            record = message_record(
                room=command.room,
                sender=self.claims,
                content=command.content,
                to=to,
                client_id=command.client_id,
                file=file,
                reply_to=command.reply_to,
                mentions=(
                    await services.mentions.resolve(self.claims, command.room, command.content)
                    if services.mentions is not None and "@" in command.content
                    else ()
                ),
            )
            headers = record_headers(sender_id=self.user_id, client_id=command.client_id, to=to)
            started = time.perf_counter()
            with services.drain.publishing():
                published = await stream.publish(command.room, record, headers)
                metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
                if published.duplicate and not await stream.is_stored(command.room, published.seq):
                    # The deduplication key is user:client_id; a client_id reused
                    # for another room must not be acked with that room's message.
                    raise ClientIdReused("client_id already used for another message")
            result = "duplicate" if published.duplicate else "ok"
        except RoomcastError as exc:
            result = exc.code
            raise
        finally:
            _count_sent(result)
        self.send_payload(
            ack_frame(command.client_id, published.seq, duplicate=published.duplicate)
        )

    # --- auth lifetime -------------------------------------------------------------

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.claims is None and not self.closed:
            self._reject_unauthenticated("no auth frame in time")

    def _reject_unauthenticated(self, message: str) -> None:
        self._error(Unauthenticated(message), None)
        self.close(CloseCode.UNAUTHENTICATED, message)

    def _schedule_expiry(self, expires_at: float) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        delay = max(0.0, expires_at - time.time())
        self._expiry_timer = self.loop.call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry_timer = None
        if self.closed or self.claims is None:
            return
        # valid_until (exp + the shared leeway): the moment REST stops accepting it too.
        if self.claims.valid_until > time.time():  # refreshed meanwhile
            self._schedule_expiry(self.claims.valid_until)
            return
        self._error(Unauthenticated("token expired", code="token_expired"), None)
        self.close(CloseCode.UNAUTHENTICATED, "token expired")

    # --- writing -------------------------------------------------------------------

    def send_payload(self, payload: bytes) -> None:
        """Frame and write one JSON payload (no-op once closing)."""
        if self.closed:
            return
        try:
            self.write(ws_text(payload))
        except Exception:  # the transport is gone; on_ws_disconnected cleans up
            return

    def _error(self, error: RoomcastError, ref: str | None) -> None:
        retry_after = error.retry_after if isinstance(error, SlowModeRefused) else None
        self.send_payload(error_frame(error.code, error.message, ref, retry_after=retry_after))

    def _fail(self, error: RoomcastError, ref: str | None) -> None:
        self._error(error, ref)
        code = close_code_for(error)
        if code is not None:
            self.close(code, error.message)

    def too_slow(self) -> None:
        """Close with 4009, from a fresh loop iteration (never inside a fan-out loop)."""
        if not self.closed:
            self.loop.call_soon(self.close, CloseCode.TOO_SLOW, "too slow: send buffer full")

    async def wait_writable(self) -> None:
        """Wait until the socket's send buffer is under its limit (or close it)."""
        if not self.paused or self.closed:
            return
        if self._writable is None or self._writable.done():
            self._writable = self.loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._writable), DRAIN_TIMEOUT_SECONDS)
        except TimeoutError:
            self.close(CloseCode.TOO_SLOW, "too slow: send buffer full")

    def _wake_writers(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # --- closing -------------------------------------------------------------------

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame with ``code`` and drop the socket from everything."""
        if self.closed:
            return
        self.closed = True
        metrics.CLOSES.labels(str(int(code))).inc()
        self._cleanup()
        transport = self.transport
        if transport is None:
            return
        # picows' enum lists only the 1xxx codes; it sends any int code as given.
        transport.send_close(int(code), reason.encode()[:MAX_CLOSE_REASON_BYTES])  # type: ignore[arg-type]
        # Wait for the client's close frame (on_ws_frame disconnects), bounded.
        self._linger_timer = self.loop.call_later(
            CLOSE_LINGER_SECONDS, transport.underlying_transport.abort
        )

    def _cleanup(self) -> None:
        self.services.rooms.detach_all(self)
        self.services.presence.forget(self)
        for timer in (self._auth_timer, self._expiry_timer):
            if timer is not None:
                timer.cancel()
        self._auth_timer = self._expiry_timer = None
        self._queue.clear()
        self.services.sockets.remove(self)
        self._wake_writers()
