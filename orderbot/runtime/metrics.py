"""Prometheus metrics of every process, named once here.

Each process serves its own registry on /metrics (the server on HTTP_PORT, the
workers on METRICS_PORT); Prometheus adds `job` and `instance`. The dashboard in
deploy/grafana and the alert rules in deploy/prometheus rely on these names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS_RECEIVED = Counter(
    "orderbot_webhooks_received_total", "Webhook requests received.", ["provider"]
)
WEBHOOKS_REJECTED = Counter(
    "orderbot_webhooks_rejected_total",
    "Webhook requests answered with an error, by reason.",
    ["provider", "reason"],
)
WEBHOOKS_PUBLISHED = Counter(
    "orderbot_webhooks_published_total",
    "Customer messages confirmed by the broker on `messages`.",
    ["provider"],
)
WEBHOOKS_SPOOLED = Counter(
    "orderbot_webhooks_spooled_total",
    "Customer messages written to the edge spool because the broker could not confirm them.",
    ["provider"],
)
WEBHOOKS_IGNORED = Counter(
    "orderbot_webhooks_ignored_total",
    "Webhook events acknowledged without queueing (not a client message, duplicate).",
    ["provider", "reason"],
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "orderbot_http_connections_refused_total",
    "Connections to the server answered 503 and closed: HTTP_MAX_CONNECTIONS were open.",
)
WEBHOOK_SECONDS = Histogram(
    "orderbot_webhook_seconds",
    "Time to answer a webhook, confirm included.",
    ["provider"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

SPOOL_DRAINED = Counter(
    "orderbot_spool_drained_total",
    "Spooled messages published to the broker, confirmed, and deleted from the spool.",
)
SPOOL_DEPTH = Gauge("orderbot_spool_messages", "Messages in the edge spool, not yet confirmed.")
SPOOL_OLDEST_SECONDS = Gauge(
    "orderbot_spool_oldest_seconds", "Age of the oldest message in the edge spool (0: empty)."
)

MESSAGES_PROCESSED = Counter(
    "orderbot_messages_processed_total",
    "Messages handled and acknowledged, by queue and outcome.",
    ["queue", "outcome"],
)
MESSAGES_FAILED = Counter(
    "orderbot_messages_failed_total",
    "Handler errors that returned a message to its queue (it counts a delivery).",
    ["queue"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "orderbot_messages_dead_lettered_total",
    "Messages this process parked in the DLQ, by the queue they came from and why.",
    ["queue", "reason"],
)
DIALOG_STEP_SECONDS = Histogram(
    "orderbot_dialog_step_seconds",
    "Time of one dialog step: lock, state, order, replies, commit.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MESSAGE_AGE_SECONDS = Histogram(
    "orderbot_message_age_seconds",
    "From webhook accepted to its step applied: queueing plus processing.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ORDERS_CREATED = Counter("orderbot_orders_created_total", "Orders written by the dialog.")

HANDOFFS = Counter(
    "orderbot_handoffs_total",
    "Conversations handed to a person or given back to the bot, by why: asked (the "
    "customer's words), operator (an operator wrote), closed (the provider closed it).",
    ["provider", "why"],
)
HANDOFF_CALLS = Counter(
    "orderbot_handoff_calls_total",
    "Calls telling the operators of a hand-off (transfer: Chat2Desk's transfer_to_group, "
    "notify: HANDOFF_NOTIFY_URL), by outcome: ok, failed.",
    ["call", "outcome"],
)

SENDS = Counter(
    "orderbot_sends_total",
    "Calls to a provider's send API, by outcome: ok, transient, permanent.",
    ["provider", "outcome"],
)
OUTBOX_ENQUEUED = Counter(
    "orderbot_outbox_enqueued_total",
    "Replies the worker handed to the outbox, by why: failed, queued_behind.",
    ["reason"],
)
OUTBOX_RETRIES = Counter(
    "orderbot_outbox_retries_total",
    "Outbox delivery attempts that failed and were scheduled again, by attempt number.",
    ["attempt"],
)
RATE_LIMIT_WAITS = Counter(
    "orderbot_send_rate_limited_total",
    "Sends that found the shared token bucket empty, by what followed: waited, deferred.",
    ["provider", "outcome"],
)

QUEUE_DEPTH = Gauge(
    "orderbot_queue_messages",
    "Messages ready in a queue, as the broker reports them.",
    ["queue"],
)
CONSUMER_INFLIGHT = Gauge(
    "orderbot_consumer_inflight", "Messages being handled right now.", ["queue"]
)
CONSUMER_PREFETCH = Gauge(
    "orderbot_consumer_prefetch", "The consumer's prefetch: its most messages in flight.", ["queue"]
)

RECONCILE_RECOVERED = Counter(
    "orderbot_reconcile_recovered_total",
    "Customer messages found in a provider's list that no webhook had brought, published.",
    ["provider"],
)
RECONCILE_API_CALLS = Counter(
    "orderbot_reconcile_api_calls_total",
    "Calls the reconciler made to a provider's list APIs, by outcome: ok, error, throttled.",
    ["provider", "outcome"],
)
RECONCILE_LAST_SUCCESS = Gauge(
    "orderbot_reconcile_last_success_timestamp_seconds",
    "When a reconcile pass last read every tenant of a provider without an error (Unix time).",
    ["provider"],
)
CHAT2DESK_WEBHOOKS_DISABLED = Gauge(
    "orderbot_chat2desk_webhooks_disabled",
    "Chat2Desk webhooks of a tenant that Chat2Desk reports disabled, as last read.",
    ["tenant"],
)
PARTITION_MESSAGES = Gauge(
    "orderbot_partition_messages",
    "Customer messages ready in one partition of `messages`, as the broker reports them.",
    ["partition"],
)
PARTITION_OWNED = Gauge(
    "orderbot_partition_owned",
    "1 for each partition of `messages` this worker consumes (the broker's single active"
    " consumer of it once the previous owner let go), 0 for one it gave up.",
    ["partition"],
)
ROLL_CALL_WORKERS = Gauge(
    "orderbot_roll_call_workers", "Live workers sharing the partitions, as this worker sees them."
)

HISTORY_ENTRIES = Counter(
    "orderbot_history_entries_total",
    "Conversation history entries by outcome: written, retried (a batch that failed and is"
    " written again), dropped (a full queue, or a row the database refused).",
    ["outcome"],
)
HISTORY_QUEUE = Gauge(
    "orderbot_history_queue_entries", "History entries waiting for the writer in this process."
)
HISTORY_RECEIPTS = Counter(
    "orderbot_history_receipts_total",
    "Providers' delivery statuses received, by provider and outcome: recorded, unapplied"
    " (kept for a reply whose row is not written yet, or not later than the row's), failed.",
    ["provider", "outcome"],
)

EVENTS_PUBLISHED = Counter(
    "orderbot_live_events_published_total", "Live events written to the bus, by kind.", ["kind"]
)
EVENTS_DROPPED = Counter(
    "orderbot_live_events_dropped_total",
    "Live events not written (bus slow or down): browsers miss them, the pipeline does not.",
    ["kind"],
)
