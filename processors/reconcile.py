"""Reconcile one payment input into its payment's record (pure, no Kafka).

The join (:mod:`schemas.join`) decides the state; around it this module keeps what the stream needs per
payment — the dedupe ids of applied deliveries, the stale-poll chain (:mod:`processors.scheduling`) — and
counts what SREs watch. It returns the new record and the records to emit; the engine stores and sends them
in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paystream.metrics import (
    DISAGREEMENTS,
    DUPLICATES,
    EVENT_TO_RECEIPT_LAG,
    FETCH_REQUESTS_EMITTED,
    MISSED_WEBHOOKS,
    PARKED,
    RECEIPT_TO_EMIT,
    STALE_IGNORED,
    STATUS_EVENTS,
    TRANSITIONS,
    child,
)
from processors.payment_inputs import FetchInput, ObservationInput, PaymentInput, PolledInput
from processors.payment_record import PaymentRecord, is_duplicate, remember
from processors.providers import AGREEMENT_OBJECT_TYPES, PUSHING
from processors.scheduling import PollChain, PollSchedule, next_poll, poll_request
from schemas.envelopes import FetchRequest
from schemas.join import PaymentState, Retained, advance
from schemas.observation import Observation
from schemas.status import ObjectKind, PaymentStatus, Source

# Payments in these statuses (or with no status yet: parked, or only registered) wait for news and are polled
# when it is late. Every other status is an outcome; later moves (refunds, disputes) arrive by push or sweep.
AWAITING_NEWS = frozenset({PaymentStatus.PENDING, PaymentStatus.REQUIRES_ACTION, PaymentStatus.AUTHORIZED,
                           PaymentStatus.PARTIALLY_CAPTURED})
# Polls that look for news nobody asked for: a change they find first is a webhook that never came.
UNPROMPTED_FETCHES = frozenset({"stale", "sweep"})


@dataclass(slots=True)
class Reconciled:
    record: PaymentRecord
    changed: bool = False  # the record must be stored
    event: dict[str, Any] | None = None  # the status event to emit (and the payment's new current state)
    fetch_requests: list[FetchRequest] = field(default_factory=list)


def _is_news(prev: PaymentState | None, state: PaymentState, obs: Observation) -> bool:
    """Whether ``obs`` told the payment something it did not know: news restarts the stale-poll chain.

    A redelivery only adds evidence (the join collapses it: no new group). A poll that reads what a push
    already said is a new group for the join (the source is part of its content) but no news: the facts
    — provider time, status, word, amounts, references — are ones the payment already had."""
    if len(state.retained) <= (len(prev.retained) if prev is not None else 0):
        return False
    if prev is None:
        return True
    new = Retained.of(obs).facts()
    return not any(group.occurred_at == obs.occurred_at and group.facts() == new for group in prev.retained)


def _identity(item: PaymentInput) -> tuple[str, str, str, str, str]:
    """(payment key, provider, account, object type, object id) of the payment an input is about."""
    about: Any = item.observation if isinstance(item, ObservationInput) else (
        item.request if isinstance(item, FetchInput) else item)
    return item.payment_key, about.provider, about.account, about.object_type, about.object_id


def awaits_news(state: PaymentState | None, object_type: str) -> bool:
    if state is None:
        return object_type not in AGREEMENT_OBJECT_TYPES
    if state.kind is not ObjectKind.PAYMENT:
        return False
    return state.status is None or state.status in AWAITING_NEWS


class Reconciler:
    def __init__(self, schedule: PollSchedule, pollable: Iterable[str], dedupe_ttl_s: float) -> None:
        self.schedule = schedule
        self.pollable = frozenset(pollable)
        self.dedupe_ttl_s = dedupe_ttl_s

    def __call__(self, record: PaymentRecord | None, item: PaymentInput, now: datetime) -> Reconciled:
        """Raises :class:`~paystream.errors.NormalizationError` for an input the join refuses (DLQ)."""
        current = record or PaymentRecord(first_seen=now.timestamp())
        if isinstance(item, ObservationInput):
            return self._observation(current, item, now)
        if isinstance(item, FetchInput):
            return self._fetch(current, item, now)
        return self._polled(current, item, now)

    # --- the three kinds of input -------------------------------------------------------------------
    def _observation(self, record: PaymentRecord, item: ObservationInput, now: datetime) -> Reconciled:
        obs = item.observation
        now_s = now.timestamp()
        if item.dedupe_id is not None and is_duplicate(record.seen, item.dedupe_id, now_s, self.dedupe_ttl_s):
            child(DUPLICATES, obs.provider).inc()
            return Reconciled(record)
        prev = record.state
        step = advance(prev, obs, now)
        seen = record.seen if item.dedupe_id is None else remember(record.seen, item.dedupe_id, now_s,
                                                                   self.dedupe_ttl_s)
        result = Reconciled(PaymentRecord(record.first_seen, step.state, seen, record.chain), changed=True,
                            event=step.event)
        self._count_observation(prev, item, step.state, step.duplicate, step.stale, step.event is not None, now)
        if _is_news(prev, step.state, obs):
            self._restart(result, item, since=obs.observed_at.timestamp(), now=now)
        return result

    def _fetch(self, record: PaymentRecord, item: FetchInput, now: datetime) -> Reconciled:
        request = item.request
        now_s = now.timestamp()
        if is_duplicate(record.seen, item.dedupe_id, now_s, self.dedupe_ttl_s):
            child(DUPLICATES, request.provider).inc()
            return Reconciled(record)
        seen = remember(record.seen, item.dedupe_id, now_s, self.dedupe_ttl_s)
        result = Reconciled(PaymentRecord(record.first_seen, record.state, seen, record.chain), changed=True,
                            fetch_requests=[request])
        child(FETCH_REQUESTS_EMITTED, request.provider, request.reason).inc()
        if record.chain is None:  # the payment now waits for what the fetch finds: poll again if it stays quiet
            self._rearm(result, item, since=now_s, done=0, now=now)
        return result

    def _polled(self, record: PaymentRecord, item: PolledInput, now: datetime) -> Reconciled:
        chain = record.chain
        if chain is None or chain.request_id != item.request_id:
            return Reconciled(record)  # not the armed poll (a thin-push fetch, an older chain's poll)
        result = Reconciled(record, changed=True)
        self._rearm(result, item, since=chain.since, done=chain.poll, now=now)
        return result

    # --- helpers ------------------------------------------------------------------------------------
    def _restart(self, result: Reconciled, item: PaymentInput, *, since: float, now: datetime) -> None:
        """News at ``since``: the chain starts again from it. When the poll already armed is still to come and
        due no later than the restarted chain's first poll (news while the payment settles, seconds apart),
        that poll stands for the first one: no new request, and the chain continues from the news."""
        chain = result.record.chain
        if chain is not None and awaits_news(result.record.state, _identity(item)[3]):
            armed_due = chain.since + self.schedule.offset_of(chain.poll)
            if now.timestamp() <= armed_due <= since + self.schedule.offset_of(1):
                record = result.record
                result.record = PaymentRecord(record.first_seen, record.state, record.seen,
                                              PollChain(since, 1, chain.request_id))
                return
        self._rearm(result, item, since=since, done=0, now=now)

    def _rearm(self, result: Reconciled, item: PaymentInput, *, since: float, done: int, now: datetime) -> None:
        """Arm the next stale poll, or end the chain when the payment no longer waits for news."""
        record = result.record
        state = record.state
        key, provider, account, object_type, object_id = _identity(item)
        if provider not in self.pollable or not awaits_news(state, object_type):
            result.record = PaymentRecord(record.first_seen, state, record.seen, None)
            return
        poll = next_poll(self.schedule, since=since, done=done, now=now)
        request = poll_request(key, provider, account, object_type, object_id, since=since, poll=poll,
                               schedule=self.schedule, now=now)
        result.record = PaymentRecord(record.first_seen, state, record.seen, PollChain(since, poll, request.request_id))
        result.fetch_requests.append(request)
        child(FETCH_REQUESTS_EMITTED, provider, "stale").inc()

    @staticmethod
    def _count_observation(prev: PaymentState | None, item: ObservationInput, state: PaymentState,
                           duplicate: bool, stale: bool, emitted: bool, now: datetime) -> None:
        obs = item.observation
        provider = obs.provider
        if duplicate:
            child(DUPLICATES, provider).inc()
        else:
            lag = (obs.observed_at - obs.occurred_at).total_seconds()
            child(EVENT_TO_RECEIPT_LAG, provider, obs.source).observe(max(lag, 0.0))
            if (obs.source is Source.POLL and prev is not None and prev.source is Source.PUSH
                    and obs.status is not None and obs.status != prev.status):
                child(DISAGREEMENTS, provider).inc()
            if obs.status is None and state.status is None:
                child(PARKED, provider).inc()
        if stale:
            child(STALE_IGNORED, provider).inc()
        if emitted:
            previous = state.previous_status
            child(TRANSITIONS, provider, previous or "none", state.status).inc()
            child(STATUS_EVENTS, provider, "agreement.status.changed" if state.kind is ObjectKind.AGREEMENT
                                 else "payment.status.changed").inc()
            child(RECEIPT_TO_EMIT, provider).observe(max((now - obs.observed_at).total_seconds(), 0.0))
            decided_by_this = obs.source is state.source and obs.evidence_id in state.evidence
            if (decided_by_this and obs.source is Source.POLL and item.fetch_reason in UNPROMPTED_FETCHES
                    and provider in PUSHING):
                child(MISSED_WEBHOOKS, provider).inc()
