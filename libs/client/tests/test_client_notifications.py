"""The SDK's inbox and Web Push calls against a real stack (nats-server, SecantusDB,
auth, rooms, history, two gateways and the notifier as processes on free ports): DMs
sent through one gateway show up in the other member's inbox read through the other,
page by page, and marking them read moves the unread count."""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from roomcast.client import (
    BadRequest,
    NotificationPage,
    PushSubscriptionJSON,
    RoomcastHttp,
    Unauthorized,
    connect,
)
from roomcast.testing.stack import Stack, StackPorts

PASSWORD = "correct horse battery staple"
# A DM reaches the inbox through JetStream and the notifier's batch; generous for a
# loaded 2-core machine, and only an upper bound (the condition is polled).
INBOX_DEADLINE_SECONDS = 30.0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(
        Path(tempfile.mkdtemp(prefix="roomcast-client-")),
        StackPorts.free(),
        bcrypt_cost=4,
        extra_env={
            "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
        },
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def users(stack: Stack) -> AsyncIterator[Callable[[str, str], Awaitable[RoomcastHttp]]]:
    made: list[RoomcastHttp] = []

    async def make(base_url: str, prefix: str) -> RoomcastHttp:
        http = RoomcastHttp(base_url)
        made.append(http)
        username = f"{prefix}{uuid.uuid4().hex[:10]}"
        await http.register(username, PASSWORD)
        await http.login(username, PASSWORD)
        return http

    yield make
    for http in made:
        await http.aclose()


async def inbox_with(http: RoomcastHttp, count: int) -> NotificationPage:
    """Poll the inbox (another process's state: no event to wait on) until it holds
    ``count`` notifications."""
    deadline = time.monotonic() + INBOX_DEADLINE_SECONDS
    while True:
        page = await http.notifications(limit=100)
        if len(page["items"]) >= count or time.monotonic() > deadline:
            return page
        await asyncio.sleep(0.2)


def browser_subscription(endpoint: str) -> PushSubscriptionJSON:
    """What ``PushSubscription.toJSON()`` gives: a P-256 public point and 16 auth bytes."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": b64(point), "auth": b64(b"0123456789abcdef")},
    }


async def test_client_dms_arrive_in_the_inbox_pages_and_mark_read(
    stack: Stack, users: Callable[[str, str], Awaitable[RoomcastHttp]]
) -> None:
    url_a, url_b = stack.gateway_urls
    alice, bob = await users(url_a, "ali"), await users(url_b, "bob")
    assert bob.user is not None
    assert alice.user is not None
    room = await alice.open_dm(bob.user["id"])
    sock = await connect([url_a], alice.access_token_provider)
    try:
        acks = [await sock.send(room["id"], f"note {i}") for i in range(3)]
    finally:
        await sock.close()

    page = await inbox_with(bob, 3)
    assert [n["seq"] for n in page["items"]] == [a.seq for a in reversed(acks)]
    newest = page["items"][0]
    assert newest["kind"] == "dm"
    assert newest["room"] == room["id"]
    assert newest["preview"] == "note 2"
    assert newest["sender"]["id"] == alice.user["id"]
    assert not newest["read"]
    assert page["unread"] == 3
    assert page["next_cursor"] is None
    assert (await alice.notifications())["items"] == []  # nobody is told of their own

    first = await bob.notifications(limit=2)
    assert [n["seq"] for n in first["items"]] == [acks[2].seq, acks[1].seq]
    assert first["next_cursor"] is not None
    rest = await bob.notifications(cursor=first["next_cursor"], limit=2)
    assert [n["seq"] for n in rest["items"]] == [acks[0].seq]
    assert rest["next_cursor"] is None

    state = await bob.mark_notifications_read(acks[1].seq)
    assert state == {"read_up_to": acks[1].seq, "unread": 1}
    assert (await bob.mark_notifications_read(acks[0].seq))["read_up_to"] == acks[1].seq
    after = await bob.notifications()
    assert [n["read"] for n in after["items"]] == [False, True, True]
    assert after["unread"] == 1


async def test_client_push_subscriptions_register_replace_and_unregister(
    stack: Stack, users: Callable[[str, str], Awaitable[RoomcastHttp]]
) -> None:
    carol = await users(stack.gateway_urls[0], "car")
    key = await carol.push_vapid_key()
    # The applicationServerKey: an uncompressed P-256 point, base64url without padding.
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 65

    endpoint = f"https://fcm.googleapis.com/fcm/send/{uuid.uuid4().hex}"
    first = await carol.register_push(browser_subscription(endpoint))
    again = await carol.register_push(browser_subscription(endpoint))
    assert first["endpoint"] == endpoint
    assert again["id"] == first["id"]
    await carol.unregister_push(endpoint)
    await carol.unregister_push(endpoint)  # already gone: still fine

    with pytest.raises(BadRequest) as refused:
        await carol.register_push(browser_subscription("https://internal.example/hook"))
    assert refused.value.code == "invalid_subscription"
    with pytest.raises(BadRequest):
        await carol.mark_notifications_read(-1)
    anonymous = RoomcastHttp(stack.gateway_urls[1])
    try:
        with pytest.raises(Unauthorized):
            await anonymous.notifications()
    finally:
        await anonymous.aclose()
