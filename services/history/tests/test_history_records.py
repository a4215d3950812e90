"""Parsing and validation of stream payloads (no servers needed)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from roomcast.history.records import (
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    ChatMessage,
    DeleteRecord,
    EditRecord,
    InvalidRecord,
    parse_record,
)

ROOM = "a" * 24
USER = "b" * 24
OTHER = "c" * 24
SUBJECT = f"chat.room.{ROOM}"


def payload(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "message",
        "room": ROOM,
        "sender": {"id": USER, "username": "ann", "display_name": "Ann", "avatar_url": None},
        "body": {"type": "text", "content": "hello"},
        "sent_at": "2030-01-02T03:04:05.123456+00:00",
        "client_id": "c-1",
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not ...}


def parse(record: dict[str, Any] | bytes, seq: int = 10, subject: str = SUBJECT) -> Any:
    data = record if isinstance(record, bytes) else orjson.dumps(record)
    return parse_record(seq, subject, data)


def test_history_parses_message_edit_and_delete() -> None:
    message = parse(payload(to=OTHER, sent_at="2030-01-02T03:04:05Z"))
    assert isinstance(message, ChatMessage)
    assert (message.seq, message.room_id, message.to, message.client_id) == (10, ROOM, OTHER, "c-1")
    assert message.sender.username == "ann"
    assert message.body == {"type": "text", "content": "hello"}
    assert message.sent_at == "2030-01-02T03:04:05Z"

    edit = parse(payload(kind="edit", target_seq=3, client_id=...))
    assert isinstance(edit, EditRecord)
    assert (edit.target_seq, edit.body["content"]) == (3, "hello")

    delete = parse(payload(kind="delete", target_seq=9, body=..., client_id=...))
    assert isinstance(delete, DeleteRecord)
    assert delete.target_seq == 9


def test_history_record_without_kind_is_a_message_and_display_name_defaults() -> None:
    record = payload(kind=...)
    record["sender"] = {"id": USER, "username": "ann"}
    message = parse(record)
    assert isinstance(message, ChatMessage)
    assert message.sender.display_name == "ann"
    assert message.sender.avatar_url is None


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b"not json", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (payload(room="d" * 24), "room_mismatch"),
        (payload(kind="poll"), "unknown_kind"),
        (payload(kind="reaction"), "bad_field"),  # no op, target_seq or emoji
        (payload(sender={"id": "not-an-id", "username": "x"}), "bad_field"),
        (payload(sender={"id": {"$gt": ""}, "username": "x"}), "bad_field"),
        (payload(sender="ann"), "bad_field"),
        (payload(body="hello"), "bad_field"),
        (payload(body={"type": "text", "content": 5}), "bad_field"),
        (payload(body={"type": "text", "content": "x", "$set": 1}), "bad_field"),
        (payload(body={"type": "text", "content": "x", "a.b": 1}), "bad_field"),
        (payload(body={"type": "text", "content": "x", "n": 2**64 - 1}), "bad_field"),
        (payload(body={"type": "t", "a": {"b": {"c": {"d": 1}}}}), "bad_field"),
        (payload(sent_at="yesterday"), "bad_field"),
        (payload(sent_at="2030-01-02T03:04:05"), "bad_field"),
        (payload(sent_at=12345), "bad_field"),
        (payload(to="everyone"), "bad_field"),
        (payload(client_id="x" * 129), "bad_field"),
        (payload(kind="edit", target_seq=10), "bad_field"),
        (payload(kind="edit", target_seq="3"), "bad_field"),
        (payload(kind="edit", target_seq=True), "bad_field"),
        (payload(kind="delete", target_seq=0), "bad_field"),
        (payload(kind="delete"), "bad_field"),
    ],
)
def test_history_rejects_invalid_records(record: dict[str, Any] | bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        parse(record)
    assert info.value.reason == reason


def test_history_rejects_bad_subjects_and_oversized_payloads() -> None:
    with pytest.raises(InvalidRecord, match="bad_subject"):
        parse(payload(), subject="chat.room.NOTANID")
    with pytest.raises(InvalidRecord, match="bad_subject"):
        parse(payload(), subject=f"other.room.{ROOM}")
    big = payload(body={"type": "text", "content": "x" * MAX_RECORD_BYTES})
    with pytest.raises(InvalidRecord, match="too_large"):
        parse(big)


@pytest.mark.parametrize(
    "content",
    ["", "   ", "a\x00b", "x" * (MAX_TEXT_CHARS + 1)],
)
def test_history_applies_the_shared_text_rule(content: str) -> None:
    # The gateway refuses exactly these (roomcast.common.chatrecord.check_text).
    with pytest.raises(InvalidRecord):
        parse(payload(body={"type": "text", "content": content}))


def test_history_stores_any_other_unicode_exactly() -> None:
    text = "\u202e\u05e9\u05dc\u05d5\u05dd e\u0301 \U0001f600 \x01 " + "x" * (MAX_TEXT_CHARS - 13)
    message = parse(payload(body={"type": "text", "content": text}))
    assert isinstance(message, ChatMessage)
    assert message.body["content"] == text
    assert len(text) == MAX_TEXT_CHARS
