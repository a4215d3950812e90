"""Settings building blocks. Each service defines one ``Settings`` class with its own
environment prefix (``ROOMCAST_AUTH_``, ``ROOMCAST_ROOMS_``, ...) composed of these."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set ``model_config`` with their prefix."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    log_level: str = "INFO"
    # Seconds a SIGTERM'd process may spend finishing in-flight work before it exits;
    # Kubernetes' default terminationGracePeriodSeconds is 30, so stay well inside it.
    shutdown_grace_seconds: float = Field(default=10.0, gt=0, le=120)


class MongoSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    mongo_url: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = "roomcast"
    # Server selection timeout: long enough to ride out a primary election (~2-10 s
    # in a replica set), short enough that a request fails with 503 instead of hanging.
    mongo_timeout_ms: int = Field(default=5000, ge=100, le=60000)
    # Journaled, majority-acknowledged writes (common/mongo.py). On by default: turning
    # it off lets a database crash lose writes that were already acknowledged.
    mongo_durable_writes: bool = True


class NatsSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    nats_url: str = "nats://127.0.0.1:4222"


class TokenSettings(BaseSettings):
    """How a service verifies access tokens: from auth's JWKS, never a shared secret."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    jwks_url: str = "http://127.0.0.1:8081/.well-known/jwks.json"
    jwt_issuer: str = "roomcast-auth"
    jwt_audience: str = "roomcast"
    # While auth's JWKS cannot be fetched, the last keys keep verifying this long (then
    # 503): a day outlasts any outage being worked on (roomcast.common.tokens).
    jwks_stale_if_error_seconds: float = Field(default=86_400.0, ge=0, le=7 * 86_400)
