"""The bus ceiling: raw JetStream publishes per second against a given nats-server.

A whole-stack figure (acked messages/s) means little on a shared machine by itself;
its ratio to what the same nats-server takes from a bare nats-py client, in the same
run, does (docs/benchmarks.md). The publishes go to a scratch file-storage stream (like
the CHAT stream, its own subjects), ``in_flight`` of them awaiting their acks at once,
and the stream is deleted afterwards. Used by ``roomcast-load --start-stack`` after the
window and by ``bench/pipeline_cost.py``.
"""

from __future__ import annotations

import asyncio
import time

import nats
import orjson
from nats.js.api import StorageType, StreamConfig

CEILING_STREAM = "BENCHCEILING"
CEILING_SUBJECT = "benchceiling.room."
# 100 subjects: publishes spread like a hundred rooms' (the CHAT stream's subjects are
# per room), without creating more state than the scratch stream needs.
CEILING_SUBJECTS = 100
# The default payload: a send frame with a 100-character body, the size the scenarios
# and the pipeline benchmark send.
DEFAULT_PAYLOAD = orjson.dumps(
    {
        "type": "send",
        "room": "0" * 24,
        "client_id": "0" * 32,
        "body": {"type": "text", "content": "x" * 100},
    }
)
# nats-py's per-request timeout: a loaded machine may hold a publish ack for seconds.
PUBLISH_TIMEOUT_SECONDS = 30.0


async def bus_ceiling(
    url: str, messages: int, in_flight: int, payload: bytes = DEFAULT_PAYLOAD
) -> float:
    """Publishes/s of ``messages`` JetStream publishes of ``payload``, ``in_flight`` at a
    time, to a scratch file-storage stream on the server at ``url``."""
    if messages < 1 or in_flight < 1:
        raise ValueError("messages and in_flight must be at least 1")
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS)
        await js.add_stream(
            StreamConfig(
                name=CEILING_STREAM,
                subjects=[CEILING_SUBJECT + "*"],
                storage=StorageType.FILE,
            )
        )
        counter = iter(range(messages))

        async def worker() -> None:
            for i in counter:
                await js.publish(f"{CEILING_SUBJECT}{i % CEILING_SUBJECTS}", payload)

        try:
            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            seconds = time.perf_counter() - began
        finally:
            await js.delete_stream(CEILING_STREAM)
        return messages / seconds
    finally:
        await nc.close()
