"""NATS subscriptions whose messages are handled as nats-py reads them.

A nats-py subscription made with ``cb=`` queues every message and wakes a task per
subscription to run the callback: per message one queue put, one task step and one
coroutine. For a hot path that only routes a message somewhere (a JetStream ack to its
waiting publish, a chat message to the sockets of its room) that hop is most of the
Python cost. A subscription made with ``future=`` (nats-py's hook for old-style
requests) instead gets every message handed to ``future.set_result`` from nats-py's read
loop, synchronously, as soon as it is parsed; :func:`subscribe_inline` passes a future
whose ``set_result`` calls a plain function.

The handler runs inside nats-py's read loop: it must not block, and it cannot await.
An exception it raises would end that loop (and the connection's reading), so every one
is caught and logged here. There is no per-subscription pending limit: the handler
keeps up by construction, since nothing is queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

Handler = Callable[[Msg], None]


class _InlineSink(asyncio.Future[Msg]):
    """Never completes: each ``set_result`` from nats-py is one message for ``handler``."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._handler = handler

    def set_result(self, result: Msg, /) -> None:
        try:
            self._handler(result)
        except Exception:
            log.exception("inline NATS handler failed", extra={"subject": result.subject})


async def subscribe_inline(
    nc: NatsClient, subject: str, handler: Handler, *, queue: str = ""
) -> Subscription:
    """Subscribe ``handler`` to ``subject``; it is called once per message, in order, from
    nats-py's read loop. ``Subscription.unsubscribe()`` ends it as usual, and nats-py
    subscribes it again after a reconnect like any other."""
    return await nc.subscribe(subject, queue=queue, future=_InlineSink(handler))
