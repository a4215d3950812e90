"""history's settings, from ``ROOMCAST_HISTORY_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from roomcast.common.chatstream import StreamSettings
from roomcast.common.settings import MongoSettings, NatsSettings, ServiceSettings, TokenSettings


class Settings(ServiceSettings, MongoSettings, NatsSettings, TokenSettings, StreamSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMCAST_HISTORY_", extra="ignore", frozen=True)

    port: int = Field(default=8083, ge=1, le=65535)
    mongo_db: str = "roomcast_history"
    # The rooms gRPC service, asked whether the caller is a member of a room.
    rooms_target: str = "127.0.0.1:50051"
    # A membership check that takes longer than this answers 503: rooms normally
    # answers in about a millisecond, so 2 s means it is overloaded or gone.
    rooms_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    # How long a positive membership answer is reused. A member removed from a room
    # can still read its history for at most this long; 5 s keeps rooms' load at one
    # call per reader per room per 5 s while paging.
    membership_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # The same for moving one's own read position (PUT /v1/rooms/{id}/read), which
    # gateways call for every coalesced read receipt: at 5 s nearly every receipt cost
    # rooms a CheckMembership (the largest share of the database's time in chat-mix).
    # A read position reveals nothing and is shown to no one by history, and the
    # gateway checks membership itself (revalidated, following rooms' events) before it
    # forwards a receipt or broadcasts it, so a member removed within these 300 s can
    # at most move their own position in a room they left.
    read_position_membership_cache_seconds: float = Field(default=300.0, ge=0, le=3600)
    # Cached (user, room) answers kept at most (about 200 bytes each).
    membership_cache_entries: int = Field(default=10_000, ge=1, le=1_000_000)

    # Reads (pages and summaries) per user: bursts of read_rate_capacity, refilled over
    # read_rate_per_seconds. A client reconnecting fetches one summary per room at
    # once (300 covers a heavy user's room list); sustained, 5 pages/s is faster than
    # anyone scrolls and caps a scraper.
    read_rate_capacity: int = Field(default=300, ge=1, le=1_000_000)
    read_rate_per_seconds: float = Field(default=60.0, gt=0, le=3600)

    # The durable JetStream consumer's name; every history replica shares it.
    consumer_name: str = Field(default="history", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # Messages fetched and written per bulk write: 256 amortises the MongoDB round
    # trip (one insert_many per batch) while keeping a batch under ~1 MB in memory.
    batch_size: int = Field(default=256, ge=1, le=4096)
    # How long a batch gathers records on the server after its first one (skipped when
    # a full batch is already pending). At a steady 200 msg/s a fetch returns one record
    # or a few, and each batch costs the same pull request, durable insert and round of
    # acks whatever its size; on these machines each socket write costs more CPU than a
    # record does, so the batch count is most of history's CPU bill (measured at 200
    # msg/s: 0.26 ms per message with 0.1 s, ~0.2 ms with 0.2 s; 1 ms unbatched). Live
    # delivery does not go through history, so the only effect is that a message shows
    # up in pages ~0.2 s later, which nobody scrolling back through history notices.
    batch_window_seconds: float = Field(default=0.2, ge=0, le=1)
    # How long one fetch waits for messages when the stream is idle. Short, so a
    # SIGTERM is noticed within about a second and the lag gauge stays fresh.
    fetch_timeout: float = Field(default=1.0, gt=0, le=30)
    # Unacknowledged deliveries the server allows the consumer (over all replicas):
    # four batches, so a replica never waits on the server while others work, and a
    # stuck replica holds back at most this many messages.
    max_ack_pending: int = Field(default=1024, ge=1, le=100_000)
    # A delivered message not acknowledged within this time is delivered again. A
    # batch write takes well under a second; 30 s leaves room for a MongoDB primary
    # election (a batch whose write is being retried is kept alive with in-progress
    # acks, so this only matters for a replica that died).
    ack_wait_seconds: float = Field(default=30.0, gt=0, le=3600)

    # Distinct emoji one message may show (reactions.py): a row of 20 chips is about
    # two lines on a phone, enough for any real conversation; a bound keeps the
    # message's aggregate small and stops one user spraying hundreds of distinct
    # emoji on a message everybody loads.
    max_reaction_emoji: int = Field(default=20, ge=1, le=200)

    # Retention (retention.py): how often a round purges messages older than their
    # room's retention_days. Periods are whole days, so five minutes late is nothing.
    retention_interval_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # Messages read and deleted per batch: one indexed query and one delete_many of
    # about 50 KB of ids; small enough not to hold MongoDB up for ingest or pages.
    retention_batch_size: int = Field(default=500, ge=1, le=10_000)
    # Pause between batches, so a large backlog is drained at a bounded rate
    # (500 per 0.2 s ~ 2,500 deletes a second at most) instead of in one burst.
    retention_batch_pause_seconds: float = Field(default=0.2, ge=0, le=60)
    # Messages deleted per round at most, over all rooms; what is left is due next
    # round (100k per 5 minutes drains a million-message room in under an hour).
    retention_max_per_round: int = Field(default=100_000, ge=1, le=10_000_000)

    # Files (docs/files.md). Where blobs live: GridFS in mongo_db (nothing more to run),
    # or an S3-compatible bucket (s3blobs.py) configured by the files_s3_* fields below.
    files_backend: Literal["gridfs", "s3"] = "gridfs"
    # The bucket, its region and the service's own keys: no default, so choosing s3
    # never falls back on a bucket, a region or ambient credentials by accident.
    files_s3_bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    files_s3_region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,32}$")
    files_s3_access_key_id: SecretStr | None = Field(default=None, min_length=1, max_length=256)
    files_s3_secret_access_key: SecretStr | None = Field(default=None, min_length=1, max_length=256)
    # Another S3-compatible service (MinIO, Ceph, a cloud's S3 API); unset: AWS S3.
    files_s3_endpoint_url: str | None = Field(default=None, pattern=r"^https?://\S{1,240}$")
    # "path" (bucket in the URL's path) for most self-hosted servers; "auto" lets the
    # client choose (virtual-hosted on AWS).
    files_s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Prefix of every object key, so the bucket can be shared with other data.
    files_s3_key_prefix: str = Field(default="files/", pattern=r"^[A-Za-z0-9!_.*'()/-]{0,64}$")
    # Multipart upload part: S3 refuses parts under 5 MiB (but the last). An upload
    # holds one part in memory while it is sent, so 8 MiB bounds an upload's cost and a
    # 25 MiB file takes 4 requests.
    files_s3_part_bytes: int = Field(
        default=8 * 1024 * 1024, ge=5 * 1024 * 1024, le=256 * 1024 * 1024
    )
    # Connect and read timeout of one S3 request: a part of 8 MiB goes in well under a
    # second on a datacenter link; 30 s means the store is in trouble (then 503).
    files_s3_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    # Largest file accepted: 25 MiB holds photos, PDFs and short clips, and bounds what
    # one upload costs MongoDB; the gateway enforces the same limit in front.
    files_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)
    # A file never shared (or no longer shared) is deleted once it is this old: a day
    # leaves a client that uploads and then loses its connection ample time to send the
    # message, yet an abandoned upload costs storage for one day only.
    files_gc_grace_seconds: float = Field(default=86_400.0, ge=0, le=30 * 86_400)
    # How often a collection pass runs; no user waits on it, so every 10 minutes.
    files_gc_interval_seconds: float = Field(default=600.0, gt=0, le=86_400)
    # Files examined per pass at most: one small find and a lookup each, so a pass
    # never holds MongoDB up; a backlog drains over a few passes.
    files_gc_batch: int = Field(default=200, ge=1, le=10_000)

    @model_validator(mode="after")
    def _s3_configured(self) -> Settings:
        if self.files_backend == "s3":
            missing = [
                f"ROOMCAST_HISTORY_{name.upper()}"
                for name in (
                    "files_s3_bucket",
                    "files_s3_region",
                    "files_s3_access_key_id",
                    "files_s3_secret_access_key",
                )
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"files_backend=s3 needs {', '.join(missing)}")
        return self
