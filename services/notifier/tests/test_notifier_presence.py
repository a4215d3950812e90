"""Through the whole stack (two gateways and the stack's own notifier, reached only
through the gateways' REST API): a DM sent over a socket notifies the other member; a
member whose socket is subscribed to the room on a gateway saw it live and gets no
push, a member without one gets the push."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import http_ece
import httpx
import orjson
import pytest
from e2e_helpers import new_user, open_socket
from notifier_testkit import BrowserKeys, Receiver, metric

from roomcast.client import RoomcastHttp
from roomcast.testing.polling import eventually
from roomcast.testing.stack import NOTIFIER_SERVICE_USER, Stack, StackPorts

# The whole stack's start (up to a minute on a loaded 2-core machine) and its stop count
# against the module's only test.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(
        Path(tempfile.mkdtemp(prefix="roomcast-notifier-e2e-")),
        StackPorts.free(),
        bcrypt_cost=4,
        extra_env={
            "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_SERVICE_READER_USERNAMES": NOTIFIER_SERVICE_USER,
            # The test's push service listens on 127.0.0.1 over plain HTTP.
            "ROOMCAST_NOTIFIER_PUSH_ENDPOINT_HOSTS": "127.0.0.1",
            "ROOMCAST_NOTIFIER_PUSH_ALLOW_HTTP": "true",
            "ROOMCAST_NOTIFIER_PUSH_COALESCE_SECONDS": "1",
        },
    )
    s.start()
    yield s
    s.stop()


def user_id(user: RoomcastHttp) -> str:
    assert user.user is not None
    return user.user["id"]


async def test_a_member_watching_the_room_gets_no_push_and_one_away_does(
    stack: Stack, receiver: Receiver
) -> None:
    base = f"http://127.0.0.1:{stack.ports.notifier}"  # its /metrics only
    gw_a, gw_b = stack.gateway_urls
    alice, bob, carol = [await new_user(gw_a, n) for n in ("alice", "bob", "carol")]
    with_bob = await alice.open_dm(user_id(bob))
    with_carol = await alice.open_dm(user_id(carol))
    keys = {"bob": BrowserKeys(), "carol": BrowserKeys()}
    for name, user in (("bob", bob), ("carol", carol)):
        token = await user.fresh_access_token()
        async with httpx.AsyncClient(base_url=gw_a) as http:
            assert (
                await http.get("/v1/push/vapid-key", headers={"Authorization": f"Bearer {token}"})
            ).json()["key"]
            r = await http.post(
                "/v1/push/subscriptions",
                json=keys[name].subscription(f"{receiver.url}/push/{name}"),
                headers={"Authorization": f"Bearer {token}"},
            )
        assert r.status_code == 201, r.text
    # Bob watches his DM on gateway B; carol has no socket at all.
    bob_socket, bob_seen = await open_socket([gw_b], bob)
    alice_socket, _ = await open_socket([gw_a], alice)
    try:
        await bob_socket.subscribe(with_bob["id"])
        to_bob = await alice_socket.send(with_bob["id"], "are you there?")
        to_carol = await alice_socket.send(with_carol["id"], "and you?")
        await bob_seen.wait_for(lambda: to_bob.seq in bob_seen.seqs(with_bob["id"]), "live")

        async def carol_pushed() -> bool:
            return bool(await asyncio.to_thread(receiver.received, "/push/carol"))

        await eventually(carol_pushed, "carol's push")

        async def bob_skipped() -> bool:
            return (
                await metric(base, "roomcast_notifier_pushes_total", outcome="skipped_online") == 1
            )

        await eventually(bob_skipped, "bob's push skipped: he is online in the room")
    finally:
        await bob_socket.close()
        await alice_socket.close()
    (push,) = receiver.received("/push/carol")
    plain = http_ece.decrypt(
        push.body,
        private_key=keys["carol"].private,
        auth_secret=keys["carol"].auth,
        version="aes128gcm",
    )
    latest = orjson.loads(plain)["latest"]
    assert latest["seq"] == to_carol.seq
    assert latest["sender"]["id"] == user_id(alice)
    assert receiver.received("/push/bob") == []
    # Bob's inbox still has it: the push was skipped, not the notification.
    token = await bob.fresh_access_token()
    async with httpx.AsyncClient(base_url=gw_b) as http:
        page = (
            await http.get("/v1/notifications", headers={"Authorization": f"Bearer {token}"})
        ).json()
    assert [(n["seq"], n["kind"]) for n in page["items"]] == [(to_bob.seq, "dm")]
