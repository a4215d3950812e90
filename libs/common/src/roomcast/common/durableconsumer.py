"""A durable JetStream pull consumer on ``CHAT`` that writes every batch before it
acknowledges it: the one runner of every service that consumes the chat stream
(history, the notifier).

Why one runner: the guarantee "nothing lost, nothing written twice" lives in a few
orderings that are easy to get subtly wrong in a copy (write *then* ack; keep a failing
batch assigned with in-progress acks; on SIGTERM finish the batch in hand, and hand it
back with a nak once the grace period is over; flush the acks before closing). Each
service supplies only what is its own: how a batch is parsed and written, what to do
with the consumer's progress, and, if it wants, its own way of fetching.

What the runner does, each step retried with backoff until it works or ``stop`` is set:

- connect to NATS (the client then reconnects forever by itself);
- ``prepare()`` (e.g. MongoDB indexes);
- create ``CHAT`` if missing, let the service ``check_stream`` it (history refuses a
  re-created one), create the durable consumer or bring it to this configuration
  (the server edits limits such as ack_wait and max_ack_pending in place; an older one
  it cannot change, e.g. where delivery starts, is used as it is: the operator changes
  that deliberately) and bind;
- fetch batches and ``handle`` each one; a fetch that fails otherwise than by timing out
  (the connection closed, ...) sets the subscription up again;
- read the consumer's info every ``progress_poll_seconds`` (and, if asked, right after
  an acked batch) and pass it to ``on_progress``;
- when that read says the consumer is gone (an operator deleted it, the stream was
  deleted and re-created), create it again with this configuration and bind anew.
  A pull on a deleted consumer gets no error from nats-py, only timeouts for ever
  (nats-server answers the pull in flight with 409 "Consumer Deleted", which nats-py
  reports as a timeout, and later pulls with nothing), so the info read is what
  notices (or a fetch error, with some servers: binding again finds it missing).
  The new consumer starts after the last ack floor the info reads saw (every record
  at or below it was acknowledged), so a long stream is not replayed: what was acked
  between that read and the deletion comes again and is a no-op (``write`` is
  idempotent), what was not is written. With no floor seen yet, or when ``CHAT`` is
  another stream (created at another time: its sequences restarted), it delivers from
  the start of the stream as at first creation. Counted in
  ``roomcast_<service>_consumer_recreated_total``.

With ``prefetch_batches`` > 0 the next batches are fetched and parsed while one is
written (the fetch round trip overlaps the write); with 0 the next fetch starts only
once the batch in hand is acknowledged.

In a service's ``main``: ``watch_consumer(task, stop)`` turns an unexpected end of the
consumer into a shutdown, and ``finish_consumer`` waits for the batch in hand on stop.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError, ServerError
from prometheus_client import Counter

from roomcast.common.chatstream import StreamSettings, ensure_chat_stream
from roomcast.common.natsconn import connect_nats, service_label
from roomcast.common.retry import Backoff, sleep_unless
from roomcast.common.subjects import ROOM_SUBJECT_PREFIX, STREAM_NAME

B = TypeVar("B")
T = TypeVar("T")

log = logging.getLogger(__name__)

# How long to wait for buffered acks to reach the server when stopping: they are a
# few small writes on an open connection; an ack lost past this is merely a redelivery.
FLUSH_TIMEOUT_SECONDS = 2
# On stop, how long past the grace period ``finish_consumer`` waits: the consumer gives
# up retrying a write at the grace period, then naks and flushes (at most
# FLUSH_TIMEOUT_SECONDS) and unsubscribes; 5 s covers that on a loaded machine.
FINISH_MARGIN_SECONDS = 5.0


_RECREATED: dict[str, Counter] = {}


def recreated_counter(client_name: str) -> Counter:
    """``roomcast_<service>_consumer_recreated_total`` (no labels: one durable
    consumer per service), named after the service of the NATS connection."""
    service = service_label(client_name)
    if service not in _RECREATED:
        _RECREATED[service] = Counter(
            f"roomcast_{service}_consumer_recreated_total",
            "Times this process found its durable JetStream consumer gone (deleted by "
            "an operator or with its stream) and created it again; its records are "
            "then delivered again from the start of the stream (idempotent writes).",
        )
    return _RECREATED[service]


def durable_consumer_config(
    *,
    name: str,
    description: str,
    ack_wait_seconds: float,
    max_ack_pending: int,
    filter_subject: str = ROOM_SUBJECT_PREFIX + "*",
) -> ConsumerConfig:
    """The durable pull consumer of a service that must see every chat record."""
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description=description,
        # From the start of the stream on first creation: a new consumer processes what
        # the stream still holds rather than silently skip it.
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_seconds,
        # Never give up on a record: the only reason not to ack is a dependency being
        # unavailable, and dropping a message then would lose it for good.
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        filter_subject=filter_subject,
    )


def consumer_lag(info: ConsumerInfo) -> int:
    """Records not yet acknowledged: still to deliver plus delivered and unacked."""
    return (info.num_pending or 0) + (info.num_ack_pending or 0)


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """How a service runs its durable consumer (each from the service's Settings)."""

    nats_url: str
    # The NATS connection's name, as the server's monitoring shows it.
    client_name: str
    config: ConsumerConfig
    # ``CHAT``'s shape, used only to create it when missing (never to change it).
    stream: StreamSettings
    batch_size: int
    # How long a fetch waits for the first record of a batch.
    fetch_timeout: float
    # On stop, how long a failing write is retried before the batch is handed back.
    shutdown_grace_seconds: float
    prefetch_batches: int = 0
    progress_poll_seconds: float = 1.0
    # When set, the info is also read right after an acked batch, at most this often.
    progress_after_ack_seconds: float | None = None


class DurableConsumer(abc.ABC, Generic[B]):
    """The runner; a service subclasses it with ``parse`` and ``handle`` (which calls
    ``write_then_ack``), and optionally ``prepare``, ``fetch`` and ``on_progress``."""

    # Failures expected while a dependency is down: logged without a traceback.
    expected_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, options: ConsumerOptions) -> None:
        if not options.config.durable_name:
            raise ValueError("the consumer must be durable")
        self.options = options
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        # When stopping with a write still failing: the moment batches are handed back.
        self._give_up_at: float | None = None
        # Set when a batch was acknowledged: the ack floor has probably moved.
        self._acked = asyncio.Event()
        # Set when the server says the consumer does not exist: bind to a new one.
        self._gone = asyncio.Event()
        # When the runner last bound to the consumer: an info read asked before that
        # may still answer "not found" about the one it replaced.
        self._bound_at = 0.0
        # Whether the runner has bound once: a consumer missing after that was deleted.
        self._bound_once = False
        # The highest ack floor (stream sequence) the info reads saw, and the creation
        # time of the stream it belongs to: where a re-created consumer resumes.
        self._ack_floor = 0
        self._stream_created: object = None
        self._recreated = recreated_counter(options.client_name)
        # Logged under the service's module: its log reads as the service's own.
        self.log = logging.getLogger(type(self).__module__)

    # ------------------------------------------------------------ the service's part

    async def prepare(self) -> None:
        """Before consuming (e.g. create indexes); retried until it works."""

    async def fetch(self, sub: JetStreamContext.PullSubscription) -> Sequence[Msg]:
        """One batch; raises a timeout when nothing is pending."""
        return await sub.fetch(self.options.batch_size, timeout=self.options.fetch_timeout)

    @abc.abstractmethod
    def parse(self, msgs: Sequence[Msg]) -> B:
        """A fetched batch made ready for ``handle`` (with prefetch: while another is
        being written)."""

    @abc.abstractmethod
    async def handle(self, batch: B, stop: asyncio.Event) -> None:
        """Write the batch and acknowledge it, with ``write_then_ack``."""

    async def on_progress(self, info: ConsumerInfo) -> None:
        """The consumer's info, read from the server (lag gauges, watermarks)."""

    async def check_stream(self, info: StreamInfo) -> None:
        """Before every bind (at start, after the consumer was re-created): raise to
        refuse consuming this ``CHAT`` (e.g. a re-created one); retried with backoff."""

    def write_failed(self, exc: Exception) -> None:
        """A write attempt failed (``write_then_ack`` retries it); count it here."""

    # ------------------------------------------------------------------- the runner

    @property
    def nats(self) -> NatsClient | None:
        return self._nc

    @property
    def nats_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (once connected)."""
        assert self._js is not None, "not connected"
        return self._js

    async def connect(self, stop: asyncio.Event) -> bool:
        """Connect to NATS, retrying until it works (True) or ``stop`` is set (False).
        ``run`` connects by itself; call this first to use the connection before."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                # fail_fast: an outage at start is logged here and ``stop`` honoured,
                # instead of nats-py retrying the first connection out of our sight.
                self._nc = await connect_nats(
                    self.options.nats_url, name=self.options.client_name, fail_fast=True
                )
                self._js = self._nc.jetstream()
                return True
            except Exception as exc:
                self.log.warning("cannot connect to NATS (%s); retrying", exc)
                await sleep_unless(stop, backoff.next_delay())
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished first."""
        if self._js is None and not await self.connect(stop):
            return
        if not await self._prepare(stop):
            return
        progress = asyncio.create_task(self._track_progress(stop))
        try:
            while not stop.is_set():
                sub = await self._subscribe(stop)
                if sub is None:
                    break
                self._bound_at = time.monotonic()
                self._bound_once = True
                self._gone.clear()
                try:
                    await self._consume(sub, stop)
                finally:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
            if self._nc is not None and self._nc.is_connected:
                with contextlib.suppress(Exception):
                    await self._nc.flush(timeout=FLUSH_TIMEOUT_SECONDS)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    async def write_then_ack(
        self, msgs: Sequence[Msg], write: Callable[[], Awaitable[T]], stop: asyncio.Event
    ) -> T | None:
        """Call ``write`` until it works, then acknowledge every message of ``msgs``
        and return its value. ``write`` must be idempotent: a batch written but not
        acknowledged (a crash, a lost ack) is delivered and written again.

        While it fails the batch stays assigned to this replica (in-progress acks reset
        ``ack_wait``). Once ``stop`` is set it is retried for the grace period at most,
        then handed back with a nak and None is returned (nothing was acknowledged)."""
        backoff = Backoff()
        while True:
            try:
                result = await write()
                break
            except Exception as exc:
                self.write_failed(exc)
                self.log.warning(
                    "batch write failed (attempt %d): %s",
                    backoff.attempt + 1,
                    exc,
                    # A traceback only for the unexpected; "MongoDB is down" needs none.
                    exc_info=backoff.attempt == 0 and not isinstance(exc, self.expected_errors),
                )
            if stop.is_set():
                if self._give_up_at is None:
                    self._give_up_at = time.monotonic() + self.options.shutdown_grace_seconds
                if time.monotonic() >= self._give_up_at:
                    # Hand the batch back now rather than after ack_wait.
                    for msg in msgs:
                        with contextlib.suppress(Exception):
                            await msg.nak()
                    return None
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.in_progress()
            await asyncio.sleep(backoff.next_delay())
        for msg in msgs:
            try:
                await msg.ack()
            except Exception as exc:
                # Written but not acknowledged: it comes back and is a no-op then.
                self.log.warning("ack failed (%s); the record will be redelivered", exc)
        self._acked.set()
        return result

    async def _prepare(self, stop: asyncio.Event) -> bool:
        backoff = Backoff()
        while not stop.is_set():
            try:
                await self.prepare()
                return True
            except Exception as exc:
                self.log.warning("cannot prepare the store (%s); retrying", exc)
                await sleep_unless(stop, backoff.next_delay())
        return False

    async def _subscribe(self, stop: asyncio.Event) -> JetStreamContext.PullSubscription | None:
        """Ensure the stream and the durable consumer exist, and bind to it."""
        name = self.options.config.durable_name
        assert name is not None
        backoff = Backoff()
        while not stop.is_set():
            try:
                stream = await ensure_chat_stream(self.js, self.options.stream, update=False)
                await self.check_stream(stream)
                config, recreated = await self._config_to_create(name, stream)
                try:
                    await self.js.add_consumer(STREAM_NAME, config)
                except (BadRequestError, ServerError) as exc:
                    # It exists with a configuration the server cannot change in place
                    # (an older deploy's): use it as it is rather than fail; the
                    # operator updates it deliberately. (nats-server answers 500 "can
                    # not be updated" to that; consumer_info below fails, and so the
                    # step is retried, if the consumer does not exist after all.)
                    self.log.warning("consumer %s exists with another config: %s", name, exc)
                    await self.js.consumer_info(STREAM_NAME, name)
                sub = await self.js.pull_subscribe_bind(durable=name, stream=STREAM_NAME)
                if recreated:
                    self._recreated.inc()
                    self.log.warning(
                        "JetStream consumer %s re-created; records are delivered from "
                        "stream sequence %d",
                        name,
                        config.opt_start_seq or 1,
                    )
                return sub
            except Exception as exc:
                self.log.warning("cannot set up the JetStream consumer (%s); retrying", exc)
                await sleep_unless(stop, backoff.next_delay())
        return None

    async def _config_to_create(self, name: str, stream: StreamInfo) -> tuple[ConsumerConfig, bool]:
        """The configuration to create the consumer with, and whether it is being
        re-created: the service's own, unless it was deleted since the runner bound to
        it (the module docstring); then starting after the last ack floor seen on this
        same stream."""
        if stream.created != self._stream_created:
            self._stream_created = stream.created
            self._ack_floor = 0  # another stream: its sequences restarted
        if not self._bound_once:
            return self.options.config, False
        try:
            await self.js.consumer_info(STREAM_NAME, name)
            return self.options.config, False  # still there: bind to it as it is
        except NotFoundError:
            pass
        if self._ack_floor == 0:
            return self.options.config, True  # nothing seen acked: the whole stream
        resumed = replace(
            self.options.config,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self._ack_floor + 1,
        )
        return resumed, True

    async def _batches(
        self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event
    ) -> AsyncGenerator[B, None]:
        """Parsed batches until ``stop`` is set or the subscription must be set up
        again. Lazy: the next fetch starts when the next batch is asked for."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                msgs = await self.fetch(sub)
            except (TimeoutError, NatsTimeoutError):
                if self._gone.is_set():
                    return
                continue
            except NotFoundError as exc:
                self._consumer_gone(exc)
                return
            except Exception as exc:
                # The connection closed, a JetStream API error, ...: set up again.
                self.log.warning("fetch failed (%s); re-subscribing", exc)
                await sleep_unless(stop, backoff.next_delay())
                return
            backoff.reset()
            yield self.parse(msgs)

    async def _consume(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        if self.options.prefetch_batches <= 0:
            async with contextlib.aclosing(self._batches(sub, stop)) as batches:
                async for batch in batches:
                    await self.handle(batch, stop)
            return
        queue: asyncio.Queue[B | None] = asyncio.Queue(maxsize=self.options.prefetch_batches)
        fetcher = asyncio.create_task(self._fetch_into(sub, stop, queue))
        try:
            while (ahead := await queue.get()) is not None:
                await self.handle(ahead, stop)
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher

    async def _fetch_into(
        self,
        sub: JetStreamContext.PullSubscription,
        stop: asyncio.Event,
        queue: asyncio.Queue[B | None],
    ) -> None:
        """Fetch and parse ahead while the batch in hand is written."""
        async with contextlib.aclosing(self._batches(sub, stop)) as batches:
            async for batch in batches:
                await queue.put(batch)
        await queue.put(None)

    def _consumer_gone(self, exc: Exception) -> None:
        """The server says the consumer (or ``CHAT``) does not exist: the fetch loop
        ends at its next timeout and the runner creates the consumer again."""
        if not self._gone.is_set():
            self.log.warning(
                "JetStream consumer %s is gone (%s); re-creating it",
                self.options.config.durable_name,
                exc,
            )
            self._gone.set()

    async def _track_progress(self, stop: asyncio.Event) -> None:
        name = self.options.config.durable_name
        assert name is not None
        after_ack = self.options.progress_after_ack_seconds
        while not stop.is_set():
            self._acked.clear()
            info: ConsumerInfo | None = None
            asked = time.monotonic()
            try:
                info = await self.js.consumer_info(STREAM_NAME, name)
            except NotFoundError as exc:
                if asked > self._bound_at:
                    self._consumer_gone(exc)
            except Exception as exc:
                self.log.debug("cannot read the consumer's info: %s", exc)
            if info is not None and asked > self._bound_at and info.ack_floor is not None:
                # Read after binding: the floor of the consumer bound to, on its stream.
                self._ack_floor = max(self._ack_floor, info.ack_floor.stream_seq or 0)
            if info is not None:
                try:
                    await self.on_progress(info)
                except Exception as exc:
                    self.log.debug("cannot use the consumer's info: %s", exc)
            if after_ack is None:
                await sleep_unless(stop, self.options.progress_poll_seconds)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), self.options.progress_poll_seconds)
            await sleep_unless(stop, after_ack)


def watch_consumer(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Set ``stop`` when the consumer's task ends without being asked to: a crash, and
    a service that serves requests but consumes nothing any more must not look healthy."""

    def ended(_: asyncio.Task[None]) -> None:
        if not stop.is_set():
            log.error("the consumer stopped unexpectedly; shutting down")
            stop.set()

    task.add_done_callback(ended)


async def finish_consumer(
    task: asyncio.Task[None], *, grace_seconds: float, others: Iterable[asyncio.Task[None]] = ()
) -> None:
    """Once ``stop`` is set: wait for the consumer (and ``others``) to finish the batch
    in hand, and raise the consumer's crash if it crashed. One that does not finish in
    time is left to ``cancel_tasks``: its batch is redelivered after ack_wait."""
    done, _ = await asyncio.wait({task, *others}, timeout=grace_seconds + FINISH_MARGIN_SECONDS)
    if task in done:
        task.result()
    else:
        log.warning("the consumer did not stop in time; its batch will be redelivered")


async def cancel_tasks(*tasks: asyncio.Task[None]) -> None:
    """Cancel whichever of ``tasks`` are still running and wait for them to end."""
    for task in tasks:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
