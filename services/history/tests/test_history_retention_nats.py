"""Retention with NATS down when history starts: the rounds that cannot read the
periods are counted as failed for "nats" (the alert sees the outage) and the loop goes
on, instead of the first round waiting inside the client for NATS to come back."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from roomcast.history.files import GridFSBlobStore
from roomcast.history.retention import RetentionPurger
from roomcast.history.settings import Settings
from roomcast.testing.polling import eventually
from roomcast.testing.processes import free_port

METRIC = "roomcast_history_retention_round_failures_total"
# How long two failed rounds (0.1 s apart) and a stop may take on a loaded machine.
DEADLINE_SECONDS = 20.0


async def test_nats_down_at_the_first_connect_is_counted_and_retried(
    mongo_url: str, mongo_db_name: str
) -> None:
    # MongoDB is up (a round starts with it); nobody listens at the NATS address.
    settings = Settings(
        nats_url=f"nats://127.0.0.1:{free_port()}",
        mongo_url=mongo_url,
        mongo_db=mongo_db_name,
        retention_interval_seconds=0.1,
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    before = REGISTRY.get_sample_value(METRIC, {"reason": "nats"}) or 0.0
    purger = RetentionPurger(settings, mongo, blobs=GridFSBlobStore(mongo, settings.mongo_db))
    stop = asyncio.Event()
    running = asyncio.create_task(purger.run(stop))

    async def two_failures() -> bool:
        assert not running.done(), "the purge loop ended"
        return (REGISTRY.get_sample_value(METRIC, {"reason": "nats"}) or 0.0) >= before + 2

    try:
        await eventually(two_failures, "two rounds failed for nats", within=DEADLINE_SECONDS)
        stop.set()
        await asyncio.wait_for(running, DEADLINE_SECONDS)
    finally:
        running.cancel()
        await purger.close()
        await mongo.close()
