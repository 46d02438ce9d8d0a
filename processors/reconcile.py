"""Reconcile one observation into its payment's state (pure, no Kafka): the join from :mod:`schemas.join`
plus what the processor needs around it — metrics, and the payment's entry in the poll schedule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paystream.metrics import (
    DISAGREEMENTS,
    DUPLICATES,
    EVENT_TO_RECEIPT_LAG,
    MISSED_WEBHOOKS,
    RECEIPT_TO_EMIT,
    STALE_IGNORED,
    TRANSITIONS,
)
from processors.codec import ObservationRecord
from processors.providers import PUSHING
from schemas.join import PaymentState, advance
from schemas.status import ObjectKind, PaymentStatus, Source

# Payments in these statuses (or with no status yet: parked) wait for news and are polled when it is
# late. Every other status is an outcome; later moves (refunds, disputes) arrive by push or sweep.
AWAITING_NEWS = frozenset({PaymentStatus.PENDING, PaymentStatus.REQUIRES_ACTION, PaymentStatus.AUTHORIZED,
                           PaymentStatus.PARTIALLY_CAPTURED})
# Polls that look for news nobody asked for: a change they find first is a webhook that never came.
UNPROMPTED_FETCHES = frozenset({"stale", "sweep"})


@dataclass(frozen=True, slots=True)
class Reconciled:
    state: PaymentState
    event: dict[str, Any] | None
    duplicate: bool
    stale: bool
    schedule: dict[str, Any] | None  # the poll-schedule entry, or None when the payment awaits no news


def reconcile(prev: PaymentState | None, record: ObservationRecord, now: datetime) -> Reconciled:
    obs = record.observation
    step = advance(prev, obs, now)
    provider = obs.provider
    if step.duplicate:
        DUPLICATES.labels(provider).inc()
    else:
        lag = (obs.observed_at - obs.occurred_at).total_seconds()
        EVENT_TO_RECEIPT_LAG.labels(provider, obs.source.value).observe(max(lag, 0.0))
        if (obs.source is Source.POLL and prev is not None and prev.source is Source.PUSH
                and obs.status is not None and obs.status != prev.status):
            DISAGREEMENTS.labels(provider).inc()
    if step.stale:
        STALE_IGNORED.labels(provider).inc()
    if step.event is not None:
        previous = step.state.previous_status
        TRANSITIONS.labels(provider, previous.value if previous else "none", step.state.status).inc()
        RECEIPT_TO_EMIT.labels(provider).observe(max((now - obs.observed_at).total_seconds(), 0.0))
        decided_by_this = obs.source is step.state.source and obs.evidence_id in step.state.evidence
        if (decided_by_this and obs.source is Source.POLL and record.fetch_reason in UNPROMPTED_FETCHES
                and provider in PUSHING):
            MISSED_WEBHOOKS.labels(provider).inc()
    return Reconciled(step.state, step.event, step.duplicate, step.stale, schedule_entry(step.state))


def schedule_entry(state: PaymentState) -> dict[str, Any] | None:
    """What the stale-payment timer needs about a payment that awaits news (None when it does not)."""
    if state.kind is not ObjectKind.PAYMENT or not state.retained:
        return None
    if state.status is not None and state.status not in AWAITING_NEWS:
        return None
    receipts = [group.observed_at.timestamp() for group in state.retained]
    return {
        "provider": state.provider, "account": state.account, "object_type": state.object_type,
        "object_id": state.object_id, "first_seen": min(receipts), "last_news": max(receipts),
    }
