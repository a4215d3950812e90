"""Room retention periods, shared by rooms (the writer) and history (the purger).

rooms owns a room's ``retention_days`` (MongoDB) and keeps a copy of every non-zero
one in the JetStream key-value bucket :data:`BUCKET` (key: the room id, value: the
days as ASCII digits). history reads the whole bucket before each purge round and
deletes what is older. A bucket, not core events: history may be down when a period
changes, and a bucket still holds the latest value when it comes back.
"""

from __future__ import annotations

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from roomcast.common.kvbucket import open_or_create_bucket
from roomcast.common.subjects import is_object_id

BUCKET = "ROOMCAST_RETENTION"
# Reading the bucket stops after this long without a new entry: the watcher signals
# "no more" at once when the bucket is caught up, so this only bounds a stalled read.
READ_IDLE_SECONDS = 5.0


def encode(days: int) -> bytes:
    return str(days).encode("ascii")


def decode(value: bytes | None) -> int | None:
    """The days in a bucket value, None when it is not one we wrote."""
    if value is None or not (0 < len(value) <= 5) or not value.isdigit():
        return None
    days = int(value)
    return days if days > 0 else None


async def open_bucket(js: JetStreamContext, *, replicas: int, create: bool) -> KeyValue:
    """The bucket; created (one value per key, no expiry) when ``create`` and absent."""
    if not create:
        return await js.key_value(BUCKET)
    return await open_or_create_bucket(js, BUCKET, replicas=replicas)


async def read_all(kv: KeyValue) -> dict[str, int]:
    """``{room_id: days}`` of every valid entry (one watcher over the bucket)."""
    periods: dict[str, int] = {}
    watcher = await kv.watchall(ignore_deletes=True)
    try:
        while True:
            entry = await watcher.updates(timeout=READ_IDLE_SECONDS)  # type: ignore[no-untyped-call]
            if entry is None:  # caught up with the bucket
                break
            days = decode(entry.value)
            if is_object_id(entry.key) and days is not None:
                periods[entry.key] = days
    except (TimeoutError, NatsTimeoutError):
        # Stalled: what was read is kept (a partial map only purges less this round).
        pass
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return periods
