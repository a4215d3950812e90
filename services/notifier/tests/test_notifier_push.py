"""Web Push end to end: a burst of 50 DMs makes one push that a browser's keys decrypt,
a subscription the push service calls gone (410) is removed, and a user without
subscriptions costs no push work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import http_ece
import httpx
import orjson
from notifier_testkit import BrowserKeys, Receiver, StartNotifier, World, inbox, metric
from pymongo import AsyncMongoClient

from roomcast.testing.polling import eventually
from roomcast.testing.stack import Stack


def decrypt(keys: BrowserKeys, body: bytes) -> dict[str, Any]:
    plain = http_ece.decrypt(
        body, private_key=keys.private, auth_secret=keys.auth, version="aes128gcm"
    )
    result: dict[str, Any] = orjson.loads(plain)
    return result


async def test_fifty_dms_make_one_push_and_a_gone_subscription_is_removed(
    stack: Stack,
    world: World,
    receiver: Receiver,
    notifier_env: Callable[..., dict[str, str]],
    start_notifier: StartNotifier,
) -> None:
    env = notifier_env(push_coalesce_seconds="2")
    _, base = await start_notifier(env)
    alice, bob = await world.user("alice"), await world.user("bob")
    dm = await world.dm(alice, bob)
    phone, old_laptop = BrowserKeys(), BrowserKeys()
    async with httpx.AsyncClient(base_url=base, headers=bob.headers) as http:
        assert (await http.get("/v1/push/vapid-key")).json()["key"]
        for keys, path in ((phone, "/push/phone"), (old_laptop, "/push/gone")):
            r = await http.post(
                "/v1/push/subscriptions", json=keys.subscription(receiver.url + path)
            )
            assert r.status_code == 201, r.text
        refused = await http.post(
            "/v1/push/subscriptions", json=phone.subscription("http://10.0.0.1/internal")
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_subscription"
    receiver.status_for = lambda path, n: 410 if path == "/push/gone" else 201

    seqs = await world.publish(dm, *(world.record(dm, alice, f"burst {i}") for i in range(50)))

    async def pushed(n: int) -> bool:
        return len(await asyncio.to_thread(receiver.received, "/push/phone")) >= n

    await eventually(lambda: pushed(1), "the push of the burst")
    first = decrypt(phone, receiver.received("/push/phone")[0].body)
    assert first["type"] == "notifications"
    assert first["count"] == 50
    assert first["latest"]["seq"] == seqs[-1]
    assert first["latest"]["kind"] == "dm"
    assert first["latest"]["preview"] == "burst 49"

    # The same push went to the old laptop's endpoint (in either order), which said gone.
    async def gone_removed() -> bool:
        return await metric(base, "roomcast_notifier_push_subscriptions_removed_total") == 1

    await eventually(gone_removed, "the gone subscription removed")
    assert len(receiver.received("/push/gone")) == 1

    # The next message: one more push with only itself; the gone endpoint is not asked.
    (later,) = await world.publish(dm, world.record(dm, alice, "one more"))
    await eventually(lambda: pushed(2), "the push of the next message")
    second = decrypt(phone, receiver.received("/push/phone")[1].body)
    assert second["count"] == 1
    assert second["latest"]["seq"] == later
    assert len(receiver.received("/push/phone")) == 2
    assert len(receiver.received("/push/gone")) == 1
    assert len((await inbox(base, bob, limit=100))["items"]) == 51

    # Unsubscribed: later notifications are not even queued for a push.
    async with httpx.AsyncClient(base_url=base, headers=bob.headers) as http:
        r = await http.request(
            "DELETE", "/v1/push/subscriptions", json={"endpoint": receiver.url + "/push/phone"}
        )
        assert r.status_code == 204
    (last,) = await world.publish(dm, world.record(dm, alice, "after unsubscribing"))
    assert stack.mongo is not None
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo.url)
    try:
        notifications = mongo[env["ROOMCAST_NOTIFIER_MONGO_DB"]].notifications

        async def stored() -> bool:
            return await notifications.find_one({"_id": f"{last}:{bob.id}"}) is not None

        await eventually(stored, "the notification after unsubscribing")
        doc = await notifications.find_one({"_id": f"{last}:{bob.id}"})
        assert doc is not None
        assert doc["push"] == "none"
    finally:
        await mongo.close()
