"""A JetStream key-value bucket a service creates on first use and keeps a handle on.

auth's revoked sessions, the gateways' slow-mode pace and rooms' retention periods each
live in a bucket their service creates when it is absent. Two rules hold for all of them:

- a bucket that already exists with another configuration (replicas or ``max_age``
  changed between releases, or raised by the bootstrap) is used as it is, never
  recreated: its entries are live state, and changing its configuration is an
  operator's decision (docs/auth.md), not a restarting process's;
- a handle is dropped after a failed operation and opened again on the next use: a
  NATS server that lost its store lost the bucket too, and recreating it is what heals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


async def open_or_create_bucket(
    js: JetStreamContext, bucket: str, *, replicas: int, ttl_seconds: float | None = None
) -> KeyValue:
    """The bucket, created with one value per key (and entries expiring after
    ``ttl_seconds``, if given) when absent; used as it is when it exists."""
    try:
        return await js.create_key_value(
            bucket=bucket, history=1, ttl=ttl_seconds, replicas=replicas
        )
    except BadRequestError:
        log.warning("bucket %s exists with another configuration: used as it is", bucket)
        return await js.key_value(bucket)


class BucketHandle:
    """A process's handle on one bucket: opened by ``open`` on first use (one opening
    at a time, however many callers wait), kept, and dropped by :meth:`forget`."""

    def __init__(self, open_bucket: Callable[[], Awaitable[KeyValue]]) -> None:
        self._open = open_bucket
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()

    async def get(self) -> KeyValue:
        """The bucket; raises whatever opening it raised (the next call tries again)."""
        if self._kv is not None:
            return self._kv
        async with self._opening:
            if self._kv is None:
                self._kv = await self._open()
            return self._kv

    def forget(self) -> None:
        """Open the bucket again on the next use (call after a failed operation)."""
        self._kv = None
