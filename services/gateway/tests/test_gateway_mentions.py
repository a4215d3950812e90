"""Which ``@names`` of a text are mentions (realtime/mentions.py)."""

from __future__ import annotations

from roomcast.gateway.realtime.mentions import MAX_MENTIONS_PER_MESSAGE, mentioned_names


def test_mentions_are_usernames_after_an_at_sign() -> None:
    assert mentioned_names("hi @Bob_1 and @carol.x, @bob_1 again") == ["bob_1", "carol.x"]
    assert mentioned_names("end of sentence @dave.") == ["dave"]


def test_addresses_short_names_and_plain_text_are_not_mentions() -> None:
    assert mentioned_names("mail me@example.com or @@eve") == []
    assert mentioned_names("@ab is too short, @ alone, no at sign") == []


def test_the_number_of_mentions_is_bounded() -> None:
    text = " ".join(f"@user{i:03d}" for i in range(50))
    names = mentioned_names(text)
    assert len(names) == MAX_MENTIONS_PER_MESSAGE
    assert names[0] == "user000"
