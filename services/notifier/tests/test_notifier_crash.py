"""kill -9 of the notifier while records flow: after a restart every notification is
in the inbox exactly once, and every webhook delivery reached the receiver."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import orjson
from notifier_testkit import Receiver, StartNotifier, World
from pymongo import AsyncMongoClient

from roomcast.testing.polling import eventually
from roomcast.testing.stack import Stack

RECORDS = 400
# The kill comes once this many notifications are stored: well into the stream, with
# most of its records still to go.
KILL_AFTER = 60
SECRET = "crash-secret-0123456789abcdef"


async def test_kill_9_mid_stream_loses_and_doubles_nothing(
    stack: Stack,
    world: World,
    receiver: Receiver,
    notifier_env: Callable[..., dict[str, str]],
    start_notifier: StartNotifier,
) -> None:
    receiver.status_for = lambda path, n: 200
    hooks = [{"name": "sink", "url": receiver.url + "/sink", "secret": SECRET}]
    # A short ack timeout: the batch the killed process held comes back in 2 s.
    env = notifier_env(ack_wait_seconds="2", batch_size="20", webhooks=orjson.dumps(hooks).decode())
    first, _ = await start_notifier(env)
    alice, bob = await world.user("alice"), await world.user("bob")
    dm = await world.dm(alice, bob)
    assert stack.mongo is not None
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo.url)
    notifications = mongo[env["ROOMCAST_NOTIFIER_MONGO_DB"]].notifications
    sent: dict[str, list[int]] = {alice.id: [], bob.id: []}
    killed_at = -1

    async def some_stored() -> bool:
        return await notifications.count_documents({}) >= KILL_AFTER

    async def kill_first() -> int:
        first.signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
        return await notifications.count_documents({})

    try:
        for start in range(0, RECORDS, 20):
            records = []
            for i in range(start, start + 20):
                author = alice if i % 2 == 0 else bob
                records.append((author, world.record(dm, author, f"m{i}")))
            seqs = await world.publish(dm, *(r for _, r in records))
            for (author, _), seq in zip(records, seqs, strict=True):
                sent[author.id].append(seq)
            if killed_at < 0 and await some_stored():
                killed_at = await kill_first()
        if killed_at < 0:
            # A slow machine: publishing outran the notifier, which has stored fewer
            # than KILL_AFTER so far; the rest of the records still wait in the stream.
            await eventually(some_stored, f"{KILL_AFTER} notifications before the kill", poll=0.01)
            killed_at = await kill_first()
        assert KILL_AFTER <= killed_at < RECORDS, "the kill must happen while records flow"
        await start_notifier(env)

        async def all_in() -> bool:
            return await notifications.count_documents({}) >= RECORDS

        await eventually(all_in, "every notification after the restart")
        # The other member is notified of each message, exactly once.
        for reader, author in ((bob.id, alice.id), (alice.id, bob.id)):
            docs = [d async for d in notifications.find({"user": reader}, {"seq": 1})]
            assert sorted(d["seq"] for d in docs) == sorted(sent[author])
        assert await notifications.count_documents({}) == RECORDS

        async def all_delivered() -> bool:
            ids = {r.headers["Roomcast-Delivery"] for r in receiver.received("/sink")}
            return len(ids) >= RECORDS

        await eventually(all_delivered, "every webhook delivery")
        ids = [r.headers["Roomcast-Delivery"] for r in receiver.received("/sink")]
        expected = {f"sink:{s}:{bob.id}" for s in sent[alice.id]} | {
            f"sink:{s}:{alice.id}" for s in sent[bob.id]
        }
        assert set(ids) == expected
    finally:
        await mongo.close()
