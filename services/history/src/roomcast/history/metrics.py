"""The consumer's Prometheus metrics (HTTP metrics come from roomcast.common).

Labels are bounded: a fixed set of invalid-record reasons, never a room or user id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from roomcast.common.chatrecord import INVALID_RECORD_REASONS

CONSUMER_LAG = Gauge(
    "roomcast_history_consumer_lag_messages",
    "Chat records in the stream not yet stored and acknowledged by history "
    "(the durable consumer's pending plus unacknowledged messages).",
)
INGESTED = Counter(
    "roomcast_history_ingested_total",
    "Chat records processed and acknowledged (messages, edits, deletes, invalid ones).",
)
STORED = Counter(
    "roomcast_history_stored_messages_total",
    "Messages inserted into MongoDB (redelivered duplicates not counted).",
)
INGEST_BATCH_SECONDS = Histogram(
    "roomcast_history_ingest_batch_seconds",
    "Time to write and acknowledge one fetched batch, retries included.",
    # A healthy batch takes milliseconds to tens of milliseconds; the long buckets
    # show batches held up by MongoDB retries.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
INGEST_BATCH_RECORDS = Histogram(
    "roomcast_history_ingest_batch_records",
    "Records in one written batch (gathered for up to batch_window_seconds).",
    # From a lone record (an idle stream) to a full default batch (256).
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
REDELIVERIES = Counter(
    "roomcast_history_redeliveries_total",
    "Records delivered more than once (after a crash, a lost ack or an ack timeout).",
)
WRITE_ERRORS = Counter(
    "roomcast_history_write_errors_total",
    "Failed MongoDB batch writes (each is retried; nothing is acknowledged until it works).",
)
INVALID_RECORDS = Counter(
    "roomcast_history_invalid_records_total",
    "Records acknowledged without being stored or applied, by reason.",
    ["reason"],
)
DEAD_LETTERS = Counter(
    "roomcast_history_dead_letters_total",
    "Records that could not be parsed, kept in the dead_letters collection, by reason.",
    ["reason"],
)
# Every reason at zero from the start: the first dead letter is an increase the alert sees.
for _reason in INVALID_RECORD_REASONS:
    DEAD_LETTERS.labels(_reason)
LAST_STORED_SEQUENCE = Gauge(
    "roomcast_history_last_stored_sequence",
    "Highest stream sequence this replica has written and acknowledged.",
)
READ_RECEIPTS = Counter(
    "roomcast_history_read_receipts_total",
    "Read positions received (PUT /v1/rooms/{id}/read), before coalescing.",
)
READ_POSITION_WRITES = Counter(
    "roomcast_history_read_position_writes_total",
    "Bulk writes of read positions (one per batch window, coalesced per user and room).",
)
STREAM_MISMATCH = Gauge(
    "roomcast_history_stream_mismatch",
    "1 while history refuses to consume because CHAT is not the stream it recorded "
    "(deleted and re-created); 0 otherwise.",
)
