"""The stored chat record: what the gateway encodes is what history decodes, one text
rule on both sides, one deduplication namespace per kind."""

from __future__ import annotations

import orjson
import pytest

from roomcast.common.chatrecord import (
    MAX_TEXT_CHARS,
    ChatMessage,
    DeleteRecord,
    EditRecord,
    InvalidRecord,
    InvalidText,
    check_text,
    decode_record,
    encode_change,
    encode_message,
    is_client_id,
    msg_id,
    sender_of,
    utc_timestamp,
)

ROOM = "a" * 24
USER = "b" * 24
SUBJECT = f"chat.room.{ROOM}"
AT = "2030-01-02T03:04:05.678Z"


def test_chatrecord_message_edit_delete_round_trip() -> None:
    sender = sender_of(USER, "ann", "Ann \u05e9", None)
    text = "\u202eRTL e\u0301 \U0001f469\u200d\U0001f4bb \x01"
    data = encode_message(
        room=ROOM, sender=sender, content=text, to="c" * 24, client_id="c-1", sent_at=AT
    )
    message = decode_record(5, SUBJECT, data)
    assert message == ChatMessage(
        5, ROOM, sender, {"type": "text", "content": text}, AT, "c" * 24, "c-1"
    )

    edit = encode_change(
        kind="edit", room=ROOM, target_seq=5, sender=sender, content="new", client_id="c-1", at=AT
    )
    assert decode_record(6, SUBJECT, edit) == EditRecord(
        6, ROOM, 5, sender, {"type": "text", "content": "new"}, AT
    )
    assert orjson.loads(edit)["edited_at"] == AT

    delete = encode_change(
        kind="delete", room=ROOM, target_seq=5, sender=sender, content=None, client_id="c-2", at=AT
    )
    assert decode_record(7, SUBJECT, delete) == DeleteRecord(7, ROOM, 5, sender, AT)
    assert "body" not in orjson.loads(delete)


@pytest.mark.parametrize(
    ("content", "too_long"),
    [
        ("", False),
        (" \t\n", False),
        ("a\x00b", False),
        (5, False),
        ("x" * (MAX_TEXT_CHARS + 1), True),
    ],
)
def test_chatrecord_text_rule_refuses(content: object, too_long: bool) -> None:
    with pytest.raises(InvalidText) as info:
        check_text(content)
    assert info.value.too_long is too_long
    assert info.value.reason == "bad_field"


def test_chatrecord_text_rule_accepts_the_maximum_and_a_lower_gateway_limit_applies() -> None:
    assert check_text("x" * MAX_TEXT_CHARS) == "x" * MAX_TEXT_CHARS
    with pytest.raises(InvalidText):
        check_text("x" * 4001, 4000)


def test_chatrecord_encoder_refuses_unpaired_surrogates_and_history_refuses_nul() -> None:
    sender = sender_of(USER, "ann", "Ann", None)
    with pytest.raises(InvalidText):
        encode_message(
            room=ROOM, sender=sender, content="a\ud800", to=None, client_id="c", sent_at=AT
        )
    nul = orjson.dumps(
        {
            "room": ROOM,
            "sender": sender.to_doc(),
            "body": {"type": "text", "content": "a\x00"},
            "sent_at": AT,
        }
    )
    with pytest.raises(InvalidRecord, match="U\\+0000"):
        decode_record(3, SUBJECT, nul)


def test_chatrecord_sender_profile_is_validated_like_history_does() -> None:
    with pytest.raises(InvalidRecord):
        sender_of(USER, "ann", "Ann\x00", None)
    with pytest.raises(InvalidRecord):
        sender_of("not-an-id", "ann", "Ann", None)
    assert sender_of(USER, "ann", None, None).display_name == "ann"


def test_chatrecord_each_kind_has_its_own_msg_id_namespace() -> None:
    # The send's id keeps its historic format: a send retried across a deploy dedupes.
    assert msg_id("message", USER, "x1") == f"{USER}:x1"
    ids = {msg_id(kind, USER, "x1") for kind in ("message", "edit", "delete")}
    assert len(ids) == 3
    # No client_id (no ':' allowed) can make a send's id equal an edit's.
    assert not is_client_id("e:x1")
    assert utc_timestamp(0.5) == "1970-01-01T00:00:00.500Z"
