"""Reconcile one payment input into its payment's record (pure, no Kafka).

The join (:mod:`schemas.join`) decides the state and whether an event is due; around it this module keeps what
the stream needs per payment — the dedupe ids of thin pushes, the stale-poll chain (:mod:`processors.scheduling`)
and where polling ended, the quarantine of a payment past the size cap — and counts what SREs watch. It returns
the new record and what to emit; the engine stores and sends them in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ingest.providers.parsing import AGREEMENT_OBJECT_TYPES, PUSHING
from paystream.metrics import (
    ABSORBED,
    DISAGREEMENTS,
    DUPLICATES,
    EVENT_TO_RECEIPT_LAG,
    FETCH_REQUESTS_EMITTED,
    MISSED_WEBHOOKS,
    PARKED,
    POLL_CHAINS_ENDED,
    RECEIPT_TO_EMIT,
    STALE_IGNORED,
    STATUS_EVENTS,
    TRANSITIONS,
    child,
)
from processors.payment_inputs import FetchInput, ObservationInput, PaymentInput, PolledInput
from processors.payment_record import PaymentRecord, Quarantine, is_duplicate, remember
from processors.scheduling import Horizons, PollChain, PollSchedule, next_poll, poll_request
from schemas.envelopes import FetchRequest
from schemas.event import serialize_event
from schemas.join import PaymentState, Step, advance
from schemas.status import ObjectKind, PaymentStatus, Source

# Payments in these statuses (or with no status yet: parked, or only registered) wait for news and are polled
# when it is late. Every other status is an outcome; later moves (refunds, disputes) arrive by push or sweep.
AWAITING_NEWS = frozenset({PaymentStatus.PENDING, PaymentStatus.REQUIRES_ACTION, PaymentStatus.AUTHORIZED,
                           PaymentStatus.PARTIALLY_CAPTURED})
# Polls that look for news nobody asked for: a change they find first is a webhook that never came.
UNPROMPTED_FETCHES = frozenset({"stale", "sweep"})
# Fetch requests that start a payment's wait (and so its stale-poll chain). A hint does not: Mollie hints
# again on every change, and a made-up id must cost nothing here.
WAIT_STARTERS = frozenset({"thin_push", "registered", "manual"})


@dataclass(slots=True)
class Reconciled:
    record: PaymentRecord
    changed: bool = False  # the record must be stored
    event: dict[str, Any] | None = None  # the status event to emit
    event_bytes: bytes | None = None  # ... serialized (the same bytes go into the record's last_event)
    fetch_requests: list[FetchRequest] = field(default_factory=list)
    quarantined: bool = False  # the payment is quarantined: nothing applied, the input goes to the DLQ


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
    def __init__(self, schedule: PollSchedule, polled: Mapping[str, Iterable[str]] | Iterable[str],
                 dedupe_ttl_s: float, *, horizons: Horizons | None = None, epoch: int = 0) -> None:
        """``polled``: provider -> the object types whose polls read a payment's status (a bare iterable of
        providers means every object type of those)."""
        self.schedule = schedule
        self.polled = ({provider: frozenset(types) for provider, types in polled.items()}
                       if isinstance(polled, Mapping) else dict.fromkeys(polled, frozenset[str]()))
        self.dedupe_ttl_s = dedupe_ttl_s
        self.horizons = horizons or Horizons(not_found_limit=3, horizon_s=31 * 86400, expiry_grace_s=3600)
        self.epoch = epoch

    def __call__(self, record: PaymentRecord | None, item: PaymentInput, now: datetime) -> Reconciled:
        """Raises :class:`~paystream.errors.NormalizationError` for an input the join refuses (DLQ)."""
        if record is not None and record.quarantine is not None:
            return Reconciled(record, quarantined=True)
        if isinstance(item, FetchInput):
            return self._fetch(record, item, now)
        current = record or PaymentRecord(first_seen=now.timestamp())
        if isinstance(item, ObservationInput):
            return self._observation(current, item, now)
        return self._polled(current, item, now)

    def quarantine(self, record: PaymentRecord, reason: str, size: int, now: datetime) -> PaymentRecord:
        """``record`` (the last one stored, under the cap) flagged: later inputs only reach the DLQ."""
        return replace(record, chain=None, quarantine=Quarantine(reason, now.timestamp(), size))

    # --- the three kinds of input -------------------------------------------------------------------
    def _observation(self, record: PaymentRecord, item: ObservationInput, now: datetime) -> Reconciled:
        obs = item.observation
        prev = record.state
        step = advance(prev, obs, now, epoch=self.epoch)
        if step.duplicate and step.event is None and step.state == prev:
            child(DUPLICATES, obs.provider).inc()
            return Reconciled(record)
        event_bytes = None if step.event is None else serialize_event(step.event)
        result = Reconciled(replace(record, state=step.state) if event_bytes is None else
                            replace(record, state=step.state, last_event=event_bytes.decode()),
                            changed=True, event=step.event, event_bytes=event_bytes)
        self._count_observation(prev, item, step, now)
        if step.news:
            self._restart(result, item, since=obs.observed_at.timestamp(), now=now)
        return result

    def _fetch(self, record: PaymentRecord | None, item: FetchInput, now: datetime) -> Reconciled:
        request = item.request
        now_s = now.timestamp()
        child(FETCH_REQUESTS_EMITTED, request.provider, request.reason).inc()
        if request.reason not in WAIT_STARTERS:  # a hint: the fetcher coalesces them; nothing to keep here
            return Reconciled(record or PaymentRecord(first_seen=now_s), fetch_requests=[request])
        current = record or PaymentRecord(first_seen=now_s)
        if item.dedupe_id is not None and is_duplicate(current.seen, item.dedupe_id, now_s, self.dedupe_ttl_s):
            child(DUPLICATES, request.provider).inc()
            return Reconciled(current)
        seen = current.seen if item.dedupe_id is None else remember(current.seen, item.dedupe_id, now_s,
                                                                   self.dedupe_ttl_s)
        result = Reconciled(replace(current, seen=seen), changed=True, fetch_requests=[request])
        if current.chain is None:  # the payment now waits for what the fetch finds: poll again if it stays quiet
            self._rearm(result, item, since=now_s, done=0, now=now, fresh=True)
        return result

    def _polled(self, record: PaymentRecord, item: PolledInput, now: datetime) -> Reconciled:
        chain = record.chain
        if chain is None or chain.request_id != item.request_id:
            return Reconciled(record)  # not the armed poll (a thin-push fetch, an older chain's poll)
        not_found = chain.not_found + 1 if item.outcome == "not_found" else 0
        result = Reconciled(replace(record, chain=replace(chain, not_found=not_found)), changed=True)
        self._rearm(result, item, since=chain.since, done=chain.poll, now=now)
        return result

    # --- the chain ----------------------------------------------------------------------------------
    def _restart(self, result: Reconciled, item: PaymentInput, *, since: float, now: datetime) -> None:
        """News at ``since``: the chain starts again from it. When the poll already armed is still to come and
        due no later than the restarted chain's first poll (news while the payment settles, seconds apart),
        that poll stands for the first one: no new request, and the chain continues from the news."""
        record = result.record
        chain = record.chain
        if chain is not None and awaits_news(record.state, _identity(item)[3]):
            armed_due = chain.since + self.schedule.offset_of(chain.poll)
            if now.timestamp() <= armed_due <= since + self.schedule.offset_of(1):
                result.record = replace(record, chain=replace(chain, since=since, poll=1, not_found=0))
                return
        self._rearm(result, item, since=since, done=0, now=now, fresh=True)

    def _rearm(self, result: Reconciled, item: PaymentInput, *, since: float, done: int, now: datetime,
               fresh: bool = False) -> None:
        """Arm the next stale poll, or end the chain (recording why) when the payment no longer waits for news
        or polling reached its horizon."""
        record = result.record
        key, provider, account, object_type, object_id = _identity(item)
        if provider not in self.polled or not (not self.polled[provider] or object_type in self.polled[provider]):
            result.record = replace(record, chain=None)
            return
        ended = self._end_reason(record, object_type, now)
        if ended is not None:
            if record.chain is None and record.polling_ended is not None and record.polling_ended[0] == ended:
                return  # ended already, for the same reason: the end keeps its time
            if record.chain is not None or fresh:
                child(POLL_CHAINS_ENDED, provider, ended).inc()
            result.record = replace(record, chain=None, polling_ended=(ended, now.timestamp()))
            return
        poll = next_poll(self.schedule, since=since, done=done, now=now)
        version = record.chain_version + 1
        request = poll_request(key, provider, account, object_type, object_id, since=since, poll=poll,
                               version=version, schedule=self.schedule, now=now)
        not_found = 0 if fresh or record.chain is None else record.chain.not_found
        result.record = replace(record, polling_ended=None, chain_version=version, chain=PollChain(
            since, poll, request.request_id, version=version, not_found=not_found))
        result.fetch_requests.append(request)
        child(FETCH_REQUESTS_EMITTED, provider, "stale").inc()

    def _end_reason(self, record: PaymentRecord, object_type: str, now: datetime) -> str | None:
        state = record.state
        if not awaits_news(state, object_type):
            return "outcome"
        if record.chain is not None and record.chain.not_found >= self.horizons.not_found_limit:
            return "not_found"
        now_s = now.timestamp()
        expires = state.authorization_expires_at if state is not None else None
        if (state is not None and state.status is PaymentStatus.AUTHORIZED and expires is not None
                and now_s > expires.timestamp() + self.horizons.expiry_grace_s):
            return "expired"
        if now_s - record.first_seen > self.horizons.horizon_s:
            return "horizon"
        return None

    # --- metrics ------------------------------------------------------------------------------------
    @staticmethod
    def _count_observation(prev: PaymentState | None, item: ObservationInput, step: Step, now: datetime) -> None:
        obs = item.observation
        state = step.state
        provider = obs.provider
        if step.duplicate:
            child(DUPLICATES, provider).inc()
        else:
            lag = (obs.observed_at - obs.occurred_at).total_seconds()
            child(EVENT_TO_RECEIPT_LAG, provider, obs.source).observe(max(lag, 0.0))
            if (obs.source is Source.POLL and prev is not None and prev.source is Source.PUSH
                    and obs.status is not None and obs.status != prev.status):
                child(DISAGREEMENTS, provider).inc()
            if obs.status is None and state.status is None:
                child(PARKED, provider).inc()
        if step.stale:
            child(STALE_IGNORED, provider).inc()
        if step.absorbed:
            child(ABSORBED, provider).inc()
        if step.event is not None:
            child(TRANSITIONS, provider, state.previous_status or "none", state.status).inc()
            child(STATUS_EVENTS, provider, "agreement.status.changed" if state.kind is ObjectKind.AGREEMENT
                                 else "payment.status.changed").inc()
            child(RECEIPT_TO_EMIT, provider).observe(max((now - obs.observed_at).total_seconds(), 0.0))
            decided_by_this = obs.source is state.source and obs.evidence_id in state.evidence
            if (decided_by_this and obs.source is Source.POLL and item.fetch_reason in UNPROMPTED_FETCHES
                    and provider in PUSHING):
                child(MISSED_WEBHOOKS, provider).inc()

