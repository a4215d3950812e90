"""Frames, URLs, the body timestamp, Prometheus text and the users file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from roomcast.load import wire
from roomcast.load.promtext import memory_per_socket, metric_value
from roomcast.load.provision import UserCred, load_users_file, save_users_file, token_expiry

ROOM = "a" * 24


def test_send_frame_is_valid_json_with_the_schedule_in_the_body() -> None:
    frame = orjson.loads(wire.send_frame(ROOM, "w0s1n2", 1_700_000_000_123_456, 100))
    assert frame["type"] == "send"
    assert frame["room"] == ROOM
    assert frame["client_id"] == "w0s1n2"
    content = frame["body"]["content"]
    assert frame["body"]["type"] == "text"
    assert len(content) == 100
    assert wire.stamp_of(content) == 1_700_000_000_123_456


def test_raw_message_frame_looks_like_a_gateway_message() -> None:
    msg = orjson.loads(wire.raw_message_frame(7, 6, 123, 50))
    assert (msg["type"], msg["seq"], msg["prev"], msg["room"]) == ("message", 7, 6, "raw")
    assert wire.stamp_of(msg["body"]["content"]) == 123


def test_subscribe_and_auth_frames() -> None:
    assert orjson.loads(wire.subscribe_frame(ROOM, None)) == {"type": "subscribe", "room": ROOM}
    assert orjson.loads(wire.subscribe_frame(ROOM, 42))["since"] == 42
    assert orjson.loads(wire.auth_frame("t.o.k")) == {"type": "auth", "token": "t.o.k"}


@pytest.mark.parametrize(
    ("base", "raw", "want"),
    [
        ("http://127.0.0.1:8080", False, "ws://127.0.0.1:8080/v1/ws"),
        ("https://chat.example.com/", False, "wss://chat.example.com/v1/ws"),
        ("ws://lb:80/custom/ws", False, "ws://lb:80/custom/ws"),
        ("http://127.0.0.1:9000", True, "ws://127.0.0.1:9000/"),
    ],
)
def test_ws_url(base: str, raw: bool, want: str) -> None:
    assert wire.ws_url(base, raw=raw) == want


def test_http_base() -> None:
    assert wire.http_base("ws://lb:80/v1/ws") == "http://lb:80"
    assert wire.http_base("https://x.example/") == "https://x.example"


METRICS = """# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.048576e+08
roomcast_gateway_connections 1000.0
roomcast_gateway_connections_total 5.0
roomcast_gateway_closes_total{code="1012"} 3.0
roomcast_gateway_closes_total{code="4009"} 2.0
"""


def test_metric_value() -> None:
    assert metric_value(METRICS, "process_resident_memory_bytes") == 104857600
    assert metric_value(METRICS, "roomcast_gateway_connections") == 1000  # not the _total
    assert metric_value(METRICS, "roomcast_gateway_closes_total") == 5
    assert metric_value(METRICS, "absent") is None


def test_memory_per_socket() -> None:
    before = [{"url": "a", "rss_bytes": 100 * 2**20, "connections": 0}]
    after = [{"url": "a", "rss_bytes": 100 * 2**20 + 10_000 * 20_480, "connections": 10_000}]
    mem = memory_per_socket(before, after)
    assert mem is not None
    assert mem["bytes_per_socket"] == 20_480
    assert mem["kib_per_socket"] == 20.0
    assert mem["gateways"][0]["connections_gained"] == 10_000


def test_users_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    users = [UserCred("u1", "pw-one-123", "0" * 24, "x.eyJleHAiOiAxMjN9.y")]
    save_users_file(path, users)
    assert path.stat().st_mode & 0o777 == 0o600  # it holds passwords
    assert load_users_file(path) == users
    assert token_expiry(users[0].token) == 123
    assert token_expiry("garbage") == 0
