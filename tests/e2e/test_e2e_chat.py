"""The whole stack, two gateways, through the public contract only: users on different
gateways talk; one order per room; a gateway killed or drained loses nothing."""

from __future__ import annotations

import asyncio
import itertools
import signal

from e2e_helpers import eventually, new_user, open_socket

from roomcast.client import Message
from roomcast.testing.stack import Stack

# 15 sends/s: under the default per-connection limit of 20 frames/s.
SEND_INTERVAL_SECONDS = 1 / 15


async def test_users_on_different_gateways_talk_in_one_order(e2e_stack: Stack) -> None:
    url_a, url_b = e2e_stack.gateway_urls
    alice, bob, carol = (
        await new_user(url_a, "alice"),
        await new_user(url_b, "bob"),
        await new_user(url_a, "carol"),
    )
    room = await alice.create_room("lobby", visibility="public")
    await bob.join_room(room["id"])
    await carol.join_room(room["id"])
    socks = []
    try:
        sa, ca = await open_socket([url_a], alice)
        sb, cb = await open_socket([url_b], bob)
        sc, cc = await open_socket([url_b], carol)
        socks = [sa, sb, sc]
        for sock in socks:
            await sock.subscribe(room["id"])

        # three senders on two gateways at once
        async def burst(sock: object, name: str) -> list[int]:
            acks = await asyncio.gather(
                *(sock.send(room["id"], f"{name}-{i}") for i in range(30))  # type: ignore[attr-defined]
            )
            return [a.seq for a in acks]

        acked = sorted(
            itertools.chain.from_iterable(
                await asyncio.gather(burst(sa, "a"), burst(sb, "b"), burst(sc, "c"))
            )
        )
        assert len(set(acked)) == 90
        for collector in (ca, cb, cc):
            await collector.wait_for(lambda c=collector: len(c.seqs(room["id"])) >= 90, "all 90")
        orders = [c.seqs(room["id"]) for c in (ca, cb, cc)]
        assert orders[0] == orders[1] == orders[2] == acked
        # prev chains without holes, for every member
        for collector in (ca, cb, cc):
            msgs = [m for m in collector.messages if m.room == room["id"]]
            assert [m.prev for m in msgs[1:]] == [m.seq for m in msgs[:-1]]
        for sock in socks:
            assert sock.stats.gaps == 0
            assert sock.stats.duplicates == 0

        # the durable history has every acknowledged message once, newest first
        async def stored() -> list[int]:
            seqs: list[int] = []
            before = None
            while True:
                page = await bob.messages(room["id"], before=before, limit=100)
                seqs += [int(item["seq"]) for item in page["items"]]
                before = page["next_before"]
                if before is None:
                    return seqs

        async def all_stored() -> bool:
            return sorted(await stored()) == acked

        await eventually(all_stored, "history holds every acknowledged message")
        assert await stored() == sorted(acked, reverse=True)
    finally:
        for sock in socks:
            await sock.close()
        for http in (alice, bob, carol):
            await http.aclose()


async def _flow_through_gateway_loss(e2e_stack: Stack, how: signal.Signals) -> None:
    """A sender on gateway A keeps sending while A dies; sender and a reader on A resume
    on B. Count: every acknowledged message reaches the reader once, none twice."""
    url_a, url_b = e2e_stack.gateway_urls
    sender_http = await new_user(url_a, "sender")
    reader_http = await new_user(url_a, "reader")
    room = await sender_http.create_room("resilient", visibility="public")
    await reader_http.join_room(room["id"])
    sender, sent_items = await open_socket([url_a, url_b], sender_http)
    reader, collected = await open_socket([url_a, url_b], reader_http)
    try:
        await sender.subscribe(room["id"])
        await reader.subscribe(room["id"])
        acks: list[int] = []
        total = 90

        async def send_all() -> None:
            # Paced under the gateway's 20 frames/s per connection (the documented limit).
            for i in range(total):
                acks.append((await sender.send(room["id"], f"m{i}")).seq)
                await asyncio.sleep(SEND_INTERVAL_SECONDS)

        sending = asyncio.create_task(send_all())
        await collected.wait_for(lambda: len(collected.messages) >= 15, "flow started")
        gateway_a = e2e_stack.services["gateway-a"]
        if how is signal.SIGKILL:
            gateway_a.kill()
        else:
            gateway_a.signal(how)
            assert gateway_a.wait(30) == 0, gateway_a.log_tail()
        try:
            async with asyncio.timeout(60):
                await sending
        except TimeoutError:
            raise AssertionError(
                f"sends stalled after {len(acks)} acks: sender {sender.stats.as_dict()}, "
                f"reader {reader.stats.as_dict()}, sender items "
                f"{[i for i in sent_items.items if not isinstance(i, Message)]}"
            ) from None
        await collected.wait_for(lambda: len(collected.seqs(room["id"])) >= total, "all acked")
        received = collected.seqs(room["id"])
        assert len(acks) == total
        assert sorted(received) == sorted(set(received)), "a message arrived twice"
        assert set(acks) <= set(received), "an acknowledged message was lost"
        assert received == sorted(received), "order broken across the resume"
        assert reader.stats.gaps == 0
        assert reader.stats.reconnects >= 1
        assert sender.stats.reconnects >= 1
        if how is signal.SIGTERM:
            assert 1012 in reader.stats.close_codes
    finally:
        await sender.close()
        await reader.close()
        await sender_http.aclose()
        await reader_http.aclose()
        e2e_stack.restart("gateway-a")


async def test_kill_9_a_gateway_loses_and_duplicates_nothing(e2e_stack: Stack) -> None:
    await _flow_through_gateway_loss(e2e_stack, signal.SIGKILL)


async def test_sigterm_drain_loses_no_acknowledged_message(e2e_stack: Stack) -> None:
    await _flow_through_gateway_loss(e2e_stack, signal.SIGTERM)
