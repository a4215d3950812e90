"""The JetStream stream ``CHAT``: its one configuration, created idempotently.

Whoever starts first (a gateway or history) creates the stream; everyone else finds it.
history creates it rather than waiting for a gateway so that it can start, become
ready and create its durable consumer in any order with the gateways.

This module holds the only copy of the configuration in history; it is meant to move
to ``roomcast.common`` so that the gateways and history cannot disagree.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import RePublish, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError

from roomcast.common.subjects import LIVE_SUBJECT_PREFIX, ROOM_SUBJECT_PREFIX, STREAM_NAME

log = logging.getLogger(__name__)

# Two minutes: a gateway retrying a publish after a lost ack (reconnect, failover to
# another gateway) is deduplicated by Nats-Msg-Id within this window.
DUPLICATE_WINDOW_SECONDS = 120.0
# The stream is the live-recovery buffer (clients resuming with since=<seq>), not the
# archive: history keeps every message in MongoDB. A week covers a client offline over
# a long weekend and a history outage far longer than any we plan for.
MAX_AGE_SECONDS = 7 * 24 * 3600.0
# Per room: bounds one busy room's share of the stream; older messages of that room
# are still in history.
MAX_MSGS_PER_SUBJECT = 100_000


def chat_stream_config() -> StreamConfig:
    """The configuration of ``CHAT``, shared by every creator."""
    return StreamConfig(
        name=STREAM_NAME,
        subjects=[ROOM_SUBJECT_PREFIX + "*"],
        storage=StorageType.FILE,
        republish=RePublish(src=ROOM_SUBJECT_PREFIX + ">", dest=LIVE_SUBJECT_PREFIX + ">"),
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        max_age=MAX_AGE_SECONDS,
        max_msgs_per_subject=MAX_MSGS_PER_SUBJECT,
        allow_direct=True,
    )


async def ensure_chat_stream(js: JetStreamContext) -> StreamInfo:
    """Return the stream's info, creating the stream first if it does not exist.

    Safe to call from any number of processes at once: creating a stream that exists
    with the same configuration succeeds, and losing a creation race to a process
    whose configuration differs still leaves a usable stream (logged, not changed:
    which configuration wins is an operator's decision, not a startup race's).
    """
    try:
        return await js.stream_info(STREAM_NAME)
    except NotFoundError:
        pass
    try:
        info = await js.add_stream(chat_stream_config())
        log.info("created JetStream stream %s", STREAM_NAME)
        return info
    except BadRequestError as exc:
        log.warning("stream %s exists with another configuration: %s", STREAM_NAME, exc)
        return await js.stream_info(STREAM_NAME)
