"""One record contract, checked as properties over arbitrary client ``send`` frames.

Frames carry any Unicode as raw UTF-8 or JSON escapes: NUL, unpaired surrogates
(``\\ud800``), surrogate pairs, RTL and bidi controls, combining marks, emoji, blank
text, texts of exactly the maximum length and one over, and odd client_ids. The
properties:

- the gateway accepts a frame <=> history stores it (the codec property runs the
  gateway's frame parsing and record encoding, then history's decoding, stored document
  and API item; history's verdict on the same content is also taken on an independently
  encoded record, so a refusal on either side must be a refusal on both);
- what history returns equals what was sent (over a real stack: nats-server,
  SecantusDB, two gateways and the history consumer, through the public API).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bson
import orjson
import pytest
from e2e_helpers import DELIVERY_DEADLINE_SECONDS, new_user
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from websockets.asyncio.client import ClientConnection, connect

from roomcast.common.chatrecord import MAX_TEXT_CHARS, is_client_id
from roomcast.common.errors import RoomcastError
from roomcast.common.tokens import AccessClaims
from roomcast.gateway.realtime.protocol import FrameError, Send, message_record, parse_frame
from roomcast.history.records import ChatMessage, InvalidRecord, parse_record
from roomcast.history.store import message_doc, to_item
from roomcast.testing.stack import Stack

ROOM = "a" * 24
USER = "b" * 24
SEQ = 7
# The gateway's default max_body_chars (4000) sits below the record's ceiling; the
# properties use the ceiling itself, where both sides' limits meet.
MAX_CHARS = MAX_TEXT_CHARS


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis keeps caches in ./.hypothesis; keep them out of the work tree."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@dataclass(frozen=True)
class Escape:
    """One ``\\uXXXX`` escape written into the frame as is (may be half a pair)."""

    code: int


# Characters that break naive text handling, mixed into arbitrary text.
TRICKY = [
    "\x00", "\x01", "\x7f", "\t", "\n", " ", "\u00a0", "\u200b", "\u200e", "\u200f",
    "\u202e", "\u2066", "\u2028", "\ufeff", "\ufffd", "\uffff", "\U0010ffff",
    "\u0301", "\u0336", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627",
    "\U0001f600", "\U0001f469\u200d\U0001f4bb", "\U0001f1eb\U0001f1f7", "e\u0301",
    '"', "\\", "</script>", "$set", "a.b", "{}",
]  # fmt: skip
SEGMENTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(TRICKY),
    st.integers(0xD800, 0xDFFF).map(Escape),
    st.sampled_from([Escape(0xD83D), Escape(0xDE00), Escape(0x0000), Escape(0x0041)]),
)
CLIENT_IDS = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    st.text(max_size=70),
)


@dataclass(frozen=True)
class Case:
    literal: str  # the content as a JSON string literal, exactly as the frame carries it
    client_id: str
    display_name: str

    @property
    def content(self) -> Any:
        """What the literal means (the stdlib reads unpaired surrogates too)."""
        return json.loads(self.literal)

    def frame(self, room: str = ROOM) -> bytes:
        head = json.dumps({"type": "send", "room": room, "client_id": self.client_id})
        return (head[:-1] + ', "body": {"type": "text", "content": ' + self.literal + "}}").encode(
            "utf-8", "surrogatepass"
        )


def literal_of(segments: list[str | Escape], ascii_only: bool) -> str:
    parts = []
    for segment in segments:
        if isinstance(segment, Escape):
            parts.append(f"\\u{segment.code:04x}")
        else:
            parts.append(json.dumps(segment, ensure_ascii=ascii_only)[1:-1])
    return '"' + "".join(parts) + '"'


@st.composite
def cases(draw: st.DrawFn) -> Case:
    segments = draw(st.lists(SEGMENTS, max_size=8))
    literal = literal_of(segments, draw(st.booleans()))
    # Sometimes pad to the maximum length, or one over, with one repeated character.
    target = draw(st.sampled_from([None, None, MAX_CHARS - 1, MAX_CHARS, MAX_CHARS + 1]))
    if target is not None:
        length = len(json.loads(literal))
        filler = draw(st.sampled_from(["x", "\u00e9", "\U0001f600", "\u0301"]))
        if target > length:
            literal = literal[:-1] + json.dumps(filler * (target - length))[1:]
    display_name = draw(st.one_of(st.just("Ann"), st.text(max_size=20)))
    return Case(literal, draw(CLIENT_IDS), display_name)


def claims(display_name: str = "Ann") -> AccessClaims:
    return AccessClaims(USER, "ann", display_name, None, (), 2e9, "t")


def gateway_accepts(case: Case) -> bytes | None:
    """The record the gateway would publish for this frame, or None if it refuses."""
    try:
        command = parse_frame(case.frame(), max_body_chars=MAX_CHARS)
        assert isinstance(command, Send)
        return message_record(
            room=command.room,
            sender=claims(case.display_name),
            content=command.content,
            to=command.to,
            client_id=command.client_id,
        )
    except (FrameError, RoomcastError):
        return None


def history_accepts_independently(case: Case) -> bool:
    """history's verdict on the same content, in a record not written by the gateway
    (the stdlib writes unpaired surrogates as escapes, as any other producer could)."""
    record = {
        "room": ROOM,
        "sender": {"id": USER, "username": "ann", "display_name": case.display_name},
        "body": {"type": "text", "content": case.content},
        "sent_at": "2030-01-02T03:04:05.678Z",
        "client_id": case.client_id,
        "kind": "message",
    }
    try:
        parse_record(SEQ, f"chat.room.{ROOM}", json.dumps(record).encode())
    except InvalidRecord:
        return False
    return True


@settings(
    max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(cases())
def test_record_contract_gateway_accepts_iff_history_stores_and_returns_it(case: Case) -> None:
    record = gateway_accepts(case)
    assert (record is not None) == history_accepts_independently(case)
    if record is None:
        return
    stored = parse_record(SEQ, f"chat.room.{ROOM}", record)
    assert isinstance(stored, ChatMessage)
    doc = message_doc(stored, dt.datetime.now(dt.UTC))
    item = to_item(bson.decode(bson.encode(doc)))  # through BSON, as MongoDB keeps it
    assert item["body"] == {"type": "text", "content": case.content}
    assert item["sender"]["display_name"] == case.display_name
    assert stored.client_id == case.client_id


def test_record_contract_boundaries() -> None:
    ok = Case('"' + "x" * MAX_CHARS + '"', "c1", "Ann")
    over = Case('"' + "x" * (MAX_CHARS + 1) + '"', "c1", "Ann")
    assert gateway_accepts(ok) is not None
    assert history_accepts_independently(ok)
    assert gateway_accepts(over) is None
    assert not history_accepts_independently(over)
    for literal in ('"a\\u0000b"', '"\\ud800"', '"\\udc00x"', '"   "', '""'):
        case = Case(literal, "c1", "Ann")
        assert gateway_accepts(case) is None, literal
        assert not history_accepts_independently(case), literal
    paired = Case('"\\ud83d\\ude00"', "c1", "Ann")
    assert gateway_accepts(paired) is not None
    assert history_accepts_independently(paired)


# --- over the real stack ---------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in a thread: hypothesis drives a synchronous test, each example
    runs its socket and HTTP work on this loop."""
    event_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=event_loop.run_forever, daemon=True)
    thread.start()
    yield event_loop
    event_loop.call_soon_threadsafe(event_loop.stop)
    thread.join(timeout=5)
    event_loop.close()


class LiveClient:
    """A raw WebSocket (frames written byte for byte) and the same user's REST client."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ws: ClientConnection | None = None

    async def start(self) -> None:
        url = self.stack.gateway_urls[0]
        self.http = await new_user(url, "prop")
        self.room = (await self.http.create_room("unicode", visibility="public"))["id"]
        ws_url = url.replace("http://", "ws://") + "/v1/ws"
        self.ws = await connect(ws_url, max_size=None, compression=None)
        await self.ws.send(orjson.dumps({"type": "auth", "token": self.http.access_token}).decode())
        assert (await self._next())["type"] == "ready"

    async def _next(self) -> dict[str, Any]:
        assert self.ws is not None
        async with asyncio.timeout(DELIVERY_DEADLINE_SECONDS):
            frame: dict[str, Any] = orjson.loads(await self.ws.recv())
        return frame

    async def send(self, case: Case) -> dict[str, Any]:
        assert self.ws is not None
        await self.ws.send(case.frame(self.room).decode("utf-8", "surrogatepass"))
        while True:
            frame = await self._next()
            if frame.get("type") in ("ack", "error"):
                return frame

    async def stored(self, seq: int) -> dict[str, Any] | None:
        page = await self.http.messages(self.room, before=seq + 1, limit=1)
        return next((item for item in page["items"] if item["seq"] == seq), None)

    async def wait_stored(self, seq: int) -> dict[str, Any]:
        async with asyncio.timeout(DELIVERY_DEADLINE_SECONDS):
            # history is another process: poll its API until the record is there.
            while (item := await self.stored(seq)) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        return item


@pytest.fixture(scope="module")
def live(e2e_stack: Stack, loop: asyncio.AbstractEventLoop) -> Iterator[LiveClient]:
    client = LiveClient(e2e_stack)
    asyncio.run_coroutine_threadsafe(client.start(), loop).result(60)
    yield client
    if client.ws is not None:
        asyncio.run_coroutine_threadsafe(client.ws.close(), loop).result(10)


def live_cases() -> st.SearchStrategy[Case]:
    # The stack's gateway keeps its default max_body_chars, so no padding to the
    # record ceiling here (the codec property covers it); the user is a real one.
    return st.builds(
        lambda segments, ascii_only, cid: Case(literal_of(segments, ascii_only), cid, ""),
        st.lists(SEGMENTS, max_size=8),
        st.booleans(),
        CLIENT_IDS,
    )


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=live_cases())
def test_record_contract_over_the_stack(
    live: LiveClient, loop: asyncio.AbstractEventLoop, case: Case
) -> None:
    if is_client_id(case.client_id):
        # A fresh id per example: a repeated one would be (rightly) deduplicated.
        case = Case(case.literal, uuid.uuid4().hex, case.display_name)
    answer = asyncio.run_coroutine_threadsafe(live.send(case), loop).result(60)
    accepted = answer["type"] == "ack"
    # The same verdict as the codec (the stack's sender is a plain registered user).
    assert accepted == history_accepts_independently(Case(case.literal, case.client_id, "Ann"))
    if not accepted:
        assert answer["code"] in ("invalid_request", "invalid_json")
        return
    assert not answer.get("duplicate")
    item = asyncio.run_coroutine_threadsafe(live.wait_stored(answer["seq"]), loop).result(60)
    assert item["body"] == {"type": "text", "content": case.content}
