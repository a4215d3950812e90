"""The connection supervisor behind ``RoomcastSocket``.

One task owns the loop: fetch a token, connect, authenticate, restore state, wait for
the disconnect, back off, move to the next gateway URL, repeat. Restoring state happens
synchronously when ``ready`` arrives (before any later frame of the same read is handled):
every room is re-subscribed with ``since=<last seq>`` and every unacked send is re-sent
with its original ``client_id``.

While connected, a token with an ``exp`` claim is renewed on the same socket (a second
``auth`` frame, answered by ``ready``) shortly before it expires, so a long session is not
cut by 4001 every token lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from picows import ws_connect

from .errors import ClientError, ConnectionClosed, Unauthorized
from .http import jwt_expiry
from .models import Gap, Item, SocketStats
from .state import CHAINED_KINDS, FrameRouter, PendingSend, RoomState
from .wire import (
    CLOSE_ABNORMAL,
    CLOSE_FORBIDDEN,
    CLOSE_NORMAL,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_LARGE,
    CLOSE_UNAUTHENTICATED,
    Wire,
    ws_url,
)

log = logging.getLogger("roomcast.client")

TokenSource = str | Callable[[], Awaitable[str]]

# Closes after which reconnecting cannot help: 4003 the user may not use the gateway;
# 1009 our own frame was too large, and re-sending pending frames would repeat it.
FATAL_CLOSE_CODES = frozenset({CLOSE_FORBIDDEN, CLOSE_TOO_LARGE})
# A token refused twice in a row (the second one freshly fetched) will not start working.
MAX_AUTH_REJECTIONS = 2

# TCP connect, and then the WebSocket upgrade, each: a healthy gateway answers in
# milliseconds; 10 s covers a loaded one without hanging on a black-holed address.
DEFAULT_CONNECT_TIMEOUT = 10.0
# auth -> ready: the gateway verifies the JWT locally (JWKS cached), so this is fast; it
# may fetch the JWKS once after a restart.
DEFAULT_READY_TIMEOUT = 10.0
# First reconnect delay after a failed round of URLs, doubled per failed round up to the
# max; each delay is jittered (x0.5..1) so thousands of clients of a dead gateway spread.
DEFAULT_BACKOFF_INITIAL = 0.1
DEFAULT_BACKOFF_MAX = 10.0
# After 4008 (rate limited) wait at least this long: reconnecting at once would be
# limited again.
DEFAULT_RATE_LIMITED_DELAY = 2.0
# Keepalive: a WebSocket ping after 20 s without incoming data, dropped (and resumed
# elsewhere) if no pong within 10 s. Below the usual 60 s idle timeout of proxies/LBs.
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 10.0
# start() gives up when the first ready has not come within 30 s (several backoff rounds).
DEFAULT_START_TIMEOUT = 30.0
# Items buffered for ``async for`` before the socket stops reading (back-pressure; the
# gateway then sees a slow consumer). Reading resumes below a quarter of it.
DEFAULT_MAX_BUFFERED_ITEMS = 10_000
# Incoming frames larger than this are a broken peer (chat frames are a few KiB).
MAX_INCOMING_FRAME_BYTES = 16 * 1024 * 1024
# A send (or react/unreact) whose first transmission is older than this is not re-sent
# blindly after a reconnect: JetStream deduplicates a client_id only within the stream's
# duplicate window (120 s by default, ROOMCAST_GATEWAY_STREAM_DUPLICATE_WINDOW_SECONDS),
# so a later resend could be stored twice. 90 s leaves 30 s for the gateway's publish
# timeout (5 s), frames queued in buffers and clock drift between the window's start (the
# store) and ours (the first transmission, always earlier). Lower it if the deployment
# shortens its window.
DEFAULT_RESEND_WINDOW = 90.0
# close(): wait this long for the close handshake before dropping the TCP connection.
CLOSE_WAIT_SECONDS = 2.0
# Renew the socket's token this long before it expires (at most a fifth of its remaining
# life, so short test tokens do not loop). Shorter than RoomcastHttp's refresh leeway
# (60 s), so its provider really refreshes when asked.
REAUTH_LEEWAY_SECONDS = 30.0


class Connector(FrameRouter):
    """Connection loop, state restore and token renewal (RoomcastSocket adds the API)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        token: TokenSource,
        *,
        on_item: Callable[[Item], None] | None = None,
        on_gap: Callable[[Gap], None] | None = None,
        reconnect: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        rate_limited_delay: float = DEFAULT_RATE_LIMITED_DELAY,
        give_up_after: float | None = None,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float = DEFAULT_PING_TIMEOUT,
        max_buffered_items: int = DEFAULT_MAX_BUFFERED_ITEMS,
        start_index: int = 0,
        resend_window: float = DEFAULT_RESEND_WINDOW,
    ) -> None:
        url_list = [urls] if isinstance(urls, str) else list(urls)
        if not url_list:
            raise ValueError("at least one gateway URL is required")
        super().__init__(SocketStats(), on_item, on_gap, max_buffered_items)
        self.urls = [ws_url(u) for u in url_list]
        self._index = start_index % len(self.urls)
        self._token = token
        self._reconnect = reconnect
        self._connect_timeout = connect_timeout
        self._ready_timeout = ready_timeout
        self._start_timeout = start_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rate_limited_delay = rate_limited_delay
        self._resend_window = resend_window
        self._give_up_after = give_up_after
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._task: asyncio.Task[None] | None = None
        self._opening: Wire | None = None
        self._first_ready: asyncio.Future[None] | None = None
        self._last_failure = ""
        self._token_in_use = ""
        self._reauth_timer: asyncio.TimerHandle | None = None
        self._reauth_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect and wait for the first ``ready`` (raises ConnectionClosed if it never comes)."""
        if self._task is not None:
            raise RuntimeError("already started")
        loop = asyncio.get_running_loop()
        self._first_ready = loop.create_future()
        self._task = loop.create_task(self._run(), name="roomcast-socket")
        try:
            async with asyncio.timeout(self._start_timeout):
                await asyncio.shield(self._first_ready)
        except TimeoutError:
            await self.close()
            raise ConnectionClosed(
                CLOSE_ABNORMAL, f"no ready within {self._start_timeout}s: {self._last_failure}"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """End the session: pending sends and waits fail with ConnectionClosed(1000)."""
        if self._closed:
            return
        self._closed = True
        self._cancel_reauth()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for wire in (self._wire, self._opening):
            if wire is not None:
                wire.close(CLOSE_NORMAL)
                try:
                    async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                        await asyncio.shield(wire.closed)
                except TimeoutError:
                    if wire.transport is not None:
                        wire.transport.disconnect(graceful=False)
        self._wire = self._opening = None
        self._fail_all(ConnectionClosed(CLOSE_NORMAL, "closed by client"))
        renewal, self._reauth_task = self._reauth_task, None
        if renewal is not None and not renewal.done():
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                    await asyncio.shield(renewal)

    # ---------------------------------------------------------- supervisor

    async def _run(self) -> None:
        try:
            await self._supervise()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must end the session loudly, not hang it
            log.exception("roomcast socket supervisor failed")
            self._give_up(CLOSE_ABNORMAL, f"internal error: {exc!r}")

    async def _supervise(self) -> None:
        failures = 0  # consecutive attempts that did not reach ready
        auth_rejections = 0
        down_since: float | None = None
        delay = 0.0
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            url = self.urls[self._index]
            try:
                wire = await self._open(url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                code = exc.code if isinstance(exc, ConnectionClosed) else None
                self.stats.connect_failures += 1
                self._last_failure = f"{url}: {exc!r}"
                log.debug("connect to %s failed: %r", url, exc)
                if code is not None:
                    self.stats.close_codes[code] += 1
                    auth_rejections += code == CLOSE_UNAUTHENTICATED
                if isinstance(exc, Unauthorized):  # the token provider cannot log in
                    auth_rejections = MAX_AUTH_REJECTIONS
                    code = CLOSE_UNAUTHENTICATED
                if (
                    code in FATAL_CLOSE_CODES
                    or auth_rejections >= MAX_AUTH_REJECTIONS
                    or not self._reconnect
                    or self._gave_up(down_since)
                ):
                    self._give_up(code or CLOSE_ABNORMAL, self._last_failure)
                    return
                if down_since is None:
                    down_since = time.monotonic()
                failures += 1
                self._index = (self._index + 1) % len(self.urls)
                delay = self._backoff(failures, code)
                continue
            # ready: _on_ready() already restored subscriptions and pending sends
            failures = 0
            auth_rejections = 0
            down_since = None
            await asyncio.shield(wire.closed)  # a cancel must not cancel the future
            self._deactivate(wire)
            code = wire.close_code
            self.stats.close_codes[code] += 1
            self._last_failure = f"{url}: closed {code} {wire.close_reason}".rstrip()
            log.info("disconnected from %s: %s %s", url, code, wire.close_reason)
            auth_rejections += code == CLOSE_UNAUTHENTICATED
            if code in FATAL_CLOSE_CODES or not self._reconnect:
                self._give_up(code, wire.close_reason)
                return
            down_since = time.monotonic()
            self._index = (self._index + 1) % len(self.urls)
            # Reconnect at once, jittered over one initial backoff so a restarting
            # gateway's clients do not all land on the next one in the same millisecond.
            delay = random.uniform(0, self._backoff_initial)
            if code == CLOSE_RATE_LIMITED:
                delay = max(delay, self._rate_limited_delay)

    def _backoff(self, failures: int, code: int | None) -> float:
        """No wait while untried URLs remain in this round; exponential per failed round."""
        if failures % len(self.urls) != 0:
            return 0.0
        rounds = failures // len(self.urls)
        delay = self._retry_delay(rounds - 1)
        if code == CLOSE_RATE_LIMITED:
            delay = max(delay, self._rate_limited_delay)
        return delay

    def _retry_delay(self, attempt: int) -> float:
        delay = min(self._backoff_max, self._backoff_initial * 2.0 ** min(attempt, 30))
        return delay * random.uniform(0.5, 1.0)

    def _gave_up(self, down_since: float | None) -> bool:
        return (
            self._give_up_after is not None
            and down_since is not None
            and time.monotonic() - down_since > self._give_up_after
        )

    def _give_up(self, code: int, reason: str) -> None:
        error = ConnectionClosed(code, reason)
        self._error = error
        self._fail_all(error)

    async def _fetch_token(self) -> str:
        if isinstance(self._token, str):
            return self._token
        return await self._token()

    async def _open(self, url: str) -> Wire:
        """Connect, authenticate, and return the wire once ``ready`` was handled."""
        token = await self._fetch_token()
        # picows times the upgrade itself (and then closes the socket); the outer bound
        # covers the TCP connect too, with room for picows' own timeout to fire first.
        async with asyncio.timeout(2 * self._connect_timeout):
            _transport, listener = await ws_connect(
                lambda: Wire(self._on_frame, url),
                url,
                websocket_handshake_timeout=self._connect_timeout,
                enable_auto_ping=self._ping_interval is not None,
                auto_ping_idle_timeout=self._ping_interval or DEFAULT_PING_INTERVAL,
                auto_ping_reply_timeout=self._ping_timeout,
                max_frame_size=MAX_INCOMING_FRAME_BYTES,
            )
        assert isinstance(listener, Wire)
        wire = listener
        self._opening = wire
        self._token_in_use = token
        try:
            wire.send(orjson.dumps({"type": "auth", "token": token}))
            # asyncio.wait never cancels what it waits for: wire.closed stays intact.
            async with asyncio.timeout(self._ready_timeout):
                waits: set[asyncio.Future[Any]] = {wire.ready, wire.closed}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if wire.ready.done() and not wire.ready.cancelled():
                return wire
            reason = wire.close_reason
            if wire.auth_error is not None:
                reason = f"{wire.auth_error[0]}: {wire.auth_error[1]}"
            raise ConnectionClosed(wire.close_code, reason)
        except BaseException:
            wire.ready.cancel()
            wire.close(CLOSE_NORMAL)
            raise
        finally:
            self._opening = None

    # -------------------------------------------------------- state restore

    def _on_ready(self, wire: Wire, data: dict[str, Any]) -> None:
        """``ready`` arrived: make the wire current, resubscribe, re-send (synchronously,
        so frames right behind ``ready`` in the same read are already handled)."""
        if wire.ready.done() or self._closed or self._error is not None:
            return
        user = data.get("user")
        self.user = user if isinstance(user, dict) else None
        self._wire = wire
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        for state in self._rooms.values():
            state.held = 0
            self._send_subscribe(wire, state)
        self._restore_pending(wire)
        wire.ready.set_result(user if isinstance(user, dict) else {})
        if self._first_ready is not None and not self._first_ready.done():
            self._first_ready.set_result(None)
        self._schedule_reauth(self._token_in_use)

    def _restore_pending(self, wire: Wire) -> None:
        """Re-send every unacked frame, except sends and reacts/unreacts the server may
        no longer deduplicate: those wait for their room's resume (just requested), which
        replays everything stored in the room since the session last saw it. Found there
        (our user, our client_id; a message, or a reaction of the same op): acked without
        a resend. Not found: re-sent, safely. The room not subscribed, or its replay
        truncated: SendUnconfirmed."""
        now = time.monotonic()
        for pending in list(self._pending.values()):
            pending.held = False
            if pending.stored is not None:
                self._confirm_stored(pending)  # seen in the room; only the ack was lost
                continue
            expired = (
                pending.kind in CHAINED_KINDS
                and pending.first_sent is not None
                and now - pending.first_sent > self._resend_window
            )
            if expired:
                state = self._rooms.get(pending.room)
                if state is None or state.last_seq is None:
                    self._unconfirmed(pending)
                else:
                    pending.held = True
                    state.held += 1
                continue
            if pending.transmitted:
                self.stats.retried_sends += 1
            if wire.send(pending.frame):
                pending.mark_sent()

    def _release_held(self, state: RoomState) -> None:
        """The room's resume has replayed everything: its held sends that were not
        found in it are not stored, and are re-sent (a new window starts now)."""
        state.held = 0
        wire = self._wire
        for pending in [p for p in self._pending.values() if p.held and p.room == state.room]:
            pending.held = False
            if state.held_truncated:
                self._unconfirmed(pending)
                continue
            pending.first_sent = None
            self.stats.retried_sends += 1
            if wire is not None and wire.send(pending.frame):
                pending.mark_sent()

    def _send_subscribe(self, wire: Wire, state: RoomState) -> None:
        frame: dict[str, Any] = {"type": "subscribe", "room": state.room}
        if state.last_seq is not None:
            frame["since"] = state.last_seq
        state.sent_since = state.last_seq
        state.in_flight = wire.send(orjson.dumps(frame))

    def _retry_subscribe_later(self, state: RoomState) -> None:
        delay = self._retry_delay(state.retries)
        state.retries += 1
        asyncio.get_running_loop().call_later(delay, self._retry_subscribe, self._wire, state)

    def _retry_subscribe(self, wire: Wire | None, state: RoomState) -> None:
        current = wire is not None and wire is self._wire
        if current and self._rooms.get(state.room) is state and not state.in_flight:
            assert wire is not None
            self._send_subscribe(wire, state)

    def _retry_send_later(self, pending: PendingSend) -> None:
        delay = self._retry_delay(pending.retries)
        pending.retries += 1
        asyncio.get_running_loop().call_later(delay, self._retry_send, self._wire, pending)

    def _retry_send(self, wire: Wire | None, pending: PendingSend) -> None:
        # A reconnect re-sends every pending send anyway; only the current wire retries.
        if wire is None or wire is not self._wire or pending.future.done():
            return
        if self._pending.get(pending.client_id) is pending and wire.send(pending.frame):
            pending.mark_sent()
            self.stats.retried_sends += 1

    def _deactivate(self, wire: Wire) -> None:
        if self._wire is wire:
            self._wire = None
        self._cancel_reauth()
        for state in self._rooms.values():
            state.in_flight = False
        lost = ConnectionClosed(wire.close_code, wire.close_reason)
        while self._pings:
            _started, waiter = self._pings.popleft()
            if not waiter.done():
                waiter.set_exception(lost)
        for waiters in self._unsub_waiters.values():
            for waiter_u in waiters:
                if not waiter_u.done():
                    waiter_u.set_result(None)
        self._unsub_waiters.clear()

    def _fail_all(self, error: ClientError) -> None:
        futures: list[asyncio.Future[Any]] = [p.future for p in self._pending.values()]
        futures += [w for state in self._rooms.values() for w in state.waiters]
        futures += [w for _t, w in self._pings]
        futures += [w for ws in self._unsub_waiters.values() for w in ws]
        if self._first_ready is not None:
            futures.append(self._first_ready)
        for future in futures:
            if not future.done():
                future.set_exception(error)
        # Nobody may be awaiting these; avoid "exception was never retrieved" noise.
        for future in futures:
            if future.done() and not future.cancelled():
                future.exception()
        self._pending.clear()
        self._pings.clear()
        self._unsub_waiters.clear()
        for state in self._rooms.values():
            state.waiters.clear()
        self._wake_reader()

    # -------------------------------------------------------- token renewal

    def _schedule_reauth(self, token: str) -> None:
        """Renew ``token`` on the live socket shortly before it expires (providers only)."""
        self._cancel_reauth()
        if isinstance(self._token, str):
            return  # a fixed token cannot be renewed; the gateway closes with 4001
        expiry = jwt_expiry(token)
        if expiry is None:
            return
        remaining = expiry - time.time()
        if remaining <= 0:
            return
        delay = remaining - min(REAUTH_LEEWAY_SECONDS, remaining / 5)
        loop = asyncio.get_running_loop()
        self._reauth_timer = loop.call_later(delay, self._start_reauth)

    def _start_reauth(self) -> None:
        self._reauth_timer = None
        self._reauth_task = asyncio.get_running_loop().create_task(self._reauth())

    async def _reauth(self) -> None:
        wire = self._wire
        try:
            token = await self._fetch_token()
        except Exception as exc:  # keep the current token; 4001 + reconnect if it ends
            log.warning("token renewal failed: %r", exc)
            return
        if wire is None or wire is not self._wire or token == self._token_in_use:
            return
        self._token_in_use = token
        if wire.send(orjson.dumps({"type": "auth", "token": token})):
            self._schedule_reauth(token)

    def _on_reauthenticated(self, data: dict[str, Any]) -> None:
        """A ``ready`` on the live socket: the renewed token was accepted."""
        user = data.get("user")
        if isinstance(user, dict):
            self.user = user
        self.stats.reauths += 1

    def _cancel_reauth(self) -> None:
        # Only the timer: a renewal already running is never cancelled (it may be in the
        # middle of rotating the refresh token); it sees the wire is gone and stops.
        if self._reauth_timer is not None:
            self._reauth_timer.cancel()
            self._reauth_timer = None
