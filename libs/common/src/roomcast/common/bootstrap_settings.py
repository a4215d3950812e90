"""Settings of the bootstrap, from ``ROOMCAST_BOOTSTRAP_*`` environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from roomcast.common.proxies import comma_list
from roomcast.common.tokens import LEEWAY_SECONDS

# auth's default access-token lifetime (ROOMCAST_AUTH_ACCESS_TTL_SECONDS).
DEFAULT_ACCESS_TTL_SECONDS = 900


class BootstrapSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMCAST_BOOTSTRAP_", extra="ignore", frozen=True)

    # How long to wait for a server to answer at all: it may be starting beside us (a
    # Job applied with the StatefulSet; a fresh pod pulling its image). Ten minutes
    # covers a slow rollout; a Job retries after that.
    connect_deadline_seconds: float = Field(default=600.0, gt=0, le=3600)

    # This pod's name (the downward API's metadata.name), for ``--only-on``: the
    # MongoDB sidecar runs on every member and bootstraps only on the first.
    pod_name: str = ""

    # NATS -----------------------------------------------------------------------
    nats_url: str = "nats://127.0.0.1:4222"
    # CHAT's replicas: 3 on the 3-node cluster (quorum 2), 1 on a single server. An
    # existing stream with fewer is raised to this, never lowered.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # The revoked-sessions bucket's replicas, raised the same way.
    revocations_replicas: int = Field(default=1, ge=1, le=5)
    # The rooms' retention-periods bucket's replicas (rooms'
    # ROOMCAST_ROOMS_RETENTION_BUCKET_REPLICAS), raised the same way.
    retention_replicas: int = Field(default=1, ge=1, le=5)
    # Must equal auth's ROOMCAST_AUTH_ACCESS_TTL_SECONDS: a revocation is kept as long
    # as a token of its session can be accepted (lifetime + verifiers' leeway). Only
    # used when the bucket is created here; auth owns it afterwards.
    access_ttl_seconds: int = Field(default=DEFAULT_ACCESS_TTL_SECONDS, ge=60, le=86_400)

    # MongoDB --------------------------------------------------------------------
    # The member this runs against, host:port; the localhost exception (first user
    # on a fresh set with keyfile auth) only works over 127.0.0.1 inside its pod.
    mongo_address: str = "127.0.0.1:27017"
    mongo_set_name: str = "rs0"
    # The set's members (host:port, comma-separated) used by replSetInitiate; empty
    # means a set of one, ``mongo_address`` itself. The first one gets priority 2 so it
    # becomes primary and can use the localhost exception.
    mongo_members: Annotated[tuple[str, ...], NoDecode] = ()
    # An election takes seconds; 120 s also covers members that are slow to start.
    mongo_primary_deadline_seconds: float = Field(default=120.0, gt=0, le=3600)
    # The root user, created while no user exists; empty: no users are managed.
    mongo_admin_username: str = ""
    mongo_admin_password: SecretStr = SecretStr("")
    # One readWrite user per service on its own database; empty password: skipped.
    mongo_auth_password: SecretStr = SecretStr("")
    mongo_rooms_password: SecretStr = SecretStr("")
    mongo_history_password: SecretStr = SecretStr("")
    mongo_notifier_password: SecretStr = SecretStr("")

    @property
    def revocations_ttl_seconds(self) -> float:
        return float(self.access_ttl_seconds + LEEWAY_SECONDS)

    @property
    def members(self) -> tuple[str, ...]:
        return self.mongo_members or (self.mongo_address,)

    def service_users(self) -> list[tuple[str, str, str]]:
        """(user, password, database) for each service that has a password."""
        wanted = [
            ("roomcast-auth", self.mongo_auth_password, "roomcast_auth"),
            ("roomcast-rooms", self.mongo_rooms_password, "roomcast_rooms"),
            ("roomcast-history", self.mongo_history_password, "roomcast_history"),
            ("roomcast-notifier", self.mongo_notifier_password, "roomcast_notifier"),
        ]
        return [
            (user, pwd.get_secret_value(), db) for user, pwd, db in wanted if pwd.get_secret_value()
        ]

    _members_list = field_validator("mongo_members", mode="before")(comma_list)
