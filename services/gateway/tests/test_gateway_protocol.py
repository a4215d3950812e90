"""Frame parsing and building, and the multiplexer's request sniffing (pure functions)."""

from __future__ import annotations

import orjson
import pytest

from roomcast.common.tokens import AccessClaims
from roomcast.gateway.edge.multiplexer import is_websocket_upgrade
from roomcast.gateway.realtime.protocol import (
    HDR_SENDER,
    HDR_TO,
    Auth,
    FrameError,
    Ping,
    Send,
    Subscribe,
    message_frame,
    message_record,
    parse_frame,
    private_recipients,
    record_headers,
    skip_frame,
    utc_timestamp,
    ws_text,
)

ROOM = "0123456789abcdef01234567"
USER = "89abcdef0123456789abcdef"


def parse(obj: object) -> object:
    return parse_frame(orjson.dumps(obj), max_body_chars=10)


def test_gateway_protocol_parses_commands() -> None:
    assert parse({"type": "ping"}) == Ping()
    assert parse({"type": "auth", "token": "t"}) == Auth("t")
    assert parse({"type": "subscribe", "room": ROOM}) == Subscribe(ROOM, None)
    assert parse({"type": "subscribe", "room": ROOM, "since": 7}) == Subscribe(ROOM, 7)
    sent = parse(
        {
            "type": "send",
            "room": ROOM,
            "client_id": "a_B-9",
            "body": {"type": "text", "content": "hi"},
            "to": USER,
            "extra": "ignored",
        }
    )
    assert sent == Send(ROOM, "a_B-9", "hi", USER)


@pytest.mark.parametrize(
    ("obj", "code", "ref"),
    [
        (
            {"type": "send", "room": ROOM, "client_id": "x" * 65, "body": {}},
            "invalid_request",
            ROOM,
        ),
        ({"type": "send", "room": ROOM, "client_id": "", "body": {}}, "invalid_request", ROOM),
        ({"type": "send", "room": "r", "client_id": "c", "body": {}}, "invalid_request", "c"),
        (
            {
                "type": "send",
                "room": ROOM,
                "client_id": "c",
                "body": {"type": "text", "content": " "},
            },
            "invalid_request",
            "c",
        ),
        (
            {
                "type": "send",
                "room": ROOM,
                "client_id": "c",
                "body": {"type": "img", "content": "x"},
            },
            "invalid_request",
            "c",
        ),
        (
            {
                "type": "send",
                "room": ROOM,
                "client_id": "c",
                "body": {"type": "text", "content": "x" * 11},
            },
            "payload_too_large",
            "c",
        ),
        ({"type": "subscribe", "room": ROOM, "since": 1.5}, "invalid_request", ROOM),
        ({"type": "subscribe", "room": ROOM, "since": 2**63}, "invalid_request", ROOM),
        ({"type": "subscribe", "room": ROOM.upper()}, "invalid_request", None),
        ({"type": "subscribe", "room": {"$ne": None}}, "invalid_request", None),
        ({"type": "auth", "token": ""}, "missing_token", None),
        ({"type": "auth", "token": "x" * 5000}, "invalid_token", None),
        ({"type": "read", "room": ROOM, "seq": "3"}, "invalid_request", ROOM),
        ({"type": "shout", "room": ROOM}, "unknown_type", ROOM),
        ({"kind": "ping"}, "invalid_request", None),
    ],
)
def test_gateway_protocol_rejects_bad_frames(obj: object, code: str, ref: str | None) -> None:
    with pytest.raises(FrameError) as caught:
        parse(obj)
    assert caught.value.error.code == code
    assert caught.value.ref == ref


def test_gateway_protocol_rejects_huge_numbers() -> None:
    raw = b'{"type": "subscribe", "room": "%s", "since": 18446744073709551616}' % ROOM.encode()
    with pytest.raises(FrameError) as caught:
        parse_frame(raw, max_body_chars=10)  # decoded as a float: not a sequence
    assert caught.value.error.code == "invalid_request"


def test_gateway_protocol_rejects_non_json() -> None:
    for raw in (b"{", b"\xff\xfe", b"", b"nul"):
        with pytest.raises(FrameError) as caught:
            parse_frame(raw, max_body_chars=10)
        assert caught.value.error.code == "invalid_json"


def claims() -> AccessClaims:
    return AccessClaims(
        user_id=USER,
        username="ann",
        display_name='Ann "the" Admin',
        avatar_url=None,
        roles=(),
        expires_at=0,
        token_id="j",
    )


def test_gateway_protocol_message_frame_is_the_record_plus_sequence() -> None:
    record = message_record(
        room=ROOM, sender=claims(), content='he said "hi" \u00e9', to=None, client_id="c1"
    )
    frame = orjson.loads(message_frame(42, 17, record))
    assert frame == {
        "type": "message",
        "seq": 42,
        "prev": 17,
        "id": "42",
        **orjson.loads(record),
    }
    assert frame["sender"]["display_name"] == 'Ann "the" Admin'
    assert orjson.loads(skip_frame(ROOM, 42, 17)) == {
        "type": "skip",
        "room": ROOM,
        "seq": 42,
        "prev": 17,
    }


def test_gateway_protocol_private_recipients() -> None:
    record = message_record(room=ROOM, sender=claims(), content="x", to="f" * 24, client_id="c")
    headers = record_headers(sender_id=USER, client_id="c", to="f" * 24)
    assert private_recipients(record, headers) == (USER, "f" * 24)
    assert private_recipients(record, None) == (USER, "f" * 24)  # decoded when no headers
    public = message_record(room=ROOM, sender=claims(), content='"to": "x"', to=None, client_id="c")
    assert private_recipients(public, {HDR_SENDER: USER}) is None
    assert private_recipients(public, None) is None
    assert HDR_TO not in record_headers(sender_id=USER, client_id="c", to=None)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_gateway_protocol_ws_text_framing(size: int) -> None:
    payload = b"a" * size
    frame = ws_text(payload)
    assert frame[0] == 0x81
    if size < 126:
        assert frame[1] == size
        assert frame[2:] == payload
    elif size < 65536:
        assert frame[1] == 126
        assert int.from_bytes(frame[2:4], "big") == size
        assert frame[4:] == payload
    else:
        assert frame[1] == 127
        assert int.from_bytes(frame[2:10], "big") == size
        assert frame[10:] == payload


def test_gateway_protocol_timestamp() -> None:
    assert utc_timestamp(0.123) == "1970-01-01T00:00:00.123Z"
    assert utc_timestamp(1700000000.999) == "2023-11-14T22:13:20.999Z"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade", True),
        (b"GET /v1/ws?x=1 HTTP/1.1\r\nupgrade: WebSocket", True),
        (b"GET /v1/ws HTTP/1.1\r\nHost: x", False),
        (b"GET /v1/wsx HTTP/1.1\r\nUpgrade: websocket", False),
        (b"POST /v1/ws HTTP/1.1\r\nUpgrade: websocket", False),
        (b"GET /healthz HTTP/1.1\r\nHost: x", False),
        (b"GET /v1/ws", None),
        (b"\x16\x03\x01 garbage", None),
    ],
)
def test_gateway_multiplexer_sniffing(head: bytes, expected: bool | None) -> None:
    assert is_websocket_upgrade(head) is expected
