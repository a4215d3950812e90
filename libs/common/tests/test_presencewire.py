"""Reading the gateways' presence messages (shared by gateways and the notifier): what a
gateway sends is read back, anything else on the shared NATS is ignored, never raised."""

from __future__ import annotations

import orjson

from roomcast.common.presencewire import (
    MAX_GATEWAY_ID_CHARS,
    MAX_PRESENCE_BYTES,
    decode,
    gateway_of,
    int_of,
    user_id_of,
)

USER_ID = "65f000000000000000000001"


def test_a_gateway_reply_is_read_back() -> None:
    reply = {"gateway": "gw-a-0123456789ab", "seq": 3, "part": 0, "parts": 1, "users": []}
    obj = decode(orjson.dumps({**reply, "users": [{"id": USER_ID, "username": "ann"}]}))
    assert obj is not None
    assert gateway_of(obj) == "gw-a-0123456789ab"
    assert (int_of(obj["part"]), int_of(obj["parts"])) == (0, 1)
    assert [user_id_of(u) for u in obj["users"]] == [USER_ID]


def test_payloads_that_are_not_a_json_object_of_bounded_size_are_ignored() -> None:
    assert decode(b"not json") is None
    assert decode(b"[1, 2]") is None
    padding = "x" * MAX_PRESENCE_BYTES
    assert decode(orjson.dumps({"gateway": "g", "pad": padding})) is None


def test_fields_of_the_wrong_type_or_size_are_ignored() -> None:
    assert gateway_of({"gateway": ""}) is None
    assert gateway_of({"gateway": "g" * (MAX_GATEWAY_ID_CHARS + 1)}) is None
    assert gateway_of({"gateway": 7}) is None
    assert int_of(True) is None
    assert int_of("1") is None
    assert user_id_of({"id": "not-an-object-id"}) is None
    assert user_id_of(USER_ID) is None
