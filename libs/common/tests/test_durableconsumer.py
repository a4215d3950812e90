"""The shared durable-consumer runner against a real nats-server: every record written
and acknowledged once, a failing write kept assigned (no redelivery) until it works,
SIGTERM (``stop``) finishing the batch in hand or handing it back, an older deploy's
consumer updated or, where it cannot be, used as it is, and the service-main helpers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerInfo, DeliverPolicy
from prometheus_client import REGISTRY

from roomcast.common.chatstream import StreamSettings, ensure_chat_stream
from roomcast.common.durableconsumer import (
    ConsumerOptions,
    DurableConsumer,
    cancel_tasks,
    consumer_lag,
    durable_consumer_config,
    finish_consumer,
    watch_consumer,
)
from roomcast.common.subjects import STREAM_NAME, room_subject
from roomcast.testing.polling import eventually
from roomcast.testing.processes import NatsServer

CONSUMER = "durable-test"
# Named after the connection's service, "durable" (client_name "durable-test").
RECREATED_METRIC = "roomcast_durable_consumer_recreated_total"
# Long enough that nothing in these tests is redelivered by the ack timeout unless the
# runner failed to keep a batch assigned (the retry test waits past a short one).
ACK_WAIT_SECONDS = 30.0
# How long any one outcome may take on a loaded 2-core machine before it is a hang.
DEADLINE_SECONDS = 20.0


class Sink(DurableConsumer[Sequence[Msg]]):
    """A consumer whose store is a dict keyed by stream sequence (an idempotent write,
    like the services'); ``fail`` makes the next writes raise."""

    def __init__(self, options: ConsumerOptions) -> None:
        super().__init__(options)
        self.stored: dict[int, bytes] = {}
        self.deliveries: dict[int, int] = {}
        self.handled: dict[int, int] = {}  # times each stream sequence reached handle
        self.failures_left = 0
        self.write_attempts = 0
        self.failed_writes = 0
        self.lag: int | None = None
        self.in_write = asyncio.Event()
        self.first_write: list[int] = []
        self.release: asyncio.Event | None = None

    def parse(self, msgs: Sequence[Msg]) -> Sequence[Msg]:
        return msgs

    async def handle(self, batch: Sequence[Msg], stop: asyncio.Event) -> None:
        for msg in batch:
            seq = msg.metadata.sequence.stream
            self.deliveries[seq] = max(self.deliveries.get(seq, 0), msg.metadata.num_delivered)
            self.handled[seq] = self.handled.get(seq, 0) + 1
        await self.write_then_ack(batch, lambda: self._write(batch), stop)

    async def _write(self, batch: Sequence[Msg]) -> int:
        self.write_attempts += 1
        if not self.in_write.is_set():
            self.first_write = [m.metadata.sequence.stream for m in batch]
        self.in_write.set()
        if self.release is not None:
            await self.release.wait()
        if self.failures_left != 0:
            self.failures_left -= 1
            raise ConnectionError("store unavailable")
        for msg in batch:
            self.stored[msg.metadata.sequence.stream] = bytes(msg.data)
        return len(batch)

    def write_failed(self, exc: Exception) -> None:
        self.failed_writes += 1

    async def on_progress(self, info: ConsumerInfo) -> None:
        self.lag = consumer_lag(info)


def options(
    nats_url: str,
    *,
    ack_wait_seconds: float = ACK_WAIT_SECONDS,
    prefetch_batches: int = 0,
    shutdown_grace_seconds: float = 1.0,
) -> ConsumerOptions:
    return ConsumerOptions(
        nats_url=nats_url,
        client_name="durable-test",
        config=durable_consumer_config(
            name=CONSUMER,
            description="test",
            ack_wait_seconds=ack_wait_seconds,
            max_ack_pending=64,
        ),
        stream=StreamSettings(),
        batch_size=16,
        fetch_timeout=0.5,
        shutdown_grace_seconds=shutdown_grace_seconds,
        prefetch_batches=prefetch_batches,
        progress_poll_seconds=0.1,
    )


@asynccontextmanager
async def running(sink: Sink) -> AsyncIterator[tuple[asyncio.Event, asyncio.Task[None]]]:
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        yield stop, task
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_SECONDS)
        await sink.close()


async def publish(nats_url: str, count: int, *, room: str = "r1") -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()

        async def stream_exists() -> bool:
            try:
                await js.stream_info(STREAM_NAME)
            except Exception:
                return False
            return True

        await eventually(stream_exists, "the runner creating CHAT", within=DEADLINE_SECONDS)
        for i in range(count):
            await js.publish(room_subject(room), f"record {i}".encode())
    finally:
        await nc.close()


async def consumer_info(nats_url: str) -> ConsumerInfo:
    nc = await nats.connect(nats_url)
    try:
        info: ConsumerInfo = await nc.jetstream().consumer_info(STREAM_NAME, CONSUMER)
        return info
    finally:
        await nc.close()


@pytest.mark.parametrize("prefetch", [0, 2])
async def test_every_record_is_written_and_acknowledged_once(nats_url: str, prefetch: int) -> None:
    sink = Sink(options(nats_url, prefetch_batches=prefetch))
    async with running(sink):
        await publish(nats_url, 100)

        async def all_stored() -> bool:
            return len(sink.stored) == 100 and sink.lag == 0

        await eventually(all_stored, "100 records stored and acked", within=DEADLINE_SECONDS)
        info = await consumer_info(nats_url)
    assert sorted(sink.stored) == list(range(1, 101))
    assert sink.stored[1] == b"record 0"
    assert set(sink.deliveries.values()) == {1}
    assert info.config.durable_name == CONSUMER
    assert info.config.max_ack_pending == 64
    assert info.config.ack_wait == ACK_WAIT_SECONDS
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_a_failing_write_is_retried_and_the_batch_stays_assigned(nats_url: str) -> None:
    # The retries (0.2 + 0.4 + 0.8 + 1.6 s) outlast ack_wait: without in-progress acks
    # the server would redeliver the batch meanwhile. (Each pause must stay under it:
    # in-progress resets the timer, it does not stop it.)
    sink = Sink(options(nats_url, ack_wait_seconds=2.0))
    sink.failures_left = 4
    async with running(sink):
        await publish(nats_url, 5)

        async def all_stored() -> bool:
            return len(sink.stored) == 5 and sink.lag == 0

        await eventually(all_stored, "the batch stored after the outage", within=DEADLINE_SECONDS)
    assert sink.failed_writes == 4
    assert set(sink.deliveries.values()) == {1}, "the batch was redelivered while retried"


async def test_stop_finishes_the_batch_in_hand(nats_url: str) -> None:
    sink = Sink(options(nats_url))
    sink.release = asyncio.Event()
    async with running(sink) as (stop, task):
        await publish(nats_url, 3)
        await asyncio.wait_for(sink.in_write.wait(), DEADLINE_SECONDS)
        stop.set()
        sink.release.set()
        await asyncio.wait_for(task, DEADLINE_SECONDS)
    # The batch in hand was written and acknowledged; nothing else was taken.
    assert sink.first_write
    assert sorted(sink.stored) == sink.first_write
    info = await consumer_info(nats_url)
    assert info.num_ack_pending == 0
    assert info.num_pending == 3 - len(sink.first_write)


async def test_stop_with_the_store_down_hands_the_batch_back_at_once(nats_url: str) -> None:
    down = Sink(options(nats_url, shutdown_grace_seconds=0.5))
    down.failures_left = -1  # never works
    async with running(down) as (stop, task):
        await publish(nats_url, 4)
        await asyncio.wait_for(down.in_write.wait(), DEADLINE_SECONDS)
        stop.set()
        await asyncio.wait_for(task, DEADLINE_SECONDS)
    assert down.stored == {}
    # Handed back with a nak: another replica gets it now, not after ack_wait (30 s).
    started = time.monotonic()
    up = Sink(options(nats_url))
    async with running(up):

        async def all_stored() -> bool:
            return len(up.stored) == 4

        await eventually(all_stored, "the handed-back batch stored", within=DEADLINE_SECONDS)
    assert time.monotonic() - started < ACK_WAIT_SECONDS
    handed_back = {seq: up.deliveries[seq] for seq in down.first_write}
    assert handed_back == dict.fromkeys(down.first_write, 2)


async def test_an_older_consumer_that_cannot_be_changed_in_place_is_used_as_it_is(
    nats_url: str,
) -> None:
    # An older deploy's consumer with a setting the server cannot edit (where delivery
    # starts): the runner binds to it instead of failing to start.
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_chat_stream(js, StreamSettings(), update=False)
        older = durable_consumer_config(
            name=CONSUMER, description="older", ack_wait_seconds=60.0, max_ack_pending=10
        )
        older.deliver_policy = DeliverPolicy.NEW
        await js.add_consumer(STREAM_NAME, older)
    finally:
        await nc.close()
    sink = Sink(options(nats_url))
    async with running(sink):
        await publish(nats_url, 3)

        async def all_stored() -> bool:
            return len(sink.stored) == 3

        await eventually(all_stored, "records through the older consumer", within=DEADLINE_SECONDS)
    info = await consumer_info(nats_url)
    assert info.config.deliver_policy == DeliverPolicy.NEW


async def test_a_restart_brings_the_consumer_to_the_deployed_limits(nats_url: str) -> None:
    first = Sink(options(nats_url, ack_wait_seconds=60.0))
    async with running(first):
        await publish(nats_url, 1)

        async def stored() -> bool:
            return len(first.stored) == 1

        await eventually(stored, "the first record", within=DEADLINE_SECONDS)
    async with running(Sink(options(nats_url))):

        async def updated() -> bool:
            return (await consumer_info(nats_url)).config.ack_wait == ACK_WAIT_SECONDS

        await eventually(updated, "ack_wait of the new deploy", within=DEADLINE_SECONDS)


async def test_a_consumer_that_ends_unasked_stops_the_service_and_its_crash_is_raised() -> None:
    stop = asyncio.Event()

    async def crashing() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(crashing())
    watch_consumer(task, stop)
    await asyncio.wait_for(stop.wait(), DEADLINE_SECONDS)
    with pytest.raises(RuntimeError, match="boom"):
        await finish_consumer(task, grace_seconds=0.0)


async def test_finish_consumer_gives_up_on_a_stuck_consumer_and_cancel_tasks_ends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from roomcast.common import durableconsumer

    monkeypatch.setattr(durableconsumer, "FINISH_MARGIN_SECONDS", 0.1)

    async def forever() -> None:
        await asyncio.Event().wait()

    stuck = asyncio.create_task(forever())
    await finish_consumer(stuck, grace_seconds=0.1)
    assert not stuck.done()
    await cancel_tasks(stuck)
    assert stuck.cancelled()


@pytest.mark.parametrize("prefetch", [0, 2])
async def test_a_deleted_consumer_is_recreated_and_consumption_resumes(
    nats_url: str, prefetch: int
) -> None:
    # An operator (or a re-created stream) deletes the durable consumer while the
    # service runs: the runner must notice, create it again with its configuration and
    # go on storing what is published afterwards instead of silently stopping.
    recreated = REGISTRY.get_sample_value(RECREATED_METRIC) or 0.0
    sink = Sink(options(nats_url, prefetch_batches=prefetch))
    async with running(sink):
        await publish(nats_url, 5)

        async def first_stored() -> bool:
            return len(sink.stored) == 5 and sink.lag == 0

        await eventually(first_stored, "the first records stored", within=DEADLINE_SECONDS)
        nc = await nats.connect(nats_url)
        try:
            assert await nc.jetstream().delete_consumer(STREAM_NAME, CONSUMER)
        finally:
            await nc.close()
        await publish(nats_url, 5)

        async def all_stored() -> bool:
            return len(sink.stored) == 10

        await eventually(
            all_stored, "records published after the deletion", within=DEADLINE_SECONDS
        )
        info = await consumer_info(nats_url)
    assert sorted(sink.stored) == list(range(1, 11))
    assert sink.stored[10] == b"record 4"
    assert REGISTRY.get_sample_value(RECREATED_METRIC) == recreated + 1
    # The same configuration as before, but starting after the ack floor the info
    # read saw (lag 0: all five acked), so nothing before the deletion came again.
    assert info.config.durable_name == CONSUMER
    assert info.config.ack_wait == ACK_WAIT_SECONDS
    assert info.config.max_ack_pending == 64
    assert info.config.deliver_policy == DeliverPolicy.BY_START_SEQUENCE
    assert info.config.opt_start_seq == 6
    assert sink.handled == dict.fromkeys(range(1, 11), 1)


async def test_nats_down_at_start_is_retried_in_sight_and_consumption_starts_once_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # NATS is not there yet when the service starts: each failed attempt is logged
    # (not retried silently inside the client), and once NATS is up the runner connects
    # and consumes.
    caplog.set_level(logging.WARNING)
    server = NatsServer()
    sink = Sink(options(server.url))
    try:
        async with running(sink):

            async def retried() -> bool:
                return any("cannot connect to NATS" in r.getMessage() for r in caplog.records)

            await eventually(retried, "a failed connection logged", within=DEADLINE_SECONDS)
            await asyncio.to_thread(server.start)
            await publish(server.url, 3)

            async def all_stored() -> bool:
                return len(sink.stored) == 3

            await eventually(all_stored, "records once NATS is up", within=DEADLINE_SECONDS)
    finally:
        server.cleanup()


async def test_stop_while_nats_is_down_at_start_ends_the_runner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    sink = Sink(options(NatsServer().url))
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))

    async def retried() -> bool:
        return any("cannot connect to NATS" in r.getMessage() for r in caplog.records)

    try:
        await eventually(retried, "a failed connection logged", within=DEADLINE_SECONDS)
        stop.set()
        # SIGTERM during the outage: the runner ends rather than wait for NATS.
        await asyncio.wait_for(task, DEADLINE_SECONDS)
    finally:
        await cancel_tasks(task)
    assert not sink.nats_connected
