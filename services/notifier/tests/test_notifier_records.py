"""Who a message notifies: DMs, replies, mentions, private messages, never the author."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from roomcast.common.chatrecord import EditRecord, InvalidRecord, Sender, encode_message
from roomcast.notifier.records import Incoming, change_preview, parse, recipients
from roomcast.notifier.settings import Settings

ROOM = "a" * 24
ALICE, BOB, CAROL, DAVE = ("1" * 24, "2" * 24, "3" * 24, "4" * 24)


def record(sender: str, *, to: str | None = None, **extra: object) -> bytes:
    data = encode_message(
        room=ROOM,
        sender=Sender(sender, "u" + sender[:4], "User", None),
        content="hello there",
        to=to,
        client_id="c1",
        sent_at="2026-01-01T00:00:00.000Z",
    )
    return orjson.dumps({**orjson.loads(data), **extra})


def test_a_dm_notifies_the_other_member_and_never_the_author() -> None:
    message = parse(10, f"chat.room.{ROOM}", record(ALICE))
    assert isinstance(message, Incoming)
    found = recipients(message, direct_user_ids=(ALICE, BOB), reply_author=None, members=None)
    assert found == {BOB: "dm"}


def test_reply_and_mentions_notify_members_only_and_reply_wins() -> None:
    message = parse(
        10, f"chat.room.{ROOM}", record(ALICE, reply_to=4, mentions=[BOB, CAROL, DAVE, ALICE])
    )
    assert isinstance(message, Incoming)
    assert message.reply_to == 4
    members = frozenset({ALICE, BOB, CAROL})
    found = recipients(message, direct_user_ids=(), reply_author=BOB, members=members)
    # DAVE is not a member; ALICE wrote it; BOB is both replied to and mentioned.
    assert found == {BOB: "reply", CAROL: "mention"}


def test_a_private_message_notifies_only_its_recipient() -> None:
    message = parse(10, f"chat.room.{ROOM}", record(ALICE, to=CAROL, mentions=[BOB, CAROL]))
    assert isinstance(message, Incoming)
    found = recipients(
        message, direct_user_ids=(), reply_author=BOB, members=frozenset({ALICE, BOB, CAROL})
    )
    assert found == {CAROL: "mention"}


def test_malformed_reply_and_mentions_are_ignored_not_trusted() -> None:
    message = parse(
        10, f"chat.room.{ROOM}", record(ALICE, reply_to=10, mentions=["$where", BOB, BOB, 7])
    )
    assert isinstance(message, Incoming)
    assert message.reply_to is None  # a reply always follows its target
    assert message.mentions == (BOB,)


def test_edits_are_changes_not_messages_and_garbage_is_an_invalid_record() -> None:
    edit = orjson.dumps(
        {
            "room": ROOM,
            "target_seq": 1,
            "sender": {"id": ALICE, "username": "alice", "display_name": "A", "avatar_url": None},
            "body": {"type": "text", "content": "x"},
            "edited_at": "2026-01-01T00:00:00Z",
            "sent_at": "2026-01-01T00:00:00Z",
            "kind": "edit",
        }
    )
    change = parse(5, f"chat.room.{ROOM}", edit)
    assert isinstance(change, EditRecord)
    assert change_preview(change) == "x"
    with pytest.raises(InvalidRecord):
        parse(5, f"chat.room.{ROOM}", b"{not json")


def test_the_vapid_key_and_service_password_are_required_settings() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)  # type: ignore[call-arg]
    missing = {e["loc"][0] for e in info.value.errors() if e["type"] == "missing"}
    assert missing == {"vapid_private_key", "service_password"}
