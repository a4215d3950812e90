"""A notifier whose service account is registered but not listed as a service reader
in auth: rooms would answer "not found" for every DM and private room. The notifier
must not take that for "nobody to notify": it holds the records unacknowledged, says
why in its log, and a correctly configured notifier on the same consumer notifies."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from notifier_testkit import SERVICE_PASSWORD, StartNotifier, World, inbox

from roomcast.testing.polling import eventually


async def test_an_unlisted_service_account_holds_records_until_one_with_the_role_takes_them(
    world: World, notifier_env: Callable[..., dict[str, str]], start_notifier: StartNotifier
) -> None:
    # A short ack timeout: the record the first notifier held comes back in 2 s.
    env = notifier_env(ack_wait_seconds="2")
    unlisted = {
        **env,
        # Registered by the notifier itself, but not in auth's service-reader list.
        "ROOMCAST_NOTIFIER_SERVICE_USERNAME": f"unlisted{uuid.uuid4().hex[:8]}",
        "ROOMCAST_NOTIFIER_SERVICE_PASSWORD": SERVICE_PASSWORD,
    }
    first, base = await start_notifier(unlisted)
    alice, bob = await world.user("alice"), await world.user("bob")
    dm = await world.dm(alice, bob)
    [seq] = await world.publish(dm, world.record(dm, alice, "are you there?"))

    async def refused_in_log() -> bool:
        return "lacks the service-reader role" in first.log_path.read_text(errors="replace")

    await eventually(refused_in_log, "the notifier's log naming the missing role")
    assert (await inbox(base, bob))["items"] == []
    await asyncio.to_thread(first.stop)

    # The operator lists the account (here: the listed one on the same consumer and
    # database): the held record is notified, once.
    _, base = await start_notifier(env)

    async def bob_notified() -> bool:
        return len((await inbox(base, bob))["items"]) >= 1

    await eventually(bob_notified, "bob's DM notification after the fix")
    assert [n["seq"] for n in (await inbox(base, bob))["items"]] == [seq]
