"""The auth service's own Prometheus metrics (HTTP metrics come from roomcast.common).

Defined once per process at import; every label has a small fixed set of values.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LOGINS = Counter(
    "roomcast_auth_logins_total",
    "Login attempts by result: success, invalid_credentials, rate_limited, overloaded.",
    ["result"],
)
REGISTRATIONS = Counter(
    "roomcast_auth_registrations_total",
    "Registration attempts by result: success, username_taken, email_taken, rate_limited.",
    ["result"],
)
RATE_LIMITED = Counter(
    "roomcast_auth_rate_limited_total",
    "Requests refused by a rate limit, by endpoint (login, register, user_lookup, "
    "user_batch_lookup) and key (ip, username, username_queue, user).",
    ["endpoint", "key"],
)
REFRESHES = Counter(
    "roomcast_auth_refreshes_total",
    "Refresh attempts by result: success, invalid, expired, reused.",
    ["result"],
)
SESSIONS_REVOKED = Counter(
    "roomcast_auth_sessions_revoked_total",
    "Refresh-token families revoked, by reason: logout, refresh_reuse.",
    ["reason"],
)
EVENTS_PUBLISHED = Counter(
    "roomcast_auth_events_published_total",
    "session_revoked events handed to NATS, by result: ok, not_connected, error.",
    ["result"],
)
LOGIN_DELAYED = Counter(
    "roomcast_auth_login_delayed_total",
    "Login attempts delayed by the per-username back-off (recent failures on the name).",
)
REVOCATIONS_STORED = Counter(
    "roomcast_auth_revocations_stored_total",
    "Writes of revoked sessions to the ROOMCAST_REVOKED bucket, by result: ok, error "
    "(retried every second until ok).",
    ["result"],
)
# bcrypt at cost 4 takes ~1 ms, at 12 ~250 ms, at 14 ~1 s: the buckets span all three.
BCRYPT_SECONDS = Histogram(
    "roomcast_auth_bcrypt_seconds",
    "Time spent in one bcrypt hash or check, by operation (hash, verify).",
    ["op"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
)
