"""The gateway's Prometheus metrics. Labels are bounded: no user or room id, ever.

The fan-out loop never touches these per socket: it counts per message (``inc(n)``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Fan-out from NATS receipt to the last socket write: tens of microseconds for a small
# room, milliseconds for thousands of sockets; beyond 100 ms something is wrong.
FANOUT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5)
# JetStream publish round trip: ~0.2-1 ms on a LAN, a few ms with R3 replication.
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
# Messages replayed on one resume: mostly a handful, up to max_replay_messages.
RESUME_BUCKETS = (0, 1, 5, 10, 50, 100, 500, 1000, 5000)

CONNECTIONS = Gauge("roomcast_gateway_connections", "Open WebSocket connections.")
SUBSCRIPTIONS = Gauge("roomcast_gateway_subscriptions", "Room subscriptions held by sockets.")
ROOM_SUBSCRIPTIONS = Gauge(
    "roomcast_gateway_room_subscriptions", "Rooms with a live NATS subscription on this gateway."
)
DELIVERIES = Counter(
    "roomcast_gateway_deliveries_total", "Message frames written to sockets (live and replay)."
)
FANOUT_SECONDS = Histogram(
    "roomcast_gateway_fanout_seconds",
    "Time from a live message's receipt from NATS to its last socket write.",
    buckets=FANOUT_BUCKETS,
)
PUBLISH_SECONDS = Histogram(
    "roomcast_gateway_publish_seconds",
    "JetStream publish round trip of a send, until the PubAck.",
    buckets=PUBLISH_BUCKETS,
)
MESSAGES_SENT = Counter(
    "roomcast_gateway_messages_sent_total",
    "Send commands by result (ok, duplicate, forbidden, not_found, invalid, error).",
    ["result"],
)
CLOSES = Counter(
    "roomcast_gateway_closes_total", "Sockets closed by the gateway, by code.", ["code"]
)
GAP_REPAIRS = Counter(
    "roomcast_gateway_gap_repairs_total",
    "Live-stream gaps (missed republished messages) repaired from the stream.",
)
GAP_REPAIRED_MESSAGES = Counter(
    "roomcast_gateway_gap_repaired_messages_total",
    "Messages fetched from the stream to repair live gaps.",
)
RESUME_MESSAGES = Histogram(
    "roomcast_gateway_resume_messages",
    "Messages replayed to a socket subscribing with since.",
    buckets=RESUME_BUCKETS,
)
NATS_RECONNECTS = Counter("roomcast_gateway_nats_reconnects_total", "NATS reconnections.")
RATE_LIMITED = Counter("roomcast_gateway_rate_limited_total", "Frames refused by the rate limit.")
MEMBERSHIP_LOOKUPS = Counter(
    "roomcast_gateway_membership_lookups_total",
    "Membership checks by outcome (hit; stale: a member answer past its TTL served while "
    "the revalidation sweep refreshes it; miss; overtaken: the answer predated an event "
    "and was asked again).",
    ["outcome"],
)
REVALIDATION_ENDED = Counter(
    "roomcast_gateway_revalidation_ended_subscriptions_total",
    "Subscriptions ended because a re-check found the user no longer a member (the "
    "membership event was missed, revalidation.py).",
)
EVENTS_RECEIVED = Counter(
    "roomcast_gateway_events_received_total", "Room and user events received.", ["type"]
)
HANDSHAKES_REJECTED = Counter(
    "roomcast_gateway_handshakes_rejected_total",
    "WebSocket handshakes refused, by reason (origin, capacity, draining, head).",
    ["reason"],
)
SOCKETS_REFUSED = Counter(
    "roomcast_gateway_sockets_refused_total",
    "Sockets closed with 4008 because their address (unauthenticated) or user held its cap "
    "(socketcaps.py), by limit (address, user).",
    ["limit"],
)
PRESENCE_EVENTS = Counter(
    "roomcast_gateway_presence_events_total",
    "Presence changes of a room seen by this gateway (a user's first/last socket), by status.",
    ["status"],
)
TYPING = Counter(
    "roomcast_gateway_typing_total",
    "Typing notices by result (published, dropped, not_subscribed, relayed).",
    ["result"],
)
PRESENCE_GATEWAYS = Gauge(
    "roomcast_gateway_presence_gateways", "Other gateways heard on the presence heartbeat."
)
MESSAGE_CHANGES = Counter(
    "roomcast_gateway_message_changes_total",
    "Edit, delete and reaction commands by kind and result (ok, duplicate, not_found, ...).",
    ["kind", "result"],
)
READS = Counter(
    "roomcast_gateway_reads_total",
    "Read receipts by result (stored, coalesced, failed).",
    ["result"],
)

MODERATOR_DELETIONS = Counter(
    "roomcast_gateway_moderator_deletions_total",
    "Moderators' deletions of other members' messages reported to rooms' audit log, by outcome.",
    ["outcome"],
)
for _deletion_outcome in ("recorded", "failed"):
    MODERATOR_DELETIONS.labels(_deletion_outcome)

SLOW_MODE_CHECKS = Counter(
    "roomcast_gateway_slow_mode_checks_total",
    "Sends checked against a room's slow mode, by outcome.",
    ["outcome"],
)
for _check_outcome in ("allowed", "refused", "resend", "unavailable"):
    SLOW_MODE_CHECKS.labels(_check_outcome)
