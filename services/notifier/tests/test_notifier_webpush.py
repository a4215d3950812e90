"""Web Push on the wire: subscriptions validated, payloads that only the subscription's
keys decrypt, a VAPID signature the push service can verify."""

from __future__ import annotations

import asyncio
from typing import Any

import http_ece
import httpx
import orjson
import pytest
from notifier_testkit import BrowserKeys, Receiver, b64url, b64url_decode, vapid_private_key
from py_vapid import Vapid02

from roomcast.notifier.errors import InvalidSubscription
from roomcast.notifier.webpush import WebPushSender, parse_subscription

HOSTS = ("127.0.0.1", "*.push.example")


def parse(body: dict[str, Any], allow_http: bool = False) -> Any:
    return parse_subscription(body, allowed_hosts=HOSTS, allow_http=allow_http)


def test_subscriptions_are_validated_before_anything_is_stored() -> None:
    keys = BrowserKeys()
    good = keys.subscription("https://fcm.push.example/send/abc")
    assert parse(good).endpoint == good["endpoint"]
    bad: list[dict[str, Any]] = [
        keys.subscription("https://169.254.169.254/latest"),  # not a push service
        keys.subscription("http://127.0.0.1:9/x"),  # plain http
        keys.subscription("https://user:pw@fcm.push.example/x"),
        {**good, "keys": {"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": good["keys"]["auth"]}},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"], "auth": b64url(b"short")}},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"]}},
        {**good, "extra": 1},
        {**good, "endpoint": "https://fcm.push.example/" + "x" * 3000},
    ]
    for body in bad:
        with pytest.raises(InvalidSubscription):
            parse(body)
    assert parse(keys.subscription("http://127.0.0.1:9/x"), allow_http=True)


async def test_a_push_decrypts_with_the_subscription_keys_and_carries_a_valid_vapid_jwt(
    receiver: Receiver,
) -> None:
    keys = BrowserKeys()
    sub = parse(keys.subscription(receiver.url + "/push/1"), allow_http=True)
    async with httpx.AsyncClient() as http:
        sender = WebPushSender(
            vapid_private_key=vapid_private_key(),
            subject="mailto:ops@example.com",
            http=http,
            ttl_seconds=60,
            timeout_seconds=5,
        )
        status = await sender.send(sub, b'{"type":"notifications","count":1}')
    assert status == 201
    (request,) = await asyncio.to_thread(receiver.received, "/push/1")
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert request.headers["TTL"] == "60"
    plain = http_ece.decrypt(
        request.body, private_key=keys.private, auth_secret=keys.auth, version="aes128gcm"
    )
    assert orjson.loads(plain) == {"type": "notifications", "count": 1}
    # Another browser's keys cannot read it.
    other = BrowserKeys()
    with pytest.raises(http_ece.ECEException, match="InvalidTag"):
        http_ece.decrypt(
            request.body, private_key=other.private, auth_secret=other.auth, version="aes128gcm"
        )
    authorization = request.headers["Authorization"]
    assert Vapid02.verify(authorization)
    token = authorization.split("t=", 1)[1].split(",", 1)[0]
    claims = orjson.loads(b64url_decode(token.split(".")[1]))
    assert claims["aud"] == receiver.url
    assert claims["sub"] == "mailto:ops@example.com"
    assert authorization.split("k=", 1)[1] == sender.public_key
