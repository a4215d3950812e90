"""Prometheus metrics of the rooms service (process-wide; labels are bounded: RPC short
names, gRPC status code names, event types)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from roomcast.common.metrics import LATENCY_BUCKETS

GRPC_REQUESTS = Counter(
    "roomcast_rooms_grpc_requests_total",
    "Rooms RPCs served, by RPC name and gRPC status code.",
    ["method", "code"],
)
GRPC_DURATION = Histogram(
    "roomcast_rooms_grpc_request_duration_seconds",
    "Rooms RPC latency, by RPC name.",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = Counter(
    "roomcast_rooms_events_published_total",
    "Membership and room events handed to NATS, by event type.",
    ["type"],
)
EVENT_PUBLISH_FAILURES = Counter(
    "roomcast_rooms_event_publish_failures_total",
    "Events that could not be handed to NATS (connection closed or buffer full), by type.",
    ["type"],
)
