"""Outgoing webhooks against a local receiver: signed (HMAC-SHA256 over timestamp and
body, checked here from the documented scheme), filtered by event, retried with a
growing backoff, and dead-lettered after the last attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from notifier_testkit import Receiver, StartNotifier, World, metric, verify_webhook

from roomcast.testing.polling import eventually

CRM_SECRET = "crm-secret-0123456789abcdef"
DOWN_SECRET = "down-secret-0123456789abcdef"


async def test_webhooks_are_signed_filtered_retried_and_dead_lettered(
    world: World,
    receiver: Receiver,
    notifier_env: Callable[..., dict[str, str]],
    start_notifier: StartNotifier,
) -> None:
    hooks = [
        {
            "name": "crm",
            "url": receiver.url + "/crm",
            "secret": CRM_SECRET,
            "events": ["notification.dm"],
        },
        {"name": "down", "url": receiver.url + "/down", "secret": DOWN_SECRET},
    ]
    # The CRM fails twice then takes it; "down" never answers 2xx.
    receiver.status_for = lambda path, n: 200 if path == "/crm" and n >= 3 else 500
    _, base = await start_notifier(
        notifier_env(
            webhooks=orjson.dumps(hooks).decode(),
            webhook_max_attempts="3",
            webhook_backoff_first_seconds="0.3",
        )
    )
    alice, bob, carol = (
        await world.user("alice"),
        await world.user("bob"),
        await world.user("carol"),
    )
    dm = await world.dm(alice, bob)
    room = await world.room(alice, carol)
    (dm_seq,) = await world.publish(dm, world.record(dm, alice, "for the crm"))
    await world.publish(room, world.record(room, alice, "hi carol", mentions=[carol.id]))

    async def crm_delivered() -> bool:
        return (
            await metric(
                base,
                "roomcast_notifier_webhook_attempts_total",
                endpoint="crm",
                outcome="delivered",
            )
            == 1
        )

    await eventually(crm_delivered, "the third attempt at the CRM")
    attempts = await asyncio.to_thread(receiver.received, "/crm")
    assert len(attempts) == 3  # the mention was filtered out: only notification.dm
    assert {a.headers["Roomcast-Delivery"] for a in attempts} == {f"crm:{dm_seq}:{bob.id}"}
    for a in attempts:
        assert verify_webhook(CRM_SECRET.encode(), a.headers["Roomcast-Signature"], a.body)
        assert not verify_webhook(DOWN_SECRET.encode(), a.headers["Roomcast-Signature"], a.body)
        assert a.headers["Roomcast-Event"] == "notification.dm"
    event = orjson.loads(attempts[0].body)
    assert event["type"] == "notification.dm"
    assert event["data"]["user"] == bob.id
    assert event["data"]["seq"] == dm_seq
    assert event["data"]["preview"] == "for the crm"
    # Backoff doubles: 0.3 s, then 0.6 s.
    assert attempts[1].at - attempts[0].at >= 0.3
    assert attempts[2].at - attempts[1].at >= 0.6

    async def down_dead() -> bool:
        return (
            await metric(base, "roomcast_notifier_webhook_dead_letters_total", endpoint="down") == 2
        )

    await eventually(down_dead, "both deliveries to the failing endpoint dead-lettered")
    down = receiver.received("/down")
    assert len(down) == 6  # two events (DM and mention), three attempts each, no fourth
    assert {a.headers["Roomcast-Event"] for a in down} == {
        "notification.dm",
        "notification.mention",
    }
    assert await metric(base, "roomcast_notifier_webhook_dead_letters_total", endpoint="crm") == 0
