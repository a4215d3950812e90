"""A JetStream publisher for many publishes in flight at a small CPU cost per message.

``JetStreamContext.publish`` is a request: per message it draws random bytes for a reply
token, arms a timer, wakes nats-py's flusher task (which makes its own write system
call) and parses the ack into a dataclass. A gateway publishing every chat message pays
that per message. This publisher keeps what JetStream needs (a reply subject per publish,
the ack read from it) and drops the rest:

- a publish is queued and written with every other publish of the same event-loop turn
  in one socket write from a ``call_soon`` callback, not from a task woken per publish;
- acks come back on one wildcard inbox subscription and are matched by a counter token,
  handled as nats-py reads them (roomcast.common.natsinline) rather than queued to a
  subscription task woken per ack;
- one timer sweeps the publishes awaiting their acks (timeouts, a NATS disconnect or
  reconnect) instead of one timer per publish.

Order: publishes go to the server in call order on one connection, and JetStream stores
one connection's messages in the order it reads them, so a caller that publishes A then
B without waiting for A's ack still gets A stored before B. Publishes given the same
``key`` (a socket, say) also resolve in call order: B's ack is held until A's is in. If
A fails (no ack in time, a disconnect, a rejection), B and every later publish of the key
still awaiting its answer fail with :class:`EarlierPublishFailed`; the server stored a
prefix of them in order, so a caller retrying them in order with the same
``Nats-Msg-Id`` gets the stored ones back as duplicates and the rest stored after them.
Publishes of other keys never wait for each other.

Writes go to nats-py's transport directly while the connection is up (nats-py has no
public call that queues bytes without waking its flusher); while it is down a publish
fails at once with :class:`ConnectionLost` rather than sitting in the reconnect buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from roomcast.common.errors import DependencyUnavailable
from roomcast.common.natsinline import subscribe_inline

# A sweep runs at least this often while publishes await their acks, so a NATS
# disconnect or reconnect fails them within this (plus nats-py's own detection) instead
# of after the full ack timeout.
SWEEP_INTERVAL_SECONDS = 0.25
# Publishes awaiting their acks at once; beyond it publish() refuses (bounded memory:
# the transport's buffer holds at most this many messages the server has not read).
DEFAULT_MAX_IN_FLIGHT = 8192
# NATS header field names: printable ASCII without ':' or whitespace; values without
# CR or LF (one would end the header block early and smuggle another field).
_HEADER_KEY = re.compile(r"[!-9;-~]+")
_CRLF = b"\r\n"
_HEADER_LINE = b"NATS/1.0\r\n"


class PublishFailed(DependencyUnavailable):
    """The message may not be stored: retry it (with the same Nats-Msg-Id)."""


class AckTimeout(PublishFailed):
    """No ack from JetStream within the timeout."""


class ConnectionLost(PublishFailed):
    """The NATS connection is down or was re-established while the ack was awaited."""


class EarlierPublishFailed(PublishFailed):
    """A publish of the same key sent before this one failed; retry both in order."""


class TooManyInFlight(PublishFailed):
    """Too many publishes await their acks."""


class PublishRejected(PublishFailed):
    """JetStream answered with an error (no stream for the subject, limits, ...)."""

    def __init__(self, message: str, *, status: int = 0, err_code: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.err_code = err_code


@dataclass(frozen=True, slots=True)
class Ack:
    stream: str
    seq: int
    duplicate: bool


@dataclass(slots=True)
class _Pending:
    token: str
    future: asyncio.Future[Ack]
    deadline: float
    key: Hashable
    ack: Ack | None = None  # arrived, held until the key's earlier publishes resolve


# Header names already checked against _HEADER_KEY: a publisher sends the same few names
# with every message, so each is matched once, not per message. Bounded: past this many
# distinct names the set is not grown (they are still checked, every time).
_KNOWN_KEYS: set[str] = set()
_MAX_KNOWN_KEYS = 64


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The NATS header block for ``headers``; ValueError on a field that would break it."""
    parts = [_HEADER_LINE]
    for key, value in headers.items():
        if key not in _KNOWN_KEYS:
            if not _HEADER_KEY.fullmatch(key):
                raise ValueError(f"header {key!r} cannot be sent")
            if len(_KNOWN_KEYS) < _MAX_KNOWN_KEYS:
                _KNOWN_KEYS.add(key)
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {key!r} cannot be sent")
        parts.append(f"{key}: {value}\r\n".encode())
    parts.append(_CRLF)
    return b"".join(parts)


class JetStreamPublisher:
    """Publishes to JetStream with many messages in flight; see the module docstring."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        timeout: float,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self._nc = nc
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._loop = asyncio.get_running_loop()
        self._prefix = ""
        self._counter = 0
        self._pending: dict[str, _Pending] = {}  # insertion order is send order
        self._keys: dict[Hashable, deque[_Pending]] = {}  # per key, in send order
        self._outbox: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sub: Subscription | None = None
        self._reconnects = 0

    @property
    def in_flight(self) -> int:
        """Publishes awaiting their acks."""
        return len(self._pending)

    async def start(self) -> None:
        """Subscribe to the ack inbox; call once before publishing."""
        self._prefix = self._nc.new_inbox() + "."
        self._reconnects = self._nc.stats["reconnects"]
        self._sub = await subscribe_inline(self._nc, self._prefix + "*", self._on_ack)
        await self._nc.flush()  # the server knows the inbox before the first publish

    async def close(self) -> None:
        """Fail what is in flight and drop the inbox subscription."""
        self._fail_all(ConnectionLost("publisher closed"))
        for handle in (self._flush_handle, self._sweep_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._sweep_handle = None
        if self._sub is not None:
            with contextlib.suppress(NatsError, OSError):
                await self._sub.unsubscribe()
            self._sub = None

    def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        key: Hashable = None,
    ) -> asyncio.Future[Ack]:
        """Queue one publish; the future resolves to its ack or a :class:`PublishFailed`.

        Publishes of one ``key`` reach the stream in call order; see the module docstring
        for what a failure does to the later ones.
        """
        if not self._prefix:
            raise RuntimeError("JetStreamPublisher.start() was not awaited")
        if not self._nc.is_connected:
            raise ConnectionLost("NATS is not connected")
        if len(self._pending) >= self._max_in_flight:
            raise TooManyInFlight("too many publishes await their acks")
        self._counter += 1
        token = str(self._counter)
        reply = self._prefix + token
        if headers:
            block = encode_headers(headers)
            total = len(block) + len(payload)
            command = f"HPUB {subject} {reply} {len(block)} {total}\r\n".encode()
            self._outbox.extend((command, block, payload, _CRLF))
        else:
            command = f"PUB {subject} {reply} {len(payload)}\r\n".encode()
            self._outbox.extend((command, payload, _CRLF))
        future: asyncio.Future[Ack] = self._loop.create_future()
        deadline = self._loop.time() + self._timeout
        entry = _Pending(token, future, deadline, key)
        self._pending[token] = entry
        if key is not None:
            queue = self._keys.get(key)
            if queue is None:
                self._keys[key] = deque((entry,))
            else:
                queue.append(entry)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)
        if self._sweep_handle is None:
            self._sweep_handle = self._loop.call_at(
                min(deadline, self._loop.time() + SWEEP_INTERVAL_SECONDS), self._sweep
            )
        return future

    async def publish_and_wait(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        key: Hashable = None,
    ) -> Ack:
        return await self.publish(subject, payload, headers, key=key)

    # --- writing ---------------------------------------------------------------------

    def _flush(self) -> None:
        """Write every publish queued in this event-loop turn with one system call."""
        self._flush_handle = None
        batch, self._outbox = self._outbox, []
        if not batch:
            return
        transport = self._nc._transport  # no public API writes without waking the flusher
        if not self._nc.is_connected or transport is None:
            self._fail_all(ConnectionLost("NATS disconnected before the publish was sent"))
            return
        try:
            transport.writelines(batch)
        except (OSError, RuntimeError) as exc:
            self._fail_all(ConnectionLost(f"NATS write failed: {exc!r}"))

    # --- acks --------------------------------------------------------------------------

    def _on_ack(self, msg: Msg) -> None:
        entry = self._pending.get(msg.subject[len(self._prefix) :])
        if entry is None or entry.ack is not None:
            return  # timed out or failed already; a late ack is dropped
        if not msg.data:
            # An empty reply is a status message: 503 when no stream takes the subject.
            status = (msg.headers or {}).get("Status", "")
            self._fail(entry, PublishRejected(f"no stream answered (status {status or '?'})"))
            return
        try:
            body = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            self._fail(entry, PublishRejected("unreadable ack"))
            return
        error = body.get("error")
        if error is not None:
            exc = PublishRejected(
                str(error.get("description", "rejected")),
                status=int(error.get("code", 0)),
                err_code=int(error.get("err_code", 0)),
            )
            self._fail(entry, exc)
            return
        self._resolve(
            entry, Ack(str(body.get("stream", "")), int(body["seq"]), bool(body.get("duplicate")))
        )

    def _resolve(self, entry: _Pending, ack: Ack) -> None:
        """Hand ``ack`` out, after those of the key's earlier publishes."""
        if entry.key is None:
            del self._pending[entry.token]
            if not entry.future.done():
                entry.future.set_result(ack)
            return
        entry.ack = ack
        queue = self._keys[entry.key]
        while queue and queue[0].ack is not None:
            done = queue.popleft()
            self._pending.pop(done.token, None)
            if not done.future.done():
                done.future.set_result(done.ack)  # type: ignore[arg-type]  # loop condition
        if not queue:
            del self._keys[entry.key]

    # --- failures ----------------------------------------------------------------------

    def _fail(self, entry: _Pending, exc: PublishFailed) -> None:
        """Fail ``entry`` and every later publish of its key still awaiting its answer."""
        self._pending.pop(entry.token, None)
        if not entry.future.done():
            entry.future.set_exception(exc)
        if entry.key is None:
            return
        queue = self._keys.pop(entry.key, None)
        for other in queue or ():
            if other is entry:
                continue
            self._pending.pop(other.token, None)
            if not other.future.done():
                other.future.set_exception(EarlierPublishFailed(str(exc)))

    def _fail_all(self, exc: PublishFailed) -> None:
        pending, self._pending, self._keys = self._pending, {}, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(exc)

    def _sweep(self) -> None:
        """Fail publishes past their deadline, or sent before a disconnect or reconnect."""
        self._sweep_handle = None
        nc = self._nc
        reconnects = nc.stats["reconnects"]
        if reconnects != self._reconnects or not nc.is_connected:
            # Acks of publishes sent on the old connection are lost with it.
            self._reconnects = reconnects
            self._fail_all(ConnectionLost("NATS connection lost while awaiting the ack"))
        now = self._loop.time()
        while self._pending:
            entry = next(iter(self._pending.values()))
            if entry.deadline > now:
                break
            self._fail(entry, AckTimeout(f"no ack from JetStream within {self._timeout} s"))
        if self._pending:
            oldest = next(iter(self._pending.values())).deadline
            self._sweep_handle = self._loop.call_at(
                min(oldest, now + SWEEP_INTERVAL_SECONDS), self._sweep
            )
