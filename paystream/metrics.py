"""Every Prometheus metric of paystream, defined here and nowhere else (DESIGN §7).

Conventions: ``paystream_`` prefix, base units (seconds, bytes), ``_total`` counters, histograms in
seconds, and label values from small closed sets (provider names, outcome codes, statuses) — never ids.
Alerts (deploy/prometheus) and the dashboard (deploy/grafana) may only name metrics defined here; a test
enforces it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Latency buckets from 0.5 ms to 30 s: verify and produce are sub-millisecond to tens of ms,
# end-to-end and fetches reach seconds.
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Freshness lags reach hours (a provider that retries late, a payment polled daily).
_LAG_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 24 * 3600.0)
_SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576)

registry: CollectorRegistry = REGISTRY

# --- ingest -------------------------------------------------------------------------------------
INGEST_REQUESTS = Counter(
    "paystream_ingest_requests_total",
    "HTTP deliveries by provider, account and outcome (accepted, or the rejection code).",
    ["provider", "account", "outcome"],
)
INGEST_REJECTIONS = Counter(
    "paystream_ingest_rejections_total",
    "Rejected deliveries (or batch items) by provider and reason; every rejection is counted here.",
    ["provider", "reason"],
)
SIGNATURE_FAILURES = Counter(
    "paystream_signature_failures_total",
    "Signature verification failures by provider and reason (bad_signature, stale_timestamp, ...).",
    ["provider", "reason"],
)
INGEST_PUBLISHED = Counter(
    "paystream_ingest_published_total",
    "Verified deliveries acknowledged by Kafka (acks=all) on the inbox topic, by provider and kind.",
    ["provider", "kind"],
)
VERIFY_SECONDS = Histogram(
    "paystream_ingest_verify_seconds", "Time to verify one delivery.", ["provider"], buckets=_FAST_BUCKETS
)
PRODUCE_SECONDS = Histogram(
    "paystream_kafka_produce_seconds",
    "Time from send to acks=all acknowledgement, by topic.",
    ["topic"],
    buckets=_FAST_BUCKETS,
)
REQUEST_SECONDS = Histogram(
    "paystream_ingest_request_seconds",
    "Time from the first byte of the request to the response, by provider.",
    ["provider"],
    buckets=_FAST_BUCKETS,
)
BODY_BYTES = Histogram(
    "paystream_ingest_body_bytes", "Size of received bodies.", ["provider"], buckets=_SIZE_BUCKETS
)
PRODUCER_READY = Gauge("paystream_kafka_producer_ready", "1 when the Kafka producer is connected, else 0.")
SNS_CERT_FETCHES = Counter(
    "paystream_sns_certificate_fetches_total",
    "SNS signing certificate fetches by outcome (ok, cached, refused, error).",
    ["outcome"],
)
SNS_SUBSCRIPTIONS = Counter(
    "paystream_sns_subscription_confirmations_total",
    "SNS SubscriptionConfirmation handling by outcome (confirmed, refused, failed).",
    ["outcome"],
)
HINTS_RATE_LIMITED = Counter(
    "paystream_hints_rate_limited_total",
    "Unsigned hints (Mollie) refused because the account's hint rate was exceeded.",
    ["provider", "account"],
)

# --- processors -------------------------------------------------------------------------------
OBSERVATIONS = Counter(
    "paystream_observations_total", "Observations normalized, by provider and source.", ["provider", "source"]
)
DUPLICATES = Counter(
    "paystream_duplicates_total", "Observations already seen (dedupe ledger hits), by provider.", ["provider"]
)
STALE_IGNORED = Counter(
    "paystream_stale_observations_total",
    "Observations that would move a payment backwards (stale regressions): recorded and ignored.",
    ["provider"],
)
TRANSITIONS = Counter(
    "paystream_status_transitions_total",
    "Status events emitted, by previous and new status ('none' for the first).",
    ["provider", "from_status", "to_status"],
)
STATUS_EVENTS = Counter(
    "paystream_status_events_total", "Events written to payments.status.v1, by provider and type.",
    ["provider", "type"],
)
DISAGREEMENTS = Counter(
    "paystream_push_poll_disagreements_total",
    "A poll result whose status differs from what pushes had established (before the join decided).",
    ["provider"],
)
MISSED_WEBHOOKS = Counter(
    "paystream_missed_webhooks_total",
    "Status changes first seen by a poll for a provider that pushes: a webhook that never came.",
    ["provider"],
)
PARKED = Counter(
    "paystream_parked_observations_total",
    "Amount-only observations that arrived before any status of their payment (early events): kept in the "
    "payment's state and applied once a status arrives, never dropped.",
    ["provider"],
)
OLDEST_NON_TERMINAL_AGE = Gauge(
    "paystream_oldest_non_terminal_payment_age_seconds",
    "Age of the oldest payment that is not in a terminal status, by provider.",
    ["provider"],
)
STALE_PAYMENTS = Gauge(
    "paystream_payments_past_freshness_slo",
    "Non-terminal payments with no news for longer than the freshness SLO, by provider.",
    ["provider"],
)
EVENT_TO_RECEIPT_LAG = Histogram(
    "paystream_provider_event_to_receipt_seconds",
    "Provider event time to our receipt, by provider and source.",
    ["provider", "source"],
    buckets=_LAG_BUCKETS,
)
RECEIPT_TO_EMIT = Histogram(
    "paystream_receipt_to_status_seconds",
    "Our receipt of the deciding observation to the status event being emitted, by provider.",
    ["provider"],
    buckets=_FAST_BUCKETS,
)
ENGINE_RESTARTS = Counter(
    "paystream_processor_engine_restarts_total",
    "Times the processor's stream engine failed (e.g. a broker outage longer than its transaction timeout) "
    "and the worker built a fresh one, resuming from the last committed checkpoint.",
)
DLQ = Counter(
    "paystream_dlq_total", "Records sent to payments.dlq.v1, by source topic and reason.", ["topic", "reason"]
)
EVENTS_IGNORED = Counter(
    "paystream_events_ignored_total",
    "Provider events, codes or notifications that the provider's catalog ignores on purpose (no status, amount, "
    "agreement or risk meaning), by provider and type. Never dead-lettered.",
    ["provider", "type"],
)
UNKNOWN_PROVIDER_WORDS = Counter(
    "paystream_unknown_provider_words_total",
    "Records dead-lettered because they carry a word the provider's catalog does not know (a new event type, "
    "code or status), by provider and word: a person must decide what it means.",
    ["provider", "word"],
)
ABSORBED = Counter(
    "paystream_absorbed_observations_total",
    "Observations whose fold would need a move the transition table forbids from the last emitted status: "
    "recorded, nothing emitted until evidence allows a legal move, by provider.",
    ["provider"],
)
QUARANTINED = Counter(
    "paystream_payments_quarantined_total",
    "Payments whose record reached the hard size cap: quarantined, their later inputs copied to the DLQ, by "
    "provider.",
    ["provider"],
)
RECORD_BYTES = Histogram(
    "paystream_payment_record_bytes",
    "Size of the per-payment record written to the processor's state store.",
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576),
)
POLL_CHAINS_ENDED = Counter(
    "paystream_poll_chains_ended_total",
    "Stale-poll chains that ended, by provider and reason (outcome, not_found, horizon, expired).",
    ["provider", "reason"],
)
AUTHORIZATIONS_EXPIRING = Gauge(
    "paystream_authorizations_expiring",
    "Authorized payments that nobody captured and whose authorisation lapses within the warning window "
    "(money the merchant loses if nobody captures), by provider.",
    ["provider"],
)
FETCH_REQUESTS_EMITTED = Counter(
    "paystream_fetch_requests_emitted_total",
    "Fetch requests emitted by the processors, by provider and reason (thin_push, hint, stale, registered).",
    ["provider", "reason"],
)

# --- fetcher ----------------------------------------------------------------------------------
FETCHES = Counter(
    "paystream_fetches_total", "Provider fetches by provider and outcome.", ["provider", "outcome"]
)
FETCH_SECONDS = Histogram(
    "paystream_fetch_seconds", "Provider API call latency, by provider.", ["provider"], buckets=_FAST_BUCKETS
)
RATE_LIMIT_WAIT_SECONDS = Histogram(
    "paystream_fetch_rate_limit_wait_seconds",
    "Time a fetch waited for its provider account's token bucket.",
    ["provider"],
    buckets=_FAST_BUCKETS,
)
FETCH_SLOT_WAIT_SECONDS = Histogram(
    "paystream_fetch_slot_wait_seconds",
    "Time a fetch waited for an in-flight slot (its account's share of the provider's in-flight cap).",
    ["provider"],
    buckets=_FAST_BUCKETS,
)
RATE_LIMITED_RESPONSES = Counter(
    "paystream_fetch_rate_limited_total", "429 answers received from providers.", ["provider"]
)
CIRCUIT_STATE = Gauge(
    "paystream_fetch_circuit_state",
    "Circuit breaker per provider account (0 closed, 1 half-open, 2 open).",
    ["provider", "account"],
)
FETCHES_IN_FLIGHT = Gauge("paystream_fetches_in_flight", "Provider calls in flight.", ["provider"])
SWEEP_CURSOR_AGE = Gauge(
    "paystream_sweep_cursor_age_seconds",
    "Age of the newest provider event the sweep has read (how far behind the sweep is).",
    ["provider", "sweep"],
)
FETCH_QUEUE_DEPTH = Gauge(
    "paystream_fetch_queue_depth", "Fetch requests waiting for their not-before time.", ["provider"]
)
FETCH_DELAYED = Gauge(
    "paystream_fetch_delayed_requests",
    "Fetch requests held in the durable delayed store (payments.fetch.delayed.v1) by this replica, waiting "
    "for their not-before time or running, by provider.",
    ["provider"],
)
FETCH_DELAYED_OVERDUE = Gauge(
    "paystream_fetch_delayed_overdue_seconds",
    "How long past its not-before time the oldest delayed request of this replica still is (0: none is "
    "overdue), by provider. Grows when a provider lane is backed up or a scheduled poll is stuck.",
    ["provider"],
)
FETCH_DELAYED_SUPERSEDED = Counter(
    "paystream_fetch_delayed_superseded_total",
    "Scheduled stale polls replaced by a newer stale request for the same payment before they ran.",
    ["provider"],
)
FETCH_DELAYED_LOAD_SECONDS = Histogram(
    "paystream_fetch_delayed_load_seconds",
    "Time to load the delayed store's partitions after an assignment (their requests wait meanwhile).",
    buckets=_FAST_BUCKETS,
)
FETCH_DELAYED_FENCED = Counter(
    "paystream_fetch_delayed_fenced_total",
    "Delayed-store partitions this replica lost because another replica took them over (its writer was "
    "fenced) before the group revoked them.",
)
FETCH_HINTS = Counter(
    "paystream_fetch_hints_total",
    "Hint fetch requests by what became of them: fetch (a fetch held for it), coalesced (a fetch of its object "
    "already covered it), deferred (its account held hints_per_account hint fetches: left in the topic, read "
    "again later and counted again).",
    ["provider", "outcome"],
)
FETCH_HINTS_HELD = Gauge(
    "paystream_fetch_hints_held",
    "Hint fetches held in memory (waiting for the account's rate limit or in flight), per account; at most "
    "FetchSettings.hints_per_account.",
    ["provider", "account"],
)
FETCH_HINT_BACKLOG = Gauge(
    "paystream_fetch_hint_backlog_offsets",
    "Offsets of the requests topic still to read again for hints left waiting there (an upper bound on those "
    "hints), per account. Grows during a hint flood; the partitions' commits wait at the backlogs' starts.",
    ["provider", "account"],
)

# --- archive / replay -------------------------------------------------------------------------
ARCHIVED_RECORDS = Counter(
    "paystream_archive_records_total", "Records uploaded to the archive, by topic.", ["topic"]
)
ARCHIVE_UPLOADS = Counter(
    "paystream_archive_uploads_total", "Archive object uploads by outcome (ok, error).", ["outcome"]
)
ARCHIVE_LAG_SECONDS = Gauge(
    "paystream_archive_lag_seconds",
    "Age of the oldest record consumed but not yet uploaded, by topic.",
    ["topic"],
)
ARCHIVE_RETENTION_DAYS = Gauge(
    "paystream_archive_retention_days",
    "Days after which the bucket's lifecycle expires archive objects, read at archiver start "
    "(0: no rule expires them; -1: the lifecycle could not be read).",
)
REPLAYED_RECORDS = Counter(
    "paystream_replay_records_total", "Records republished by replay, by provider.", ["provider"]
)


def exposition(multiproc_dir: Path | None = None) -> bytes:
    """The text exposition for GET /metrics (aggregated over worker processes when they share a dir)."""
    if multiproc_dir is None:
        return generate_latest(registry)
    aggregate = CollectorRegistry()
    MultiProcessCollector(aggregate, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    return generate_latest(aggregate)


@cache
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: the per-record paths of the processor count several metrics per
    input, and the lookup behind ``labels()`` (validation, a lock) costs more than the increment. Label values
    are bounded by the metric rules (providers, sources, statuses), so is this cache."""
    return metric.labels(*labels)
