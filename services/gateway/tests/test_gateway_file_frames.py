"""The ``file`` send frame: parsed into a Send with the file id and caption, malformed
ones refused with the send's client_id as ref."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from roomcast.gateway.realtime.protocol import FrameError, Send, parse_frame

ROOM = "a" * 24
FILE_ID = "b" * 24


def parse(body: dict[str, Any]) -> Send:
    frame = {"type": "send", "room": ROOM, "client_id": "c1", "body": body}
    command = parse_frame(orjson.dumps(frame), max_body_chars=10)
    assert isinstance(command, Send)
    return command


def test_a_file_send_carries_the_file_id_and_caption() -> None:
    assert parse({"type": "file", "file_id": FILE_ID}) == Send(ROOM, "c1", "", None, FILE_ID)
    assert parse({"type": "file", "file_id": FILE_ID, "caption": "hi"}).content == "hi"
    assert parse({"type": "text", "content": "hi"}).file_id is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "file"}, "invalid_request"),
        ({"type": "file", "file_id": "../x"}, "invalid_request"),
        ({"type": "file", "file_id": FILE_ID, "url": "http://x"}, "invalid_request"),
        ({"type": "file", "file_id": FILE_ID, "caption": ""}, "invalid_request"),
        ({"type": "file", "file_id": FILE_ID, "caption": "x" * 11}, "payload_too_large"),
    ],
)
def test_malformed_file_sends_are_refused(body: dict[str, Any], code: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse(body)
    assert caught.value.error.code == code
    assert caught.value.ref == "c1"
