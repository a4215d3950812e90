"""Replies, mentions and reactions in the stored record: what the gateway encodes is
what history decodes, and what the contract refuses never reaches a store."""

from __future__ import annotations

import orjson
import pytest

from roomcast.common.chatrecord import (
    MAX_EMOJI_CHARS,
    MAX_MENTIONS,
    ChatMessage,
    InvalidRecord,
    ReactionRecord,
    check_emoji,
    decode_record,
    encode_message,
    encode_reaction,
    msg_id,
    sender_of,
)

ROOM = "a" * 24
USER = "b" * 24
SUBJECT = f"chat.room.{ROOM}"
AT = "2030-01-02T03:04:05.678Z"
SENDER = sender_of(USER, "ann", "Ann", None)


def test_a_reply_with_mentions_round_trips() -> None:
    mentioned = ("c" * 24, "d" * 24)
    data = encode_message(
        room=ROOM,
        sender=SENDER,
        content="@cat @dog look",
        to=None,
        client_id="r-1",
        sent_at=AT,
        reply_to=3,
        mentions=mentioned,
    )
    message = decode_record(9, SUBJECT, data)
    assert isinstance(message, ChatMessage)
    assert (message.reply_to, message.mentions) == (3, mentioned)


def test_a_plain_message_has_no_reply_and_no_mentions_in_its_record() -> None:
    data = encode_message(
        room=ROOM, sender=SENDER, content="hi", to=None, client_id="p-1", sent_at=AT
    )
    assert "reply_to" not in orjson.loads(data)
    assert "mentions" not in orjson.loads(data)
    message = decode_record(2, SUBJECT, data)
    assert isinstance(message, ChatMessage)
    assert (message.reply_to, message.mentions) == (None, ())


def _raw_message(seq: int, **extra: object) -> ChatMessage:
    record = {
        "room": ROOM,
        "sender": SENDER.to_doc(),
        "body": {"type": "text", "content": "x"},
        "sent_at": AT,
        "kind": "message",
        **extra,
    }
    message = decode_record(seq, SUBJECT, orjson.dumps(record))
    assert isinstance(message, ChatMessage)
    return message


@pytest.mark.parametrize("reply_to", [10, 11, 0, -1, "3", 2.0, True, {"$gt": 1}])
def test_a_reply_to_that_cannot_be_an_earlier_message_is_dropped(reply_to: object) -> None:
    assert _raw_message(10, reply_to=reply_to).reply_to is None


def test_mentions_keep_only_distinct_user_ids_up_to_the_bound() -> None:
    ids = [f"{i:024x}" for i in range(MAX_MENTIONS + 5)]
    assert _raw_message(4, mentions=ids).mentions == tuple(ids[:MAX_MENTIONS])
    bob = "e" * 24
    assert _raw_message(4, mentions=["$where", bob, bob, 7, "E" * 24]).mentions == (bob,)
    assert _raw_message(4, mentions={"x": bob}).mentions == ()


@pytest.mark.parametrize("op", ["add", "remove"])
def test_a_reaction_round_trips_and_has_its_own_dedup_namespace(op: str) -> None:
    data = encode_reaction(
        room=ROOM,
        target_seq=4,
        sender=SENDER,
        emoji="\U0001f44d\U0001f3fd",
        op="add" if op == "add" else "remove",
        client_id="x-1",
        at=AT,
    )
    record = decode_record(8, SUBJECT, data)
    assert record == ReactionRecord(8, ROOM, 4, SENDER, "\U0001f44d\U0001f3fd", op, AT)  # type: ignore[arg-type]
    ids = {msg_id(kind, USER, "x-1") for kind in ("message", "edit", "delete", "reaction")}
    assert len(ids) == 4


@pytest.mark.parametrize(
    "emoji",
    [
        "\U0001f44d",
        "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # ZWJ family
        "\u2764\ufe0f",  # variation selector
        ":+1:",
        "lol",
        "x" * MAX_EMOJI_CHARS,
    ],
)
def test_real_emoji_and_short_text_are_reactions(emoji: str) -> None:
    assert check_emoji(emoji) == emoji


@pytest.mark.parametrize(
    "emoji",
    ["", "x" * (MAX_EMOJI_CHARS + 1), " \U0001f44d", "a\nb", "a\x00", "\x1b[31m", "a\u2028b", 5],
)
def test_empty_long_blank_edged_or_control_reactions_are_refused(emoji: object) -> None:
    with pytest.raises(InvalidRecord):
        check_emoji(emoji)


@pytest.mark.parametrize(
    "change",
    [
        {"op": "toggle"},
        {"op": None},
        {"target_seq": 8},
        {"target_seq": "1"},
        {"emoji": ""},
        {"emoji": "a\tb"},
        {"emoji": ["x"]},
    ],
)
def test_a_malformed_reaction_record_is_invalid(change: dict[str, object]) -> None:
    record: dict[str, object] = {
        "room": ROOM,
        "target_seq": 4,
        "sender": SENDER.to_doc(),
        "emoji": "\U0001f44d",
        "op": "add",
        "sent_at": AT,
        "client_id": "x",
        "kind": "reaction",
        **change,
    }
    with pytest.raises(InvalidRecord):
        decode_record(8, SUBJECT, orjson.dumps(record))
