"""The JetStream stream ``CHAT``: its one configuration, shared by gateways and history.

Gateways own the configuration: at start they create the stream or bring an existing one
to their settings. history only creates it when missing (so it can start before any
gateway) and otherwise leaves it as it is.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import RePublish, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from roomcast.common.subjects import LIVE_SUBJECT_PREFIX, ROOM_SUBJECT_PREFIX, STREAM_NAME

log = logging.getLogger(__name__)


class StreamSettings(BaseSettings):
    """The stream's shape; each service reads them with its own prefix."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # 3 in production (a three-node JetStream cluster survives one node); 1 locally.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # Two minutes: a client retrying a send after a lost ack (reconnect, failover to
    # another gateway) is deduplicated by Nats-Msg-Id within this window.
    stream_duplicate_window_seconds: float = Field(default=120.0, gt=0)
    # The stream is the replay buffer for reconnecting clients and history's source, not
    # the archive (history keeps every message in MongoDB). A week covers a client
    # offline over a long weekend and any history outage we plan for.
    stream_max_age_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Per room: bounds one busy room's share of the stream; older messages of that room
    # are still in history.
    stream_max_msgs_per_subject: int = Field(default=100_000, ge=1)
    # -1: no byte limit beyond the age and per-room limits; set it to fit the volume.
    stream_max_bytes: int = Field(default=-1, ge=-1)


def chat_stream_config(settings: StreamSettings) -> StreamConfig:
    return StreamConfig(
        name=STREAM_NAME,
        subjects=[ROOM_SUBJECT_PREFIX + "*"],
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
        # After storing, the server republishes each message with its sequence and the
        # previous sequence of the same subject: the live path and its gap detection.
        republish=RePublish(src=ROOM_SUBJECT_PREFIX + ">", dest=LIVE_SUBJECT_PREFIX + ">"),
        duplicate_window=settings.stream_duplicate_window_seconds,
        max_age=settings.stream_max_age_seconds,
        max_msgs_per_subject=settings.stream_max_msgs_per_subject,
        max_bytes=settings.stream_max_bytes,
        allow_direct=True,
    )


async def ensure_chat_stream(
    js: JetStreamContext, settings: StreamSettings, *, update: bool
) -> StreamInfo:
    """Create ``CHAT`` if missing; with ``update`` also bring an existing stream to
    ``settings``. Safe to run from any number of processes at once."""
    config = chat_stream_config(settings)
    try:
        info = await js.stream_info(STREAM_NAME)
    except NotFoundError:
        try:
            info = await js.add_stream(config)
            log.info("created JetStream stream %s", STREAM_NAME)
            return info
        except BadRequestError:
            # Lost a creation race to another process: the stream exists now.
            info = await js.stream_info(STREAM_NAME)
    if update:
        info = await js.update_stream(config)
    return info
