"""The JetStream side of the bootstrap: the ``CHAT`` stream, the revoked-sessions KV
bucket and the rooms' retention-periods KV bucket, created when missing and raised to
the wanted replica count.

``CHAT`` is created with the one configuration the services share
(:func:`~roomcast.common.chatstream.chat_stream_config`); its limits (age, duplicate
window, per-room cap) stay the gateways' to set at their start. What the bootstrap
checks on an existing stream is what no service may change silently: its subjects,
storage, retention and republish rule. A difference there means the stream is not
ours (or was made by hand) and is a :class:`BootstrapConflict`; replicas below the
wanted count are raised (the documented update the former ``nats stream edit
--replicas`` Job made), never lowered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    KeyValueConfig,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from roomcast.common.bootstrap_errors import BootstrapConflict, BootstrapError, NotReachable
from roomcast.common.bootstrap_settings import BootstrapSettings
from roomcast.common.chatstream import StreamSettings, chat_stream_config, ensure_chat_stream
from roomcast.common.retention import BUCKET as RETENTION_BUCKET
from roomcast.common.retention import open_bucket as open_retention_bucket
from roomcast.common.revocations import BUCKET
from roomcast.common.subjects import STREAM_NAME

log = logging.getLogger(__name__)

# Between connection attempts while NATS is starting.
RETRY_SECONDS = 1.0
# A cluster that has just formed refuses more replicas until its meta leader knows
# every peer (a few seconds); a cluster too small keeps refusing, reported after this.
PEERS_DEADLINE_SECONDS = 30.0
# One connection attempt; a cluster node that is up answers in milliseconds.
CONNECT_TIMEOUT_SECONDS = 2.0
# One whole attempt (TCP, handshake, JetStream's answer).
ATTEMPT_TIMEOUT_SECONDS = 2 * CONNECT_TIMEOUT_SECONDS
# The revoked-sessions bucket keeps one value per session (auth writes it once).
REVOCATIONS_HISTORY = 1


# What the server reports for a field the created config left unset.
SERVER_DEFAULTS = {"retention": RetentionPolicy.LIMITS, "storage": StorageType.FILE}


def _comparable(name: str, value: Any) -> Any:
    """A field's value as the server reports it, in a form that compares."""
    value = value or SERVER_DEFAULTS.get(name)
    if name == "subjects":
        return sorted(value or [])
    if isinstance(value, RePublish):
        return (value.src, value.dest)
    return value


def _differences(have: StreamConfig, want: StreamConfig, fields: tuple[str, ...]) -> list[str]:
    out = []
    for name in fields:
        mine = _comparable(name, getattr(have, name))
        theirs = _comparable(name, getattr(want, name))
        if mine != theirs:
            out.append(f"{name}: have {mine!r}, want {theirs!r}")
    return out


async def _raise_replicas(js: JetStreamContext, config: StreamConfig, replicas: int) -> str | None:
    """Bring a stream to ``replicas`` if it has fewer; the change made, or None."""
    have = config.num_replicas or 1
    if have >= replicas:
        if have > replicas:
            log.info("stream %s keeps its %d replicas (wanted %d)", config.name, have, replicas)
        return None
    deadline = time.monotonic() + PEERS_DEADLINE_SECONDS
    while True:
        try:
            await js.update_stream(dataclasses.replace(config, num_replicas=replicas))
            break
        except BadRequestError as error:
            if time.monotonic() < deadline:
                await asyncio.sleep(RETRY_SECONDS)
                continue
            raise BootstrapError(
                f"stream {config.name}: cannot raise replicas {have} -> {replicas}: "
                f"{error.description} (does the cluster have {replicas} JetStream servers?)"
            ) from error
    return f"stream {config.name}: replicas {have} -> {replicas}"


async def ensure_chat(js: JetStreamContext, replicas: int) -> list[str]:
    """``CHAT`` exists with our subjects and storage and at least ``replicas``."""
    want = chat_stream_config(StreamSettings(stream_replicas=replicas))
    try:
        await js.stream_info(STREAM_NAME)
        created = False
    except NotFoundError:
        created = True
    try:
        info = await ensure_chat_stream(js, StreamSettings(stream_replicas=replicas), update=False)
    except BadRequestError as error:
        raise BootstrapError(f"cannot create stream {STREAM_NAME}: {error.description}") from error
    if created:
        return [f"stream {STREAM_NAME} created with {replicas} replicas"]
    conflicts = _differences(info.config, want, ("subjects", "storage", "retention", "republish"))
    if conflicts:
        raise BootstrapConflict(
            f"stream {STREAM_NAME} exists with another configuration: "
            + "; ".join(conflicts)
            + " (not changed: it may belong to something else; move it away or delete it)"
        )
    change = await _raise_replicas(js, info.config, replicas)
    return [change] if change else []


async def ensure_revocations(js: JetStreamContext, replicas: int, ttl_seconds: float) -> list[str]:
    """The revoked-sessions bucket exists with at least ``replicas``. Its TTL is auth's
    to set (it follows the access-token lifetime): an existing bucket keeps its own."""
    stream = f"KV_{BUCKET}"
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        try:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=BUCKET,
                    history=REVOCATIONS_HISTORY,
                    ttl=ttl_seconds,
                    replicas=replicas,
                )
            )
        except BadRequestError as error:
            # Lost a creation race to auth: fine when the bucket is there now.
            try:
                info = await js.stream_info(stream)
            except NotFoundError:
                raise BootstrapError(
                    f"cannot create bucket {BUCKET}: {error.description}"
                ) from error
        else:
            return [f"bucket {BUCKET} created with {replicas} replicas, ttl {ttl_seconds:.0f} s"]
    if info.config.max_age and abs(info.config.max_age - ttl_seconds) > 1:
        log.info(
            "bucket %s keeps its ttl of %.0f s (this bootstrap would create %.0f s)",
            BUCKET,
            info.config.max_age,
            ttl_seconds,
        )
    change = await _raise_replicas(js, info.config, replicas)
    return [change] if change else []


async def ensure_retention(js: JetStreamContext, replicas: int) -> list[str]:
    """The retention-periods bucket exists (as rooms creates it: one value per key, no
    expiry) with at least ``replicas``."""
    stream = f"KV_{RETENTION_BUCKET}"
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        # rooms' own creation, so both make the same bucket; a creation race with rooms
        # ends with the bucket there either way.
        await open_retention_bucket(js, replicas=replicas, create=True)
        info = await js.stream_info(stream)
        if (info.config.num_replicas or 1) >= replicas:
            return [f"bucket {RETENTION_BUCKET} created with {replicas} replicas"]
    change = await _raise_replicas(js, info.config, replicas)
    return [change] if change else []


async def _quiet(error: Exception) -> None:
    log.debug("nats: %r", error)


async def connect(url: str, deadline_seconds: float) -> NatsClient:
    """A connection with JetStream answering, retried until the deadline."""
    deadline = time.monotonic() + deadline_seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        nc: NatsClient | None = None
        try:
            # Bounded here: this nats-py keeps retrying a refused first connection.
            nc = await asyncio.wait_for(
                nats.connect(
                    url,
                    name="roomcast-bootstrap",
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    allow_reconnect=False,
                    error_cb=_quiet,
                ),
                ATTEMPT_TIMEOUT_SECONDS,
            )
            # A cluster node answers before it has a JetStream meta leader.
            await nc.jetstream().account_info()
            return nc
        except (NatsError, OSError, TimeoutError) as error:
            last = error
            if nc is not None:
                await nc.close()
        await asyncio.sleep(RETRY_SECONDS)
    raise NotReachable(
        f"NATS at {url} (with JetStream) did not answer in {deadline_seconds:.0f} s: {last!r}"
    )


async def bootstrap_nats(settings: BootstrapSettings) -> list[str]:
    """Every JetStream object Roomcast needs; the changes made (empty: none needed)."""
    nc = await connect(settings.nats_url, settings.connect_deadline_seconds)
    try:
        js = nc.jetstream()
        changes = await ensure_chat(js, settings.stream_replicas)
        changes += await ensure_revocations(
            js, settings.revocations_replicas, settings.revocations_ttl_seconds
        )
        changes += await ensure_retention(js, settings.retention_replicas)
        return changes
    finally:
        await nc.close()
