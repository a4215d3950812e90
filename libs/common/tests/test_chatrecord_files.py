"""File message bodies: what the gateway encodes, history decodes; anything else is
refused as an invalid record."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from roomcast.common.chatrecord import (
    ChatMessage,
    InvalidRecord,
    Sender,
    decode_record,
    encode_message,
    make_file_body,
)

ROOM = "a" * 24
FILE = {
    "id": "b" * 24,
    "name": "report.pdf",
    "size": 1234,
    "content_type": "application/pdf",
    "sha256": "c" * 64,
}
SENDER = Sender("d" * 24, "alice", "Alice", None)


def record(body: dict[str, Any]) -> bytes:
    return encode_message(
        room=ROOM,
        sender=SENDER,
        content="",
        to=None,
        client_id="c1",
        sent_at="2026-01-01T00:00:00Z",
        file_body=body,
    )


def test_a_file_message_round_trips_with_its_caption() -> None:
    body = make_file_body(FILE, "the report")
    message = decode_record(7, f"chat.room.{ROOM}", record(body))
    assert isinstance(message, ChatMessage)
    assert message.body == {"type": "file", "file": FILE, "caption": "the report"}
    assert "caption" not in make_file_body(FILE, None)


@pytest.mark.parametrize(
    "change",
    [
        {"id": "not-an-id"},
        {"size": -1},
        {"size": "12"},
        {"sha256": "xyz"},
        {"name": ""},
        {"name": "a\x00b"},
    ],
)
def test_bad_file_metadata_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecord):
        make_file_body({**FILE, **change}, None)
    raw = orjson.loads(record({"type": "text", "content": "x"}))
    raw["body"] = {"type": "file", "file": {**FILE, **change}}
    with pytest.raises(InvalidRecord):
        decode_record(7, f"chat.room.{ROOM}", orjson.dumps(raw))


def test_extra_fields_and_bad_captions_are_refused() -> None:
    raw = orjson.loads(record(make_file_body(FILE, None)))
    for body in (
        {"type": "file", "file": {**FILE, "url": "http://x"}},
        {"type": "file", "file": FILE, "other": 1},
        {"type": "file", "file": FILE, "caption": " "},
        {"type": "file"},
    ):
        raw["body"] = body
        with pytest.raises(InvalidRecord):
            decode_record(7, f"chat.room.{ROOM}", orjson.dumps(raw))
