"""The coalescing JetStream publisher against a real nats-server: every publish answered
with its own ack, nothing lost, one key's messages stored in publish order, and every
failure (no ack, a rejection, a dropped or re-established connection) an error within a
bound, never a hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig

from roomcast.common.jspublisher import (
    SWEEP_INTERVAL_SECONDS,
    Ack,
    AckTimeout,
    ConnectionLost,
    EarlierPublishFailed,
    JetStreamPublisher,
    PublishRejected,
    TooManyInFlight,
)
from roomcast.testing.processes import NatsServer

STREAM = "PUBTEST"
SUBJECT = "pubtest.room."
# A subject a plain subscriber receives and never answers: the ack never comes.
SILENT = "silent.sink"
# Ack timeout of the publishers under test: long enough for a loaded 2-core machine to
# answer hundreds of publishes, short enough to test expiry quickly.
ACK_TIMEOUT_SECONDS = 5.0
SHORT_TIMEOUT_SECONDS = 0.5
# How long any one test waits for an outcome before declaring a hang.
HANG_SECONDS = 10.0
# nats-py's retry interval after the server went away.
RECONNECT_WAIT_SECONDS = 0.2
# JetStream's error code for a publish whose Nats-Expected-Stream names another stream.
STREAM_NOT_MATCH = 10060


async def _connect(url: str) -> NatsClient:
    return await nats.connect(
        url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT_SECONDS,
        allow_reconnect=True,
    )


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await _connect(nats_url)
    await client.jetstream().add_stream(
        StreamConfig(name=STREAM, subjects=[SUBJECT + "*"], storage=StorageType.FILE)
    )
    yield client
    await client.close()


@pytest.fixture
async def publisher(nc: NatsClient) -> AsyncIterator[JetStreamPublisher]:
    pub = JetStreamPublisher(nc, timeout=ACK_TIMEOUT_SECONDS)
    await pub.start()
    yield pub
    await pub.close()


async def _stored(nc: NatsClient) -> list[tuple[int, str, bytes]]:
    """(seq, subject, data) of every message in the stream, oldest first."""
    js = nc.jetstream()
    last = (await js.stream_info(STREAM)).state.last_seq
    out = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(STREAM, seq=seq)
        out.append((seq, str(msg.subject), msg.data or b""))
    return out


async def test_many_in_flight_each_ack_names_its_own_message_and_nothing_is_lost(
    nc: NatsClient, publisher: JetStreamPublisher
) -> None:
    payloads = [f"message {i}".encode() for i in range(600)]
    futures = [
        publisher.publish(f"{SUBJECT}{i % 7}", p, {"Nats-Msg-Id": f"id-{i}"})
        for i, p in enumerate(payloads)
    ]
    assert publisher.in_flight == 600  # all sent before any ack was awaited
    async with asyncio.timeout(HANG_SECONDS):
        acks = await asyncio.gather(*futures)
    assert publisher.in_flight == 0
    stored = {seq: (subject, data) for seq, subject, data in await _stored(nc)}
    assert len(stored) == 600
    for i, ack in enumerate(acks):
        assert ack.stream == STREAM
        assert not ack.duplicate
        assert stored[ack.seq] == (f"{SUBJECT}{i % 7}", payloads[i])


async def test_one_keys_messages_are_stored_in_publish_order_while_keys_interleave(
    nc: NatsClient, publisher: JetStreamPublisher
) -> None:
    keys, per_key = 12, 40
    order = [(k, n) for n in range(per_key) for k in range(keys)]
    futures = {
        (k, n): publisher.publish(f"{SUBJECT}{k}", f"{k}:{n}".encode(), key=f"socket-{k}")
        for k, n in order
    }
    async with asyncio.timeout(HANG_SECONDS):
        await asyncio.gather(*futures.values())
    seen: dict[int, list[int]] = {k: [] for k in range(keys)}
    for _seq, _subject, data in await _stored(nc):
        k, n = map(int, data.decode().split(":"))
        seen[k].append(n)
    assert seen == {k: list(range(per_key)) for k in range(keys)}
    for k in range(keys):
        seqs = [futures[k, n].result().seq for n in range(per_key)]
        assert seqs == sorted(seqs)


async def test_a_repeated_message_id_is_acked_as_a_duplicate_of_the_first(
    nc: NatsClient, publisher: JetStreamPublisher
) -> None:
    first = await publisher.publish(f"{SUBJECT}a", b"once", {"Nats-Msg-Id": "same"})
    again = await publisher.publish(f"{SUBJECT}a", b"once", {"Nats-Msg-Id": "same"})
    assert again == Ack(STREAM, first.seq, duplicate=True)
    assert len(await _stored(nc)) == 1


async def test_a_rejection_fails_that_publish_and_the_later_ones_of_its_key(
    nc: NatsClient, publisher: JetStreamPublisher
) -> None:
    wrong = publisher.publish(
        f"{SUBJECT}r", b"a", {"Nats-Expected-Stream": "OTHER"}, key="socket-1"
    )
    later_same_key = publisher.publish(f"{SUBJECT}r", b"b", key="socket-1")
    other_key = publisher.publish(f"{SUBJECT}r", b"c", key="socket-2")
    async with asyncio.timeout(HANG_SECONDS):
        results = await asyncio.gather(wrong, later_same_key, other_key, return_exceptions=True)
    rejected, later, other = results
    assert isinstance(rejected, PublishRejected)
    assert rejected.err_code == STREAM_NOT_MATCH
    assert isinstance(later, EarlierPublishFailed)
    assert isinstance(other, Ack)
    assert [data for _s, _sub, data in await _stored(nc)][-1] == b"c"


async def test_a_subject_no_stream_takes_is_refused_at_once(
    publisher: JetStreamPublisher,
) -> None:
    async with asyncio.timeout(SHORT_TIMEOUT_SECONDS * 4):
        with pytest.raises(PublishRejected, match="no stream"):
            await publisher.publish("nostream.here", b"x")


async def test_a_missing_ack_times_out_and_fails_the_keys_later_publishes(
    nc: NatsClient,
) -> None:
    sink = await nc.subscribe(SILENT)  # receives, never answers
    pub = JetStreamPublisher(nc, timeout=SHORT_TIMEOUT_SECONDS)
    await pub.start()
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        lost = pub.publish(SILENT, b"no answer", key="socket-1")
        after = pub.publish(f"{SUBJECT}t", b"stored", key="socket-1")
        async with asyncio.timeout(HANG_SECONDS):
            results = await asyncio.gather(lost, after, return_exceptions=True)
        assert isinstance(results[0], AckTimeout)
        # Its ack came in time, but it was sent after a publish of its key that failed.
        assert isinstance(results[1], EarlierPublishFailed)
        assert loop.time() - began < SHORT_TIMEOUT_SECONDS + 2 * SWEEP_INTERVAL_SECONDS + 1
        assert pub.in_flight == 0
        # The publisher keeps working.
        assert (await pub.publish(f"{SUBJECT}t", b"next", key="socket-1")).seq > 0
    finally:
        await sink.unsubscribe()
        await pub.close()


async def test_in_flight_publishes_are_bounded(nc: NatsClient) -> None:
    sink = await nc.subscribe(SILENT)
    pub = JetStreamPublisher(nc, timeout=SHORT_TIMEOUT_SECONDS, max_in_flight=2)
    await pub.start()
    try:
        held = [pub.publish(SILENT, b"1"), pub.publish(SILENT, b"2")]
        with pytest.raises(TooManyInFlight):
            pub.publish(SILENT, b"3")
        async with asyncio.timeout(HANG_SECONDS):
            await asyncio.gather(*held, return_exceptions=True)
        assert pub.in_flight == 0
    finally:
        await sink.unsubscribe()
        await pub.close()


async def test_headers_that_would_break_the_header_block_are_refused(
    publisher: JetStreamPublisher,
) -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        publisher.publish(f"{SUBJECT}h", b"x", {"Nats-Msg-Id": "a\r\nNats-Expected-Stream: X"})
    with pytest.raises(ValueError, match="cannot be sent"):
        publisher.publish(f"{SUBJECT}h", b"x", {"Bad Key": "v"})
    # A name already sent once (checked once, then remembered) still has its value checked.
    await publisher.publish(f"{SUBJECT}h", b"x", {"Roomcast-Probe": "fine"})
    with pytest.raises(ValueError, match="cannot be sent"):
        publisher.publish(f"{SUBJECT}h", b"x", {"Roomcast-Probe": "a\nb"})
    assert publisher.in_flight == 0


async def _until(condition: Callable[[], bool], seconds: float) -> None:
    """Poll ``condition`` until it holds; TimeoutError after ``seconds``."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - nats-py state, no event
            await asyncio.sleep(0.02)


async def test_a_server_restart_fails_the_publishes_in_flight_then_publishing_resumes() -> None:
    server = NatsServer()
    server.start()
    nc: NatsClient | None = None
    try:
        nc = await _connect(server.url)
        client = nc
        await nc.jetstream().add_stream(
            StreamConfig(name=STREAM, subjects=[SUBJECT + "*"], storage=StorageType.FILE)
        )
        received = asyncio.Event()

        async def never_answer(_msg: Msg) -> None:
            received.set()

        await nc.subscribe(SILENT, cb=never_answer)
        await nc.flush()
        # A long ack timeout: the failure must come from the lost connection, not expiry.
        pub = JetStreamPublisher(nc, timeout=60.0)
        await pub.start()
        stored = await pub.publish(f"{SUBJECT}x", b"before")
        waiting = pub.publish(SILENT, b"never answered")
        async with asyncio.timeout(HANG_SECONDS):
            await received.wait()
        server.stop()
        async with asyncio.timeout(HANG_SECONDS):
            with pytest.raises(ConnectionLost):
                await waiting
        # While it is down a publish is refused at once, not buffered.
        await _until(lambda: not client.is_connected, HANG_SECONDS)
        with pytest.raises(ConnectionLost):
            pub.publish(f"{SUBJECT}x", b"while down")
        server.start()  # same port and store directory
        await _until(lambda: client.is_connected, HANG_SECONDS * 2)
        async with asyncio.timeout(HANG_SECONDS):
            after = await pub.publish(f"{SUBJECT}x", b"after")
        assert after.seq == stored.seq + 1
        await pub.close()
    finally:
        if nc is not None:
            await nc.close()
        server.cleanup()
