"""Gateway settings, from ``ROOMCAST_GATEWAY_*`` environment variables.

One class for the whole gateway: the WebSocket side and the REST edge read the same
object (the REST edge's variables are listed in docs/api.md, the others in
docs/gateway.md). Every limit carries the reason for its default.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from roomcast.common.chatrecord import MAX_TEXT_CHARS
from roomcast.common.chatstream import StreamSettings
from roomcast.common.proxies import IpNetwork, comma_list, parse_networks
from roomcast.common.settings import NatsSettings, ServiceSettings, TokenSettings

# A browser-origin allowlist from a comma-separated variable: each origin stripped of
# spaces and of a trailing "/" ("*" = any origin).
OriginList = Annotated[tuple[str, ...], NoDecode]


class Settings(ServiceSettings, NatsSettings, TokenSettings, StreamSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMCAST_GATEWAY_", extra="ignore", frozen=True)

    # One port serves REST and the WebSocket (/v1/ws): see multiplexer.py.
    port: int = Field(default=8080, ge=0, le=65535)
    # A name for this replica in logs and in the NATS connection name.
    instance_name: str = "gateway"
    rooms_target: str = "127.0.0.1:50051"
    auth_url: str = "http://127.0.0.1:8081"
    history_url: str = "http://127.0.0.1:8083"
    # The notifier (inbox and Web Push subscriptions, docs/notifications.md).
    notifier_url: str = "http://127.0.0.1:8084"
    # Comma-separated browser origins allowed to open a WebSocket ("*" = any). A request
    # without an Origin header (a non-browser client) is always allowed: Origin only
    # protects browsers' ambient credentials, and Roomcast tokens travel in a frame.
    allowed_origins: OriginList = ("*",)

    # --- connection limits -------------------------------------------------------------
    # Largest WebSocket message accepted (bytes). A text message is at most 4000
    # characters (16 KB of UTF-8) plus a small envelope; 64 KiB leaves room for the
    # envelope and escapes while keeping a hostile client's buffer small. Larger: 1009.
    max_frame_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Characters in a text message body: a long chat message, not a document. At most
    # the stored record's ceiling (chatrecord.MAX_TEXT_CHARS): history refuses longer.
    max_body_chars: int = Field(default=4000, ge=1, le=MAX_TEXT_CHARS)
    # Largest uploaded file (docs/files.md): 25 MiB, as history's default; a larger
    # upload is refused (413) before a byte of it is relayed.
    files_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)
    # Seconds a new socket may take to send its auth frame: a client sends it right
    # after the handshake; 5 s covers a slow mobile link, and an idle unauthenticated
    # socket cannot hold a slot for long.
    auth_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # Frames per second per connection (token bucket refill) and the burst it may spend
    # at once: 20/s is far above human typing, the burst absorbs a reconnect that
    # resubscribes to many rooms at once.
    rate_limit_per_second: float = Field(default=20.0, gt=0)
    rate_limit_burst: float = Field(default=40.0, ge=1)
    # Rate-limit violations within the window after which the socket is closed with
    # 4008: a client that backs off after its first rate_limited error never gets near
    # it, a flood reaches it within milliseconds.
    rate_limit_max_violations: int = Field(default=20, ge=1)
    rate_limit_violation_window_seconds: float = Field(default=10.0, gt=0)
    # Rooms one socket may subscribe to: a client shows a room list, not every room.
    max_subscriptions_per_connection: int = Field(default=100, ge=1)
    # Bytes queued in user space for one socket before it is closed with 4009 (too
    # slow). 1 MiB is ~250 full-size messages: a reader that far behind is better off
    # reconnecting with since=<seq>, and it never slows the other sockets.
    max_send_buffer_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Heartbeat: ping a socket idle for this long, close it when the pong is this late.
    # 20 s stays under common load-balancer idle timeouts (60 s); 10 s tolerates a slow
    # mobile round trip.
    heartbeat_idle_seconds: float = Field(default=20.0, gt=0)
    heartbeat_timeout_seconds: float = Field(default=10.0, gt=0)
    # Sockets one gateway accepts; beyond it the handshake gets 503 and the balancer
    # or the client tries another replica. Bounded by memory (~20-50 KB per socket).
    max_connections: int = Field(default=20_000, ge=1)
    # Per-client socket caps (socketcaps.py; each gateway counts its own sockets).
    # Sockets of one user: a person's tabs and devices (each tab holds one socket) fit
    # in 50 with room to spare (the load scenarios model up to 20 devices per user, and
    # a reconnect may briefly overlap the socket it replaces); a leaked token or a
    # client reconnecting in a loop cannot hold thousands (50 is 0.25% of
    # max_connections). Beyond it the new socket is closed with 4008 after its auth.
    max_sockets_per_user: int = Field(default=50, ge=1)
    # Unauthenticated sockets of one client address (they count against the user once
    # authenticated). A socket is unauthenticated until its auth frame is handled: one
    # round trip, up to a few hundred ms on a busy gateway. A big NAT's reconnect storm
    # after a gateway restart, or a load generator opening 1500 sockets/s from one host,
    # stays below 1000; sockets that never authenticate (each held up to the 5 s auth
    # deadline) cannot take more than 5% of max_connections from one address.
    max_unauthenticated_sockets_per_address: int = Field(default=1000, ge=1)
    # The proxies in front of the gateway (IPs or CIDRs): a socket from one of them is
    # accounted to the address it reports in X-Forwarded-For; the REST edge keeps their
    # X-Forwarded-For chain when forwarding to auth (rest_upstream.forwarded_for), so
    # auth's per-IP login limits see the real client. Default: none (the TCP peer is
    # the client, and a chain a client sends is replaced by its address).
    trusted_proxies: Annotated[tuple[IpNetwork, ...], NoDecode] = ()
    # First request head on the shared port: larger is refused with 431, slower than the
    # timeout is dropped (slowloris). Browsers send ~1-2 KB of headers.
    max_request_head_bytes: int = Field(default=8 * 1024, ge=1024, le=64 * 1024)
    request_head_timeout_seconds: float = Field(default=10.0, gt=0)

    # --- publishing and replay ----------------------------------------------------------
    # How long a send waits for the JetStream ack before the client gets an error (and
    # may retry with the same client_id: deduplication makes that safe).
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    # Messages replayed on subscribe with since=<seq>; more than this → the newest ones
    # and truncated=true (the client pages the rest from history).
    max_replay_messages: int = Field(default=1000, ge=1)
    # Live messages buffered for a socket while it replays; beyond it the socket is too
    # slow to catch up and is closed with 4009.
    max_catchup_buffer_messages: int = Field(default=10_000, ge=1)
    # Timeout of one stream read (direct get, consumer creation) during replay or repair.
    stream_request_timeout_seconds: float = Field(default=5.0, gt=0)

    # --- stream -------------------------------------------------------------------------
    stream_manage: bool = True  # create/update the CHAT stream at start
    # The stream's shape (replicas, retention, duplicate window): StreamSettings.

    # --- membership ---------------------------------------------------------------------
    # How long a "member" answer from rooms is trusted: its maximum age. Events invalidate
    # it at once; if an event is lost, sends see the change within this, and live
    # subscriptions within this plus the revalidation interval (revalidation.py). 30 s
    # costs one FilterMembers per subscribed room (per 1,000 users) per 30 s.
    membership_cache_ttl_seconds: float = Field(default=30.0, ge=0)
    # How often live subscriptions whose answer is older than the TTL are re-checked
    # with rooms (a kick whose event was missed ends access within TTL + this). 5 s is
    # small next to the TTL; a sweep that finds nothing due costs a walk of the sockets.
    membership_revalidate_interval_seconds: float = Field(default=5.0, gt=0)
    # "Not a member" answers are trusted more briefly, so a join followed at once by a
    # subscribe works even if the member_joined event is late.
    membership_negative_ttl_seconds: float = Field(default=2.0, ge=0)
    # Entries kept; the least recently used are evicted past this.
    membership_cache_size: int = Field(default=200_000, ge=1)
    rooms_timeout_seconds: float = Field(default=3.0, gt=0)

    # --- presence and typing (presence.py, typing_relay.py) ----------------------------
    # Gateways heartbeat on NATS this often; a peer silent for `missed` intervals is dead
    # and its users go offline. 2 s x 3 (+ the 0.5 s check) bounds a crashed gateway's
    # ghosts to 6.5 s while a GC pause or a busy loop of a few seconds is tolerated.
    presence_heartbeat_seconds: float = Field(default=2.0, gt=0, le=60)
    presence_missed_heartbeats: int = Field(default=3, ge=2, le=20)
    # How long a room's first snapshot waits for peers' replies before presence queries
    # are answered anyway (replies take ~1 ms on a LAN; late ones still merge as events).
    presence_snapshot_timeout_seconds: float = Field(default=0.5, gt=0, le=10)
    # At most one typing notice per user and room per this interval (per gateway); extra
    # ones are dropped silently: indicators last a few seconds after the last notice.
    typing_min_interval_seconds: float = Field(default=2.0, gt=0, le=60)

    # --- REST edge (rest/; docs/api.md) ----------------------------------------------
    # Browser origins allowed to call the REST API cross-origin (comma-separated, "*" =
    # any). Default: none, so no CORS headers at all: a same-origin or non-browser
    # client is unaffected, a foreign web page cannot read responses.
    cors_allowed_origins: OriginList = ()
    # auth answers in milliseconds, except login/register which wait for a bcrypt
    # hash: auth queues at most ~8 s of hashing before it answers 503 itself, so 10 s
    # lets its own answer through and still bounds a hung auth.
    auth_request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # A history page is one indexed MongoDB read plus a cached membership check
    # (history gives rooms 2 s); 5 s means history is overloaded or gone.
    history_request_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # An inbox page is one indexed MongoDB read and a count, with no rooms call: 5 s
    # means the notifier is overloaded or gone, as for history.
    notifier_request_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # Connecting to a service on the cluster network takes about a millisecond; 2 s
    # covers one lost SYN (retransmitted after 1 s) and fails fast when it is down.
    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # Concurrent upstream HTTP requests per gateway (auth + history). Each REST request
    # holds at most one; beyond this a request waits up to the connect timeout for a
    # free connection, then gets 503, instead of queueing without limit.
    upstream_max_connections: int = Field(default=200, ge=1, le=10_000)
    # Idle keep-alive connections kept open: enough for steady traffic without a TCP
    # handshake per request, few enough to not hold hundreds of idle sockets on auth.
    upstream_max_keepalive: int = Field(default=50, ge=0, le=10_000)
    # Idle connections are closed after this: below the upstreams' own keep-alive
    # timeout (30 s, roomcast.common.lifecycle.uvicorn_server), so the gateway never
    # reuses a connection the server is about to close.
    upstream_keepalive_expiry_seconds: float = Field(default=20.0, ge=0, le=300)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        return parse_networks(value)

    @field_validator("allowed_origins", "cors_allowed_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        value = comma_list(value)
        if isinstance(value, list | tuple):
            return tuple(str(v).strip().rstrip("/") for v in value if str(v).strip())
        return value

    @property
    def origins(self) -> frozenset[str] | None:
        """The WebSocket's allowed origins (lowercase), or None when any is allowed."""
        if "*" in self.allowed_origins:
            return None
        return frozenset(o.lower() for o in self.allowed_origins)
