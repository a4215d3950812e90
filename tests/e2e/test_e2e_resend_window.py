"""A send whose ack is lost is stored exactly once even when the client comes back after
the stream's deduplication window, on a real stack whose window is shortened to 1 s.

The SDK talks to a gateway through a proxy that can swallow what the gateway answers
(the ack is lost, the message is stored), swallow what the client sends (the message
never arrives) and cut the connection. Past the window the SDK may no longer re-send a
send blindly: it looks for it in its room's resume and re-sends only what is missing.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2e_helpers import eventually, new_user, open_socket

from roomcast.client import Ack, RoomcastHttp
from roomcast.testing.processes import free_port
from roomcast.testing.stack import Stack, StackPorts

# The stream's duplicate window for this stack, and the SDK's resend window below it
# (as the SDK's default 90 s sits below the default 120 s window).
DUPLICATE_WINDOW_SECONDS = 1.0
RESEND_WINDOW_SECONDS = 0.5


@pytest.fixture(scope="module")
def short_window_stack() -> Iterator[Stack]:
    stack = Stack(
        Path(tempfile.mkdtemp(prefix="roomcast-window-")),
        StackPorts.free(),
        bcrypt_cost=4,
        extra_env={
            "ROOMCAST_GATEWAY_STREAM_DUPLICATE_WINDOW_SECONDS": str(DUPLICATE_WINDOW_SECONDS),
            "ROOMCAST_HISTORY_STREAM_DUPLICATE_WINDOW_SECONDS": str(DUPLICATE_WINDOW_SECONDS),
            "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
        },
    )
    stack.start()
    yield stack
    stack.stop()


class LossyProxy:
    """TCP proxy to one gateway: ``swallow_down``/``swallow_up`` drop the bytes of one
    direction, ``cut()`` drops every connection and refuses new ones until
    ``restore()``."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = free_port()
        self.swallow_down = False
        self.swallow_up = False
        self.accepting = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self.swallow_up if up else self.swallow_down:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, up=True), self._pipe(up_reader, writer, up=False)
            )
        finally:
            self.writers.difference_update((writer, up_writer))

    def cut(self) -> None:
        self.accepting = False
        for writer in list(self.writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.swallow_down = self.swallow_up = False
        self.accepting = True

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxy(short_window_stack: Stack) -> AsyncIterator[LossyProxy]:
    lossy = LossyProxy(short_window_stack.gateway_urls[0])
    await lossy.start()
    yield lossy
    await lossy.stop()


async def history_contents(http: RoomcastHttp, room: str) -> list[str]:
    page = await http.messages(room, limit=100)
    return sorted(item["body"]["content"] for item in page["items"])


async def test_resend_after_the_duplicate_window_stores_each_message_once(
    short_window_stack: Stack, proxy: LossyProxy
) -> None:
    direct_url = short_window_stack.gateway_urls[1]
    alice = await new_user(direct_url, "alice")
    bob = await new_user(direct_url, "bob")
    room = (await alice.create_room("window", visibility="public"))["id"]
    await bob.join_room(room)
    sa, _ca = await open_socket(
        [proxy.url], alice, resend_window=RESEND_WINDOW_SECONDS, backoff_max=0.2
    )
    sb, cb = await open_socket([direct_url], bob)
    try:
        await sa.subscribe(room)
        await sb.subscribe(room)

        # 1. Stored, but the gateway's answers (ack and live frame) never reach alice.
        proxy.swallow_down = True
        stored_send = sa.send_future(room, "stored, ack lost")
        await cb.wait_for(lambda: len(cb.seqs(room)) == 1, "bob sees the first message")
        # 2. Never reaches the gateway at all.
        proxy.swallow_up = True
        lost_send = sa.send_future(room, "never arrived")
        proxy.cut()

        # Let the stream's deduplication window pass: what is waited for here is time
        # itself (no state changes when a window expires).
        started = time.monotonic()
        await asyncio.sleep(DUPLICATE_WINDOW_SECONDS * 2)
        assert time.monotonic() - started > DUPLICATE_WINDOW_SECONDS
        proxy.restore()

        first: Ack = await asyncio.wait_for(stored_send, 30)
        second: Ack = await asyncio.wait_for(lost_send, 30)
        assert first.duplicate  # found in the room's resume: not sent again
        assert not second.duplicate  # not found: sent again, stored now
        assert first.seq == cb.seqs(room)[0]
        await cb.wait_for(lambda: len(cb.seqs(room)) >= 2, "bob sees the second message")
        contents = [m.body["content"] for m in cb.messages if m.room == room]
        assert contents == ["stored, ack lost", "never arrived"]
        assert sa.stats.confirmed_by_resume == 1

        expected = ["never arrived", "stored, ack lost"]

        async def history_has_both() -> bool:
            return await history_contents(bob, room) == expected

        await eventually(history_has_both, "history holds each message once")
        # Nothing else arrives later: one more message closes the chain behind them.
        await sb.send(room, "after")
        await cb.wait_for(lambda: len(cb.seqs(room)) >= 3, "bob sees the closing message")
        contents = [m.body["content"] for m in cb.messages if m.room == room]
        assert contents == ["stored, ack lost", "never arrived", "after"]
    finally:
        await sa.close()
        await sb.close()
        for http in (alice, bob):
            await http.aclose()
