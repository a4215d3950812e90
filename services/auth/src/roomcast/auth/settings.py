"""Configuration of the auth service, from ``ROOMCAST_AUTH_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from roomcast.common.proxies import IpNetwork, comma_list, parse_networks
from roomcast.common.settings import MongoSettings, NatsSettings, ServiceSettings


def _default_hash_concurrency() -> int:
    # bcrypt is pure CPU: more concurrent hashes than cores only adds queueing inside
    # the threads instead of in front of them.
    return max(1, os.cpu_count() or 1)


class Settings(ServiceSettings, MongoSettings, NatsSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMCAST_AUTH_", extra="ignore", frozen=True)

    port: int = Field(default=8081, ge=1, le=65535)
    mongo_db: str = "roomcast_auth"

    # Token claims: every verifier checks these two, so they are part of the contract.
    issuer: str = "roomcast-auth"
    audience: str = "roomcast"
    # The Ed25519 private key (PEM, PKCS#8), inline or from a file: exactly one is
    # required; there is no default key, so production can never sign with a known one.
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    # Extra public keys (concatenated PEM) published in the JWKS during key rotation.
    previous_public_keys_file: Path | None = None

    # Usernames (case-insensitive) whose tokens carry the global "admin" role.
    admin_usernames: Annotated[frozenset[str], NoDecode] = frozenset()
    # Usernames (case-insensitive) of service accounts whose tokens carry the
    # "service-reader" role: rooms lets them read every room and its members and
    # refuses them every write (the notifier's account).
    service_reader_usernames: Annotated[frozenset[str], NoDecode] = frozenset()
    # Peers whose X-Forwarded-For is believed (the gateways, a load balancer); IPs or CIDRs.
    trusted_proxies: Annotated[tuple[IpNetwork, ...], NoDecode] = ()

    # bcrypt work factor: 12 costs ~250 ms per hash on a 2020s core, the usual balance
    # between brute-force cost and login latency. Tests use 4 (~1 ms).
    bcrypt_cost: int = Field(default=12, ge=4, le=31)
    # Hashes computed at once (threads); see _default_hash_concurrency.
    hash_concurrency: int = Field(default_factory=_default_hash_concurrency, ge=1, le=256)
    # Nice value of the hashing threads (0 = same priority as the event loop). At 10 the
    # kernel gives the event loop thread the CPU first when hashes saturate the cores,
    # so cheap requests keep their latency while bcrypt uses everything left.
    hash_thread_niceness: int = Field(default=10, ge=0, le=19)
    # Hashes allowed to wait for a thread before logins are refused with 503: at cost 12
    # and 2 cores, 64 queued hashes is ~8 s of work, about the longest a client waits.
    max_pending_hashes: int = Field(default=64, ge=1, le=100_000)

    # Access tokens are not revocable, so they are short: 15 minutes bounds how long a
    # logged-out or stolen token keeps working, at one refresh per 15 minutes per client.
    access_ttl_seconds: int = Field(default=900, ge=60, le=86_400)
    # A refresh token is valid for 30 days after it was issued (each use issues a new
    # one), so an active client stays logged in and an abandoned one expires.
    refresh_ttl_seconds: int = Field(default=30 * 86_400, ge=60, le=400 * 86_400)

    # Replicas of the ROOMCAST_REVOKED KV bucket (revoked sessions, events.py): 3 on a
    # 3-node NATS cluster, so a revocation survives the loss of a node like chat does.
    revocations_replicas: int = Field(default=1, ge=1, le=5)

    # Login and registration attempts per client address, and per (username, address):
    # 10 per 30 s lets a human mistype several times and caps one address's guessing at
    # ~29k per day (each also costs a bcrypt hash). Buckets refill continuously, and no
    # bucket is shared by a username across addresses: never a lockout of the owner.
    login_rate_limit: int = Field(default=10, ge=1, le=100_000)
    login_rate_window_seconds: float = Field(default=30.0, gt=0, le=86_400)
    # Per-username back-off (limits.UsernameBackoff), across addresses: after 5 recent
    # failures on a name each attempt on it costs 0.25 s, doubling per further failure
    # up to 4 s. One failure is forgiven every 30 s. Addresses that failed on the name
    # in the last 15 min share its time slots (one check per delay: 4 s under attack,
    # refused beyond the 4 s cap), so a guesser gets one unpaced try per name and
    # address per 15 min; any other address (the owner's) waits at most 4 s, never
    # refused. 4 s plus auth's bounded hashing queue stays within the gateways' 10 s
    # wait for auth.
    login_backoff_free_failures: int = Field(default=5, ge=0, le=10_000)
    login_backoff_base_seconds: float = Field(default=0.25, ge=0, le=60)
    login_backoff_max_seconds: float = Field(default=4.0, ge=0, le=60)
    login_backoff_forgive_seconds: float = Field(default=30.0, gt=0, le=86_400)
    login_backoff_address_memory_seconds: float = Field(default=900.0, gt=0, le=86_400)
    register_rate_limit: int = Field(default=10, ge=1, le=100_000)
    register_rate_window_seconds: float = Field(default=30.0, gt=0, le=86_400)

    # Every auth request body is a few hundred bytes; 16 KiB leaves room for a 1024-char
    # password in 4-byte UTF-8 and still refuses junk early.
    max_body_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)

    @field_validator("admin_usernames", "service_reader_usernames", mode="before")
    @classmethod
    def _parse_admins(cls, value: Any) -> Any:
        value = comma_list(value)
        if isinstance(value, list | tuple | set | frozenset):
            return frozenset(str(v).lower() for v in value)
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        return parse_networks(value)
