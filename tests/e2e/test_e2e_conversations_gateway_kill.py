"""Replies, reactions and file messages survive a gateway's death (issue 17's "nothing
lost or doubled"): three members on two gateways, all clients given both URLs, keep
replying to earlier messages, reacting and unreacting (retrying some reacts with the same
client_id) and sharing files uploaded beforehand, while the gateway two of them are on is
killed (SIGKILL, or drained with SIGTERM) with replies and file sends in flight on it.
Checked from what each client received, live
and resumed, and from history: every acked record once, one order for all members,
reply_to and reply_count, reaction aggregates with ``me``, every shared file downloadable
through the surviving gateway."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import Collector, eventually, new_user, open_socket

from roomcast.client import ApiError, Change, Message, Reaction, RoomcastHttp, RoomcastSocket
from roomcast.testing.stack import Stack

# 10 operations/s per socket: half the gateway's 20 frames/s per connection, leaving room
# for the same-client_id retries and the SDK's re-sends after the reconnect.
OP_INTERVAL_SECONDS = 1 / 10
# Operations per member: at 10/s, about 5 s of flow, long enough to kill a gateway in it.
OPS_PER_MEMBER = 45
# Single code point emoji: the reaction rules are tested elsewhere; four of them keep
# the per-message set small and make the same (user, message, emoji) recur.
EMOJI = ("👍", "🎉", "😂", "🔥")
# The kill comes once this many chain records reached the watcher: mid-flow.
KILL_AFTER_RECORDS = 40
# Replies each member on the dying gateway puts on the wire just before the kill (with
# one file send): in flight when it dies, so their fate is only known after the resume.
# Well under the gateway's burst of 40 frames.
IN_FLIGHT_REPLIES = 4


def uid(http: RoomcastHttp) -> str:
    assert http.user is not None
    return str(http.user["id"])


def on(sock: RoomcastSocket, gateway_url: str) -> bool:
    """The socket is connected to that gateway (same host and port)."""
    host_port = gateway_url.split("://", 1)[1]
    return sock.url is not None and sock.url.split("://", 1)[1].startswith(host_port + "/")


@dataclass
class Ledger:
    """What the gateways acknowledged, in ack order: the truth the test checks against."""

    messages: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> sent facts
    reactions: set[int] = field(default_factory=set)  # seqs of react/unreact records
    on: dict[tuple[str, int, str], bool] = field(default_factory=dict)  # (user, target, emoji)
    retries: int = 0

    def seqs(self) -> set[int]:
        return set(self.messages) | self.reactions

    def reply_counts(self) -> Counter[int]:
        return Counter(m["reply_to"] for m in self.messages.values() if m["reply_to"])

    def aggregate(self, target: int, viewer: str) -> dict[str, tuple[int, bool]]:
        """{emoji: (count, me)} of a message as ``viewer`` should see it in history."""
        users: dict[str, set[str]] = {}
        for (user, seq, emoji), present in self.on.items():
            if seq == target and present:
                users.setdefault(emoji, set()).add(user)
        return {emoji: (len(who), viewer in who) for emoji, who in users.items()}


async def _member_flow(
    sock: RoomcastSocket,
    user: str,
    room: str,
    files: list[dict[str, Any]],
    ledger: Ledger,
    rng: random.Random,
) -> None:
    """One member's flow: replies to earlier messages, reacts/unreacts on them (some
    reacts retried with the same client_id), and the member's files shared along the way."""
    share_at = {OPS_PER_MEMBER * (i + 1) // (len(files) + 1): f for i, f in enumerate(files)}
    for step in range(OPS_PER_MEMBER):
        targets = sorted(ledger.messages)
        if step in share_at:
            file = share_at[step]
            ack = await sock.send_file(room, file["id"], caption=f"{user[:6]} {step}")
            ledger.messages[ack.seq] = {"reply_to": None, "file": file, "sender": user}
        elif rng.random() < 0.4:
            parent = rng.choice(targets)
            ack = await sock.send(room, f"re {parent} #{step}", reply_to=parent)
            ledger.messages[ack.seq] = {"reply_to": parent, "file": None, "sender": user}
        else:
            target, emoji = rng.choice(targets), rng.choice(EMOJI)
            present = ledger.on.get((user, target, emoji), False)
            cid = uuid.uuid4().hex
            if present:
                ack = await sock.unreact(room, target, emoji, client_id=cid)
            else:
                ack = await sock.react(room, target, emoji, client_id=cid)
                if rng.random() < 0.5:
                    # the caller's own retry (a lost ack, a crash): stored once
                    again = await sock.react(room, target, emoji, client_id=cid)
                    assert again.seq == ack.seq, (again, ack)
                    ledger.retries += 1
            ledger.reactions.add(ack.seq)
            ledger.on[(user, target, emoji)] = not present
        await asyncio.sleep(OP_INTERVAL_SECONDS)


def _chain(collector: Collector, room: str) -> list[Any]:
    """The stored records a client received for the room, in arrival order."""
    return [
        i
        for i in collector.items
        if isinstance(i, Message | Reaction | Change) and getattr(i, "room", None) == room
    ]


async def _history(http: RoomcastHttp, room: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    before = None
    while True:
        page = await http.messages(room, before=before, limit=100)
        items += page["items"]
        before = page["next_before"]
        if before is None:
            return items


def _reactions_of(item: dict[str, Any]) -> dict[str, tuple[int, bool]]:
    return {r["emoji"]: (r["count"], r["me"]) for r in item.get("reactions") or []}


async def _conversation_through_gateway_loss(
    e2e_stack: Stack, tmp_path: Path, how: signal.Signals
) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    # REST through the gateway that survives; the sockets are what the kill moves.
    alice, bob, carol = (
        await new_user(url_b, "alice"),
        await new_user(url_b, "bob"),
        await new_user(url_b, "carol"),
    )
    people = {uid(h): h for h in (alice, bob, carol)}
    socks: list[RoomcastSocket] = []
    try:
        room = (await alice.create_room("survivors", visibility="public"))["id"]
        await bob.join_room(room)
        await carol.join_room(room)
        # Files uploaded before the flow, shared during it: two by alice, one each other;
        # and one each for alice and carol to share just before the kill.
        uploads: dict[str, list[dict[str, Any]]] = {}
        contents: dict[str, bytes] = {}
        for http, count in ((alice, 3), (bob, 1), (carol, 2)):
            for n in range(count):
                data = os.urandom(20_000 + n)
                path = tmp_path / f"{uid(http)}-{n}.bin"
                path.write_bytes(data)
                meta = await http.upload_file(room, path)
                uploads.setdefault(uid(http), []).append(meta)
                contents[meta["id"]] = data

        # alice and carol on A (the one that dies), bob on B; every client knows both.
        sa, ca = await open_socket([url_a, url_b], alice)
        sb, cb = await open_socket([url_b, url_a], bob)
        sc, cc = await open_socket([url_a, url_b], carol)
        socks = [sa, sb, sc]
        clients = {uid(alice): (sa, ca), uid(bob): (sb, cb), uid(carol): (sc, cc)}
        assert on(sa, url_a)
        assert on(sc, url_a)
        assert on(sb, url_b)
        for sock in socks:
            await sock.subscribe(room)

        ledger = Ledger()
        for user, (sock, _) in clients.items():
            ack = await sock.send(room, f"hello from {user}")
            ledger.messages[ack.seq] = {"reply_to": None, "file": None, "sender": user}

        last_files = {uid(h): uploads[uid(h)].pop() for h in (alice, carol)}
        rngs = {user: random.Random(f"{how.name}-{n}") for n, user in enumerate(clients)}
        flows = asyncio.gather(
            *(
                _member_flow(sock, user, room, uploads[user], ledger, rngs[user])
                for user, (sock, _) in clients.items()
            )
        )
        await cb.wait_for(lambda: len(_chain(cb, room)) >= KILL_AFTER_RECORDS, "flow started")
        gateway_a = e2e_stack.services["gateway-a"]
        in_flight: list[tuple[str, int | None, dict[str, Any] | None, asyncio.Future[Any]]] = []
        for user in last_files:
            sock = clients[user][0]
            for k in range(IN_FLIGHT_REPLIES):
                parent = sorted(ledger.messages)[-1 - k]
                in_flight.append(
                    (user, parent, None, sock.send_future(room, f"last {k}", reply_to=parent))
                )
            file = last_files[user]
            in_flight.append(
                (user, None, file, asyncio.ensure_future(sock.send_file(room, file["id"])))
            )
        await asyncio.sleep(0)  # one turn of the loop: the file sends' frames go out too
        if how is signal.SIGKILL:
            gateway_a.kill()
        else:
            gateway_a.signal(how)
            assert gateway_a.wait(30) == 0, gateway_a.log_tail()
        try:
            async with asyncio.timeout(90):
                await flows
                for user, reply_to, shared_file, future in in_flight:
                    ack = await future
                    ledger.messages[ack.seq] = {
                        "reply_to": reply_to,
                        "file": shared_file,
                        "sender": user,
                    }
        except TimeoutError:
            raise AssertionError(f"flow stalled: {[s.stats.as_dict() for s in socks]}") from None
        assert ledger.retries > 0
        # The kill caught sends in flight (what this test is about): re-sent after the
        # reconnect, or found stored by the resume.
        assert sum(s.stats.retried_sends + s.stats.confirmed_by_resume for s in (sa, sc)) > 0
        assert sum(1 for m in ledger.messages.values() if m["file"]) == len(contents)
        acked = ledger.seqs()
        assert len(acked) == 3 + 3 * OPS_PER_MEMBER + 2 * (IN_FLIGHT_REPLIES + 1)

        # Live + resumed: each member got every acked record once, nothing else, in one
        # order shared by all members.
        orders = []
        for user, (sock, collector) in clients.items():

            def complete(c: Collector = collector) -> bool:
                return {i.seq for i in _chain(c, room)} >= acked

            await collector.wait_for(complete, f"every acked record reaches {user}")
            seqs = [i.seq for i in _chain(collector, room)]
            assert len(seqs) == len(set(seqs)), "a record arrived twice"
            assert set(seqs) == acked, "a record nobody acked, or one lost"
            assert seqs == sorted(seqs), "order broken across the resume"
            orders.append(seqs)
            assert sock.stats.gaps == 0
            assert sock.stats.truncated_resumes == 0
            for item in _chain(collector, room):
                if isinstance(item, Message):
                    sent = ledger.messages[item.seq]
                    assert item.reply_to == sent["reply_to"], item
                    if sent["file"] is not None:
                        assert item.body["type"] == "file"
                        assert item.body["file"] == sent["file"]
                elif isinstance(item, Reaction):
                    assert item.seq in ledger.reactions
                    assert item.target_seq in ledger.messages
        assert orders[0] == orders[1] == orders[2]
        assert sa.stats.reconnects >= 1
        assert sc.stats.reconnects >= 1
        assert on(sa, url_b)
        assert on(sc, url_b)
        if how is signal.SIGTERM:
            assert 1012 in sa.stats.close_codes

        # History: every acked message once, newest first, with reply_to, reply_count
        # and the reaction aggregates each member should see.
        replies = ledger.reply_counts()

        def expected(viewer: str) -> list[tuple[int, Any, int, dict[str, tuple[int, bool]]]]:
            return [
                (seq, m["reply_to"], replies.get(seq, 0), ledger.aggregate(seq, viewer))
                for seq, m in sorted(ledger.messages.items(), reverse=True)
            ]

        def seen(items: list[dict[str, Any]]) -> list[tuple[int, Any, int, Any]]:
            return [
                (
                    int(i["seq"]),
                    i.get("reply_to"),
                    i.get("reply_count", 0),
                    _reactions_of(i),
                )
                for i in items
            ]

        async def stored() -> bool:
            return seen(await _history(bob, room)) == expected(uid(bob))

        await eventually(stored, "history to hold every acked reply, reaction and file")
        for user, http in people.items():
            assert seen(await _history(http, room)) == expected(user)
        parent = replies.most_common(1)[0][0]
        thread = await carol.replies(room, parent)
        want = sorted((s for s, m in ledger.messages.items() if m["reply_to"] == parent))
        assert thread["next_before"] is None
        assert [int(i["seq"]) for i in thread["items"]] == want[::-1]

        # Every shared file, downloaded by a member who did not upload it, through B.
        shared = [(m["sender"], m["file"]) for m in ledger.messages.values() if m["file"]]
        assert {meta["id"] for _, meta in shared} == set(contents)
        for owner, meta in shared:
            reader = next(h for u, h in people.items() if u != owner)

            async def downloaded(file_id: str = meta["id"], http: Any = reader) -> bool:
                try:
                    return bool(await http.download_file(file_id) == contents[file_id])
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    return False

            await eventually(downloaded, f"file {meta['id']} downloadable through B")
    finally:
        for sock in socks:
            await sock.close()
        for http in (alice, bob, carol):
            await http.aclose()
        e2e_stack.restart("gateway-a")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_replies_reactions_files_survive_a_gateway_loss(
    e2e_stack: Stack, tmp_path: Path, how: signal.Signals
) -> None:
    await _conversation_through_gateway_loss(e2e_stack, tmp_path, how)
