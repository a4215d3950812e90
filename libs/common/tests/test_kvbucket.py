"""The shared way services open their key-value buckets, against a real nats-server: an
absent bucket is created with one value per key (and the asked expiry), an existing one
with another configuration is used as it is with its entries, and a handle opens its
bucket once however many callers wait, and again after :meth:`BucketHandle.forget`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from roomcast.common.kvbucket import BucketHandle, open_or_create_bucket

BUCKET = "KVBUCKET_TEST"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def test_an_absent_bucket_is_created_with_one_value_per_key_and_the_expiry(
    nc: NatsClient,
) -> None:
    kv = await open_or_create_bucket(nc.jetstream(), BUCKET, replicas=1, ttl_seconds=90.0)
    await kv.put("k", b"1")
    await kv.put("k", b"2")
    status = await kv.status()
    assert status.history == 1
    assert status.ttl == pytest.approx(90.0)
    assert status.values == 1
    entry = await kv.get("k")
    assert entry.value == b"2"


async def test_an_existing_bucket_of_another_configuration_is_used_as_it_is(
    nc: NatsClient,
) -> None:
    js = nc.jetstream()
    first = await open_or_create_bucket(js, BUCKET, replicas=1, ttl_seconds=60.0)
    await first.put("kept", b"yes")
    # A later release asks for another expiry: the live bucket and its entries stay.
    again = await open_or_create_bucket(js, BUCKET, replicas=1, ttl_seconds=120.0)
    status = await again.status()
    assert status.ttl == pytest.approx(60.0)
    entry = await again.get("kept")
    assert entry.value == b"yes"


async def test_a_handle_opens_once_for_concurrent_callers_and_again_after_forget() -> None:
    opened = 0
    started, release = asyncio.Event(), asyncio.Event()

    async def open_bucket() -> KeyValue:
        nonlocal opened
        opened += 1
        started.set()
        await release.wait()
        # Stands for a bucket: the handle only keeps and returns it.
        return cast(KeyValue, object())

    handle = BucketHandle(open_bucket)
    waiting = [asyncio.create_task(handle.get()) for _ in range(5)]
    await started.wait()  # the first caller is opening; the others wait on it
    release.set()
    got = await asyncio.gather(*waiting)
    assert opened == 1
    assert all(kv is got[0] for kv in got)
    assert await handle.get() is got[0]
    handle.forget()
    reopened = await handle.get()
    assert opened == 2
    assert reopened is not got[0]
