"""A react/unreact whose ack is lost is stored, and sent, exactly once: against a real
stack (nats-server, SecantusDB, auth, rooms, history and two gateways as processes on
free ports).

The ack is lost on the way in: the SDK's ack handler is swapped for one that drops it
(the frame reached the socket, the session never learned of it), then the TCP
connection is cut and the SDK reconnects and resumes. The gateway's
``roomcast_gateway_message_changes_total{kind="reaction"}`` counts every react/unreact
frame it handled: ``ok`` for the one that stored the reaction, ``duplicate`` for a
resend JetStream deduplicated. A resend is what the SDK must avoid: the reaction it
saw live (or in the resume) proves the command stored.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roomcast.client import Ack, Item, Reaction, RoomcastHttp, RoomcastSocket, connect
from roomcast.testing import polling
from roomcast.testing.stack import Stack, StackPorts

PASSWORD = "correct horse battery staple"
# The SDK's resend window for the held-react test: short, so a react becomes "too old
# to re-send blindly" within the test; the stack keeps its default 120 s duplicate
# window, so a resend would still be deduplicated and show as ``duplicate``.
RESEND_WINDOW_SECONDS = 0.5
# Deliveries and history writes take milliseconds; generous for a loaded 2-core machine
# (the condition is polled, this is only an upper bound).
WITHIN_SECONDS = 30.0
# Between two looks at in-process state (the socket's items): cheap, so poll often.
LOCAL_POLL_SECONDS = 0.01


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(
        Path(tempfile.mkdtemp(prefix="roomcast-client-react-")),
        StackPorts.free(),
        bcrypt_cost=4,
        extra_env={
            "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
        },
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[RoomcastHttp]:
    http = RoomcastHttp(stack.gateway_urls[0])
    username = f"ali{uuid.uuid4().hex[:10]}"
    await http.register(username, PASSWORD)
    await http.login(username, PASSWORD)
    yield http
    await http.aclose()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll state this process's tasks update (the socket's items) with a deadline."""

    async def check() -> bool:
        return condition()

    await polling.eventually(check, what, within=WITHIN_SECONDS, poll=LOCAL_POLL_SECONDS)


async def reaction_frames(gateway_url: str) -> dict[str, float]:
    """The gateway's react/unreact frames handled so far, by result (ok, duplicate...)."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{gateway_url}/metrics")).text
    pattern = re.compile(
        r'^roomcast_gateway_message_changes_total\{kind="reaction",result="([a-z_]+)"\} (\S+)$',
        re.MULTILINE,
    )
    return {result: float(value) for result, value in pattern.findall(text)}


def frames_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if after[k] != before.get(k)}


class LossyAcks:
    """Drops the ack frames (and, with ``reactions``, the reaction frames) reaching
    ``sock`` while ``losing``: what the session sees when they are lost in flight."""

    def __init__(self, sock: RoomcastSocket, *, reactions: bool = False) -> None:
        self.losing = False
        handlers: dict[str, Callable[[dict[str, Any]], None]] = sock._handlers
        for kind in ("ack", "reaction") if reactions else ("ack",):
            handlers[kind] = self._lossy(handlers[kind])

    def _lossy(self, handle: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        def maybe(data: dict[str, Any]) -> None:
            if not self.losing:
                handle(data)

        return maybe


def cut(sock: RoomcastSocket) -> None:
    """Drop the TCP connection under the session (it reconnects and resumes)."""
    wire = sock._wire
    assert wire is not None
    assert wire.transport is not None
    wire.transport.disconnect(graceful=False)


def own_reactions(items: list[Item], emoji: str) -> list[Reaction]:
    return [i for i in items if isinstance(i, Reaction) and i.emoji == emoji]


def saw(items: list[Item], emoji: str, op: str) -> Callable[[], bool]:
    return lambda: any(r.op == op for r in own_reactions(items, emoji))


async def history_reactions(http: RoomcastHttp, room: str, seq: int) -> list[Any]:
    page = await http.messages(room, limit=100)
    return [item.get("reactions", []) for item in page["items"] if item["seq"] == seq]


async def settle(sock: RoomcastSocket, room: str) -> None:
    """A send acked on the same connection: every frame sent before it was handled."""
    await sock.send(room, "marker")


async def test_react_and_unreact_whose_ack_was_lost_are_confirmed_from_the_stream(
    stack: Stack, alice: RoomcastHttp
) -> None:
    url = stack.gateway_urls[0]
    room = (await alice.create_room("reactions", visibility="public"))["id"]
    items: list[Item] = []
    sock = await connect([url], alice.access_token_provider, on_item=items.append)
    try:
        lossy = LossyAcks(sock)
        await sock.subscribe(room)
        message = await sock.send(room, "vote here")
        before = await reaction_frames(url)

        for verb, op in (("react", "add"), ("unreact", "remove")):
            lossy.losing = True
            command = getattr(sock, verb)(room, message.seq, "🎉")
            pending: asyncio.Task[Ack] = asyncio.ensure_future(command)
            await until(saw(items, "🎉", op), f"alice to see her own {op} live")
            assert not pending.done()  # its ack never arrived
            lossy.losing = False
            cut(sock)
            ack = await asyncio.wait_for(pending, WITHIN_SECONDS)
            seen = [r for r in own_reactions(items, "🎉") if r.op == op]
            assert [(r.seq, r.replayed) for r in seen] == [(ack.seq, False)]
            assert ack.duplicate

        await settle(sock, room)
        # One frame per command reached the gateway: none was sent again.
        assert frames_since(before, await reaction_frames(url)) == {"ok": 2.0}
        assert sock.stats.reconnects == 2
        assert sock.stats.retried_sends == 0
        assert sock.stats.confirmed_by_resume == 2
    finally:
        await sock.close()

    # The stream holds the add and the remove once each (a fresh resume replays them).
    replay: list[Item] = []
    reader = await connect([url], alice.access_token_provider, on_item=replay.append)
    try:
        await reader.subscribe(room, since=message.seq)
        await until(lambda: reader.last_seq(room) == message.seq + 3, "the replay")
        assert [r.op for r in own_reactions(replay, "🎉")] == ["add", "remove"]
    finally:
        await reader.close()


async def test_react_past_the_resend_window_waits_for_the_resume_instead_of_a_resend(
    stack: Stack, alice: RoomcastHttp
) -> None:
    url = stack.gateway_urls[0]
    room = (await alice.create_room("late reactions", visibility="public"))["id"]
    items: list[Item] = []
    sock = await connect(
        [url],
        alice.access_token_provider,
        on_item=items.append,
        resend_window=RESEND_WINDOW_SECONDS,
    )
    try:
        lossy = LossyAcks(sock, reactions=True)
        await sock.subscribe(room)
        message = await sock.send(room, "vote here")
        before = await reaction_frames(url)

        # Stored, but neither the ack nor the live reaction reaches alice.
        lossy.losing = True
        pending = asyncio.ensure_future(sock.react(room, message.seq, "🚀"))

        async def stored() -> bool:
            return frames_since(before, await reaction_frames(url)) == {"ok": 1.0}

        await polling.eventually(stored, "the reaction to be stored", within=WITHIN_SECONDS)
        # Stored by now, so first transmitted before now: from here the window is sure.
        stored_at = time.monotonic()
        await until(
            lambda: time.monotonic() - stored_at > RESEND_WINDOW_SECONDS,
            "the react to be older than the resend window",
        )
        assert not pending.done()
        lossy.losing = False
        cut(sock)

        ack = await asyncio.wait_for(pending, WITHIN_SECONDS)
        replayed = own_reactions(items, "🚀")
        assert [(r.seq, r.op, r.replayed) for r in replayed] == [(ack.seq, "add", True)]
        assert ack.duplicate
        await settle(sock, room)
        assert frames_since(before, await reaction_frames(url)) == {"ok": 1.0}
        assert sock.stats.retried_sends == 0
        assert sock.stats.confirmed_by_resume == 1
    finally:
        await sock.close()

    async def in_history() -> bool:
        found = await history_reactions(alice, room, message.seq)
        return found == [[{"emoji": "🚀", "count": 1, "me": True}]]

    await polling.eventually(in_history, "history to show the reaction once")
