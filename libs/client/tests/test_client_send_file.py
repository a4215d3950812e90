"""``send_file`` shares an uploaded file exactly once: against a real stack (nats-server,
SecantusDB, auth, rooms, history and two gateways as processes on free ports).

Alice uploads a file with ``RoomcastHttp.upload_file`` and shares it through gateway A;
Bob, subscribed through gateway B, receives a ``file`` message carrying the file's
metadata (and can download it). Alice's retry with the same ``client_id`` is acked as a
duplicate of the same message; a file id that is not the sender's upload into that room
is refused with ``file_not_found`` (docs/protocol.md), a malformed id or an oversized
caption with their own codes, and none of them stores anything.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from roomcast.client import (
    Item,
    Message,
    NotFound,
    PayloadTooLarge,
    RequestRejected,
    RoomcastHttp,
    connect,
)
from roomcast.testing import polling
from roomcast.testing.stack import Stack, StackPorts

PASSWORD = "correct horse battery staple"
# A message crosses JetStream to the other gateway in milliseconds; generous for a
# loaded 2-core machine, and only an upper bound (the condition is polled).
WITHIN_SECONDS = 30.0
# Between two looks at in-process state (the socket's items): cheap, so poll often.
LOCAL_POLL_SECONDS = 0.01
CONTENT = b"minutes of the meeting\n" * 100
# The gateway's default limit of a text (ROOMCAST_GATEWAY_MAX_BODY_CHARS), which a
# caption shares.
DEFAULT_MAX_BODY_CHARS = 4000
# The gateway's file limit in this module's stack.
FILES_MAX_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(
        Path(tempfile.mkdtemp(prefix="roomcast-client-files-")),
        StackPorts.free(),
        bcrypt_cost=4,
        extra_env={
            "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
            "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
            # Small, so that a refused upload is much larger than the limit.
            "ROOMCAST_GATEWAY_FILES_MAX_BYTES": str(FILES_MAX_BYTES),
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


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll state this process's tasks update (the socket's items) with a deadline."""

    async def check() -> bool:
        return condition()

    await polling.eventually(check, what, within=WITHIN_SECONDS, poll=LOCAL_POLL_SECONDS)


def messages(items: list[Item], room: str) -> list[Message]:
    return [i for i in items if isinstance(i, Message) and i.room == room]


async def until_downloaded(http: RoomcastHttp, file_id: str, what: str) -> None:
    """history allows a download once it has stored a message sharing the file, which
    follows the live delivery by a moment: poll until the bytes come back."""

    async def downloadable() -> bool:
        try:
            return await http.download_file(file_id) == CONTENT
        except NotFound:
            return False

    await polling.eventually(downloadable, what)


async def test_send_file_is_received_with_its_metadata_stored_once_and_checked(
    stack: Stack,
    users: Callable[[str, str], Awaitable[RoomcastHttp]],
    tmp_path: Path,
) -> None:
    gateway_a, gateway_b = stack.gateway_urls[:2]
    alice = await users(gateway_a, "ali")
    bob = await users(gateway_b, "bob")
    room = (await alice.create_room("files", visibility="public"))["id"]
    elsewhere = (await alice.create_room("other files", visibility="public"))["id"]
    await bob.join_room(room)
    path = tmp_path / "minutes.txt"
    path.write_bytes(CONTENT)
    uploaded = await alice.upload_file(room, path, content_type="text/plain")
    assert uploaded["size"] == len(CONTENT)
    assert uploaded["sha256"] == hashlib.sha256(CONTENT).hexdigest()

    received: list[Item] = []
    bob_sock = await connect([gateway_b], bob.access_token_provider, on_item=received.append)
    alice_sock = await connect([gateway_a], alice.access_token_provider)
    try:
        await bob_sock.subscribe(room)
        await alice_sock.subscribe(room)
        parent = await alice_sock.send(room, "the minutes, as promised:")
        client_id = f"file-{uuid.uuid4().hex}"
        ack = await alice_sock.send_file(
            room,
            uploaded["id"],
            caption="meeting minutes",
            client_id=client_id,
            reply_to=parent.seq,
        )
        assert (ack.client_id, ack.duplicate) == (client_id, False)
        assert ack.seq > parent.seq

        await until(lambda: any(m.seq == ack.seq for m in messages(received, room)), "bob's copy")
        shared = next(m for m in messages(received, room) if m.seq == ack.seq)
        assert shared.id == ack.id
        assert shared.sender.username == (await alice.me())["username"]
        assert shared.reply_to == parent.seq
        assert shared.content is None  # not a text message
        assert shared.body == {
            "type": "file",
            "file": {
                "id": uploaded["id"],
                "name": "minutes.txt",
                "size": len(CONTENT),
                "content_type": "text/plain",
                "sha256": hashlib.sha256(CONTENT).hexdigest(),
            },
            "caption": "meeting minutes",
        }

        await until_downloaded(bob, uploaded["id"], "bob to download the shared file")

        # Alice's own retry (after a crash, say) is the same message, stored once.
        retry = await alice_sock.send_file(
            room,
            uploaded["id"],
            caption="meeting minutes",
            client_id=client_id,
            reply_to=parent.seq,
        )
        assert (retry.id, retry.seq, retry.duplicate) == (ack.id, ack.seq, True)

        # Not the sender's upload into this room: refused, nothing stored.
        other_upload = await alice.upload_file(elsewhere, path)
        bob_path = tmp_path / "bob.txt"
        bob_path.write_bytes(b"bob's own")
        bobs_upload = await bob.upload_file(room, bob_path)
        refusals = [
            (alice_sock, other_upload["id"]),  # alice's, but uploaded into another room
            (bob_sock, uploaded["id"]),  # in this room, but alice's upload, not bob's
            (alice_sock, uuid.uuid4().hex[:24]),  # no such file
        ]
        for sock, file_id in refusals:
            with pytest.raises(RequestRejected) as refused:
                await sock.send_file(room, file_id, caption="not mine")
            assert refused.value.code == "file_not_found"
        malformed = [
            (uploaded["id"], "x" * (DEFAULT_MAX_BODY_CHARS + 1), "payload_too_large"),
            ("not-a-file-id", None, "invalid_request"),
        ]
        for file_id, caption, code in malformed:
            with pytest.raises(RequestRejected) as refused:
                await alice_sock.send_file(room, file_id, caption=caption)
            assert refused.value.code == code

        # Bob's own upload shares fine, and arrives after the one file message.
        last = await bob_sock.send_file(room, bobs_upload["id"])
        await until(
            lambda: any(m.seq == last.seq for m in messages(received, room)), "bob's own file"
        )
        files = [m for m in messages(received, room) if m.body.get("type") == "file"]
        assert [m.seq for m in files] == [ack.seq, last.seq]
        assert files[1].body == {
            "type": "file",
            "file": {
                "id": bobs_upload["id"],
                "name": "bob.txt",
                "size": len(b"bob's own"),
                "content_type": "application/octet-stream",
                "sha256": hashlib.sha256(b"bob's own").hexdigest(),
            },
        }
    finally:
        await alice_sock.close()
        await bob_sock.close()


async def test_a_private_file_reaches_and_opens_for_its_two_people_only(
    stack: Stack,
    users: Callable[[str, str], Awaitable[RoomcastHttp]],
    tmp_path: Path,
) -> None:
    gateway_a, gateway_b = stack.gateway_urls[:2]
    alice = await users(gateway_a, "ali")
    bob = await users(gateway_b, "bob")
    carol = await users(gateway_b, "car")
    room = (await alice.create_room("private files", visibility="public"))["id"]
    await bob.join_room(room)
    await carol.join_room(room)
    path = tmp_path / "for-bob.txt"
    path.write_bytes(CONTENT)
    uploaded = await alice.upload_file(room, path, content_type="text/plain")

    bob_items: list[Item] = []
    carol_items: list[Item] = []
    bob_sock = await connect([gateway_b], bob.access_token_provider, on_item=bob_items.append)
    carol_sock = await connect([gateway_b], carol.access_token_provider, on_item=carol_items.append)
    alice_sock = await connect([gateway_a], alice.access_token_provider)
    try:
        for sock in (bob_sock, carol_sock, alice_sock):
            await sock.subscribe(room)
        bob_id = (await bob.me())["id"]
        ack = await alice_sock.send_file(room, uploaded["id"], caption="just you", to=bob_id)
        after = await alice_sock.send(room, "and this one is for everyone")

        await until(lambda: any(m.seq == ack.seq for m in messages(bob_items, room)), "bob's copy")
        private = next(m for m in messages(bob_items, room) if m.seq == ack.seq)
        assert private.body["file"]["id"] == uploaded["id"]
        assert private.body["caption"] == "just you"
        # Carol's chain moves on past it (a skip) without the message itself.
        await until(
            lambda: any(m.seq == after.seq for m in messages(carol_items, room)), "carol's next"
        )
        assert not any(m.seq == ack.seq for m in messages(carol_items, room))
        assert carol_sock.stats.skips >= 1

        await until_downloaded(bob, uploaded["id"], "bob to download the private file")
        with pytest.raises(NotFound):  # carol cannot see a message sharing it
            await carol.download_file(uploaded["id"])
    finally:
        for sock in (alice_sock, bob_sock, carol_sock):
            await sock.close()


async def test_a_file_over_the_limit_is_refused_with_413_not_a_broken_connection(
    stack: Stack, users: Callable[[str, str], Awaitable[RoomcastHttp]], tmp_path: Path
) -> None:
    """A file far over the limit (more than the sockets' buffers hold): the client
    still reads the gateway's 413 answer, and can go on using its connection."""
    alice = await users(stack.gateway_urls[0], "alice")
    room = await alice.create_room("big files", visibility="public")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (20 * FILES_MAX_BYTES))
    with pytest.raises(PayloadTooLarge) as refused:
        await alice.upload_file(room["id"], big)
    assert refused.value.status == 413
    assert refused.value.code == "file_too_large"
    small = tmp_path / "small.txt"
    small.write_bytes(CONTENT)
    assert (await alice.upload_file(room["id"], small))["size"] == len(CONTENT)
