"""The notifier's Prometheus metrics (HTTP metrics come from roomcast.common).

Labels are bounded: notification kinds, fixed outcomes, invalid-record reasons, and
the operator's webhook endpoint names (a handful, from the settings).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from roomcast.common.chatrecord import INVALID_RECORD_REASONS
from roomcast.notifier.settings import KINDS

CONSUMER_LAG = Gauge(
    "roomcast_notifier_consumer_lag_messages",
    "Chat records in the stream not yet processed and acknowledged by the notifier.",
)
PROCESSED = Counter(
    "roomcast_notifier_records_processed_total",
    "Chat records processed and acknowledged (whether or not they notified anyone).",
)
NOTIFICATIONS = Counter(
    "roomcast_notifier_notifications_total",
    "Notifications inserted into inboxes (redelivered duplicates not counted), by kind.",
    ["kind"],
)
for _kind in KINDS:
    NOTIFICATIONS.labels(_kind)
REDELIVERIES = Counter(
    "roomcast_notifier_redeliveries_total",
    "Records delivered more than once (after a crash, a lost ack or an ack timeout).",
)
BATCH_SECONDS = Histogram(
    "roomcast_notifier_batch_seconds",
    "Time to turn one fetched batch into notifications and acknowledge it, retries included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WRITE_ERRORS = Counter(
    "roomcast_notifier_write_errors_total",
    "Failed batch attempts (MongoDB or rooms unavailable); each is retried before the ack.",
)
DEAD_LETTERS = Counter(
    "roomcast_notifier_dead_letters_total",
    "Records that could not be parsed, kept in the dead_letters collection, by reason.",
    ["reason"],
)
for _reason in INVALID_RECORD_REASONS:
    DEAD_LETTERS.labels(_reason)

PUSHES = Counter(
    "roomcast_notifier_pushes_total",
    "Web Push requests by outcome: sent (2xx), gone (404/410: subscription removed), "
    "failed (other status or network error), skipped_online (the user was online).",
    ["outcome"],
)
for _outcome in ("sent", "gone", "failed", "skipped_online"):
    PUSHES.labels(_outcome)
PUSH_SUBSCRIPTIONS_REMOVED = Counter(
    "roomcast_notifier_push_subscriptions_removed_total",
    "Subscriptions removed because the push service said they are gone (404/410).",
)

WEBHOOK_ATTEMPTS = Counter(
    "roomcast_notifier_webhook_attempts_total",
    "Webhook delivery attempts by endpoint and outcome (delivered, failed).",
    ["endpoint", "outcome"],
)
WEBHOOK_DEAD_LETTERS = Counter(
    "roomcast_notifier_webhook_dead_letters_total",
    "Webhook deliveries given up after the last attempt, by endpoint.",
    ["endpoint"],
)
WEBHOOK_PENDING = Gauge(
    "roomcast_notifier_webhook_pending_deliveries",
    "Webhook deliveries waiting for their first or next attempt.",
)
WEBHOOK_SECONDS = Histogram(
    "roomcast_notifier_webhook_request_seconds",
    "Time a webhook receiver took to answer one attempt.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def register_endpoints(names: list[str]) -> None:
    """Export every configured endpoint's series at zero, so the first failure or dead
    letter is an increase an alert sees."""
    for name in names:
        WEBHOOK_DEAD_LETTERS.labels(name)
        for outcome in ("delivered", "failed"):
            WEBHOOK_ATTEMPTS.labels(name, outcome)
