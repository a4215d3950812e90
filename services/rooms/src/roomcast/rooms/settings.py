"""Configuration of the rooms service, read from ``ROOMCAST_ROOMS_*`` variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from roomcast.common.settings import MongoSettings, NatsSettings, ServiceSettings, TokenSettings


class Settings(ServiceSettings, MongoSettings, NatsSettings, TokenSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMCAST_ROOMS_", extra="ignore", frozen=True)

    grpc_port: int = Field(default=50051, ge=0, le=65535)
    # The HTTP side port: /healthz, /readyz (MongoDB ping) and /metrics.
    http_port: int = Field(default=8082, ge=0, le=65535)
    mongo_db: str = "roomcast_rooms"
    # DEV/BENCH ONLY: verify tokens against a JWKS read once from this file instead of
    # fetching ``jwks_url``. Production always uses auth's JWKS endpoint so key rotation
    # reaches every replica; a static file would freeze the key set.
    jwks_file: str | None = None
    # Rooms a single user may create per minute on one replica (a bucket of this size,
    # refilled over 60 s). Creating a room writes two documents and an index entry; a
    # human never needs more than a handful a minute, a script looping on CreateRoom
    # should not fill the database.
    create_rooms_per_minute: int = Field(default=30, ge=1, le=10_000)
    # Upper bound of concurrently executing RPCs: beyond it grpc answers
    # RESOURCE_EXHAUSTED instead of queueing without limit (each RPC holds a MongoDB
    # connection slot; PyMongo's default pool is 100 per server).
    max_concurrent_rpcs: int = Field(default=1000, ge=1, le=100_000)
    # Replicas of the JetStream bucket rooms copies retention periods into for history
    # (retention_sync.py): 3 on a 3-node production cluster, like the CHAT stream.
    retention_bucket_replicas: int = Field(default=1, ge=1, le=5)
