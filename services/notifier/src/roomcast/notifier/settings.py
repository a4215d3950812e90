"""notifier's settings, from ``ROOMCAST_NOTIFIER_*`` environment variables."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from roomcast.common.chatstream import StreamSettings
from roomcast.common.settings import MongoSettings, NatsSettings, ServiceSettings, TokenSettings

# The notification kinds, which are also the webhook event names' suffixes.
KINDS = ("dm", "mention", "reply")
WEBHOOK_EVENTS = tuple(f"notification.{kind}" for kind in KINDS)


def is_private_host(host: str) -> bool:
    """An address the notifier must not be pointed at by accident: loopback, private,
    link-local (cloud metadata at 169.254.169.254), unspecified or reserved IP literals,
    and ``localhost``. Names are not resolved here: the operator owns the DNS they name."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


class WebhookEndpoint(BaseModel):
    """One operator-configured receiver: where, with which secret, for which events."""

    model_config = {"frozen": True, "extra": "forbid"}

    # A short stable name: part of each delivery's id and the metrics' ``endpoint`` label
    # (bounded: operators configure a handful).
    name: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    url: str = Field(pattern=r"^https?://", max_length=2048)
    # The HMAC-SHA256 key; 32 bytes of entropy or more, as GitHub and Stripe advise.
    secret: SecretStr = Field(min_length=16, max_length=512)
    events: tuple[str, ...] = WEBHOOK_EVENTS

    @field_validator("url")
    @classmethod
    def _plain_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError("url is not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise ValueError("url must not carry credentials (the signature authenticates)")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - set(WEBHOOK_EVENTS)
        if unknown or not value:
            raise ValueError(f"events must be a non-empty subset of {list(WEBHOOK_EVENTS)}")
        return value


class Settings(ServiceSettings, MongoSettings, NatsSettings, TokenSettings, StreamSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMCAST_NOTIFIER_", extra="ignore", frozen=True)

    port: int = Field(default=8084, ge=1, le=65535)
    mongo_db: str = "roomcast_notifier"

    # --- rooms, as the notifier's own service account -------------------------------
    # rooms identifies every caller by an access token. The notifier logs in to auth
    # as a service account whose username is in auth's
    # ROOMCAST_AUTH_SERVICE_READER_USERNAMES (the read-only service role: it sees every
    # room and its members, a DM room's two members included, and may change nothing).
    rooms_target: str = "127.0.0.1:50051"
    auth_url: str = "http://127.0.0.1:8081"
    service_username: str = Field(default="roomcast-notifier", pattern=r"^[A-Za-z0-9_.-]{3,32}$")
    # Required: no default, so a deploy without the secret fails at start.
    service_password: SecretStr = Field(min_length=12, max_length=256)
    # Development stacks only: register the account when the login finds no such user.
    service_register: bool = False
    # A rooms or auth call slower than this is retried with the batch (rooms answers
    # in about a millisecond; 2 s means overloaded or gone).
    rooms_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    # How long a room's member list is reused to decide who may be notified. A member
    # removed from a room may still get a mention for this long; 30 s keeps rooms'
    # load at one listing per active room per 30 s.
    members_cache_seconds: float = Field(default=30.0, ge=0, le=3600)
    # Rooms whose kind and member list are cached (a listing of 10k members is ~1 MB).
    rooms_cache_entries: int = Field(default=2_000, ge=1, le=100_000)
    # Members listed at most per room (100 per page): in a larger room mentions and
    # replies are checked against the first this-many members only, and people beyond
    # them are not notified rather than notified without a membership check.
    max_members_listed: int = Field(default=10_000, ge=100, le=1_000_000)

    # --- the durable consumer (see history's settings for the same trade-offs) -------
    consumer_name: str = Field(default="notifier", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # 128 records per fetch: one insert for the batch's notifications while a batch's
    # recipient look-ups (a few rooms calls at most, cached) stay short.
    batch_size: int = Field(default=128, ge=1, le=4096)
    # Short, so a SIGTERM is noticed within about a second.
    fetch_timeout: float = Field(default=1.0, gt=0, le=30)
    max_ack_pending: int = Field(default=512, ge=1, le=100_000)
    # A batch is written well within a second; 30 s leaves room for a MongoDB election.
    ack_wait_seconds: float = Field(default=30.0, gt=0, le=3600)

    # --- inbox ------------------------------------------------------------------------
    # Inbox reads and writes per user: bursts of 120, refilled over a minute.
    api_rate_capacity: int = Field(default=120, ge=1, le=1_000_000)
    api_rate_per_seconds: float = Field(default=60.0, gt=0, le=3600)

    # --- Web Push -----------------------------------------------------------------------
    # The VAPID private key (RFC 8292): the raw 32-byte P-256 scalar in base64url, or a
    # PEM. Required: no default; the public key is served to browsers.
    vapid_private_key: SecretStr
    # The ``sub`` claim push services use to contact the operator.
    vapid_subject: str = Field(default="mailto:ops@roomcast.invalid", pattern=r"^(mailto:|https:)")
    # Hosts push endpoints may point at (exact names or ``*.suffix``): the notifier
    # POSTs to subscription endpoints, so an open list would let any user make it
    # request internal addresses. The browsers' push services by default.
    push_endpoint_hosts: Annotated[tuple[str, ...], NoDecode] = (
        "fcm.googleapis.com",
        "updates.push.services.mozilla.com",
        "*.push.services.mozilla.com",
        "*.notify.windows.com",
        "web.push.apple.com",
    )
    # Plain http endpoints: never in production (local test push services only).
    push_allow_http: bool = False
    # Subscriptions per user (browsers x devices); registering one more replaces the
    # oldest, so a user reinstalling a browser is never locked out.
    push_max_subscriptions: int = Field(default=10, ge=1, le=100)
    # Coalescing window: the first pending notification of a user waits this long, and
    # everything that arrived meanwhile goes out as one push. 2 s turns a burst (50
    # messages in a busy DM) into one push while a single message still arrives at once
    # on a human scale.
    push_coalesce_seconds: float = Field(default=2.0, ge=0, le=300)
    # How long a push service keeps a push for an offline device (the TTL header):
    # a day, after which the inbox (not the push) is the way to catch up.
    push_ttl_seconds: int = Field(default=86_400, ge=0, le=28 * 86_400)
    # A push service answering slower than this counts as a failed attempt.
    push_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # How long a presence question waits for the gateways' answers (they answer in
    # milliseconds; a gateway that does not is treated as not reporting the user).
    presence_timeout_seconds: float = Field(default=0.5, gt=0, le=10)

    # --- webhooks -----------------------------------------------------------------------
    # JSON list of {"name", "url", "secret", "events"?}; empty: no webhooks.
    webhooks: Annotated[tuple[WebhookEndpoint, ...], NoDecode] = ()
    # Webhook URLs on loopback, private or link-local addresses (and localhost) are
    # refused at start unless this is set: a receiver inside the cluster is a deliberate
    # choice, not a typo that has the notifier POST signed events to internal services.
    webhook_allow_private_hosts: bool = False
    # Attempts before a delivery is dead-lettered: with the backoff below, 8 attempts
    # span about 4 minutes, long enough for a receiver's deploy or restart.
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    # Backoff before retry n: first * 2^(n-1), capped. 1 s, 2 s, 4 s... 128 s.
    webhook_backoff_first_seconds: float = Field(default=1.0, gt=0, le=600)
    webhook_backoff_max_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # A receiver slower than this counts as a failed attempt (GitHub waits 10 s).
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Deliveries in flight at once over all endpoints.
    webhook_concurrency: int = Field(default=8, ge=1, le=256)

    @field_validator("push_endpoint_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @field_validator("webhooks", mode="before")
    @classmethod
    def _parse_webhooks(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            return tuple(orjson.loads(value)) if value.strip() else ()
        return value

    @model_validator(mode="after")
    def _public_webhooks(self) -> Settings:
        if not self.webhook_allow_private_hosts:
            for endpoint in self.webhooks:
                if is_private_host(urlsplit(endpoint.url).hostname or ""):
                    raise ValueError(
                        f"webhook {endpoint.name!r} points at a private address; set "
                        "ROOMCAST_NOTIFIER_WEBHOOK_ALLOW_PRIVATE_HOSTS=true if intended"
                    )
        return self

    @field_validator("webhooks")
    @classmethod
    def _unique_names(cls, value: tuple[WebhookEndpoint, ...]) -> tuple[WebhookEndpoint, ...]:
        names = [e.name for e in value]
        if len(names) != len(set(names)):
            raise ValueError("webhook names must be unique")
        return value
