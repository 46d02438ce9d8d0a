"""Reconcile (pure), the stale-poll schedule, the dedupe ledger entries, DLQ headers and the record codec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paystream.dlq import ERROR_CLASS, ERROR_REASON, FIRST_FAILURE_AT, SOURCE_OFFSET, dlq_headers
from paystream.errors import NormalizationError, UnknownProviderStatus
from paystream.metrics import MISSED_WEBHOOKS
from processors import dedupe
from processors.codec import ObservationRecord
from processors.reconcile import reconcile, schedule_entry
from processors.scheduling import PollSchedule, StalePoller, freshness
from schemas.observation import Observation
from schemas.status import ObjectKind, PaymentStatus, Source

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def obs(status: PaymentStatus | None, evidence: str, minute: int, source: Source = Source.PUSH,
        **extra: Any) -> Observation:
    return Observation(provider="stripe", account="acct", object_type="payment_intent", object_id="pi_1",
                       kind=ObjectKind.PAYMENT, status=status, provider_status=str(status), source=source,
                       evidence_id=evidence, occurred_at=T0 + timedelta(minutes=minute),
                       observed_at=T0 + timedelta(minutes=minute, seconds=5), **extra)


def test_codec_round_trips_an_observation_exactly() -> None:
    record = ObservationRecord(obs(PaymentStatus.CAPTURED, "e1", 1, amount=100, currency="EUR",
                                   captures={"ch_1": 100}, order_ref="o"), "stale")
    assert ObservationRecord.from_bytes(record.to_bytes()) == record


def test_codec_rejects_garbage_as_normalization_error() -> None:
    with pytest.raises(NormalizationError):
        ObservationRecord.from_bytes(b'{"provider": "x"}')


def test_first_observation_emits_sequence_one_and_a_schedule_entry() -> None:
    result = reconcile(None, ObservationRecord(obs(PaymentStatus.PENDING, "e1", 0)), T0 + timedelta(minutes=1))
    assert result.event is not None and result.event["data"]["sequence"] == 1
    assert result.schedule is not None and result.schedule["provider"] == "stripe"


def test_duplicate_emits_nothing() -> None:
    first = reconcile(None, ObservationRecord(obs(PaymentStatus.AUTHORIZED, "e1", 0)), T0)
    again = reconcile(first.state, ObservationRecord(obs(PaymentStatus.AUTHORIZED, "e1", 0)), T0)
    assert (again.duplicate, again.event) == (True, None)


def test_stale_regression_is_ignored() -> None:
    captured = reconcile(None, ObservationRecord(obs(PaymentStatus.CAPTURED, "e1", 5)), T0)
    late = reconcile(captured.state, ObservationRecord(obs(PaymentStatus.AUTHORIZED, "e2", 9)), T0)
    assert (late.stale, late.event, late.state.status) == (True, None, PaymentStatus.CAPTURED)


def test_terminal_status_leaves_the_schedule() -> None:
    result = reconcile(None, ObservationRecord(obs(PaymentStatus.CAPTURED, "e1", 0)), T0)
    assert result.schedule is None


def test_status_first_seen_by_a_stale_poll_counts_a_missed_webhook() -> None:
    before = MISSED_WEBHOOKS.labels("stripe")._value.get()
    pending = reconcile(None, ObservationRecord(obs(PaymentStatus.PENDING, "e1", 0)), T0)
    reconcile(pending.state, ObservationRecord(obs(PaymentStatus.CAPTURED, "f1", 9, Source.POLL), "stale"), T0)
    assert MISSED_WEBHOOKS.labels("stripe")._value.get() == before + 1


def test_parked_payment_awaits_news() -> None:
    parked = reconcile(None, ObservationRecord(obs(None, "e1", 0, refunds={"re_1": 5})), T0)
    assert (parked.event, parked.state.status) == (None, None)
    assert schedule_entry(parked.state) is not None


SCHEDULE = PollSchedule([60, 300, 900], repeat_s=3600)


@pytest.mark.parametrize(("quiet_s", "due"), [(59, 0), (60, 1), (359, 1), (360, 2), (1260, 3), (4859, 3),
                                              (4860, 4), (8460, 5)])
def test_polls_due_follow_the_gaps_then_repeat(quiet_s: float, due: int) -> None:
    assert SCHEDULE.polls_due(quiet_s) == due


def entry(last_news: datetime, provider: str = "stripe") -> dict[str, Any]:
    return {"provider": provider, "account": "acct", "object_type": "payment_intent", "object_id": "pi_1",
            "first_seen": last_news.timestamp(), "last_news": last_news.timestamp()}


def test_stale_poller_requests_each_poll_once() -> None:
    poller = StalePoller(SCHEDULE, {"stripe"})
    key, news = "stripe:acct:payment_intent:pi_1", entry(T0)
    assert poller.due([(key, news)], T0 + timedelta(seconds=30)) == []
    (request,) = poller.due([(key, news)], T0 + timedelta(seconds=61))
    assert (request.reason, request.attempt, request.not_before) == ("stale", 1, "2024-05-01T10:01:00.000Z")
    assert poller.due([(key, news)], T0 + timedelta(seconds=120)) == []
    (second,) = poller.due([(key, news)], T0 + timedelta(seconds=400))
    assert second.attempt == 2 and second.request_id != request.request_id


def test_news_restarts_the_schedule() -> None:
    poller = StalePoller(SCHEDULE, {"stripe"})
    key = "stripe:acct:payment_intent:pi_1"
    poller.due([(key, entry(T0))], T0 + timedelta(seconds=400))
    later = T0 + timedelta(seconds=500)
    (request,) = poller.due([(key, entry(later))], later + timedelta(seconds=61))
    assert request.attempt == 1


def test_push_only_providers_are_never_polled() -> None:
    poller = StalePoller(SCHEDULE, {"stripe"})
    assert poller.due([("adyen:acct:payment:P", entry(T0, "adyen"))], T0 + timedelta(days=3)) == []


def test_freshness_reports_oldest_age_and_late_count_per_provider() -> None:
    oldest, late = freshness([entry(T0), entry(T0 + timedelta(minutes=50))], T0 + timedelta(hours=1), 900,
                             ["stripe", "adyen"])
    assert (oldest["stripe"], late["stripe"], oldest["adyen"], late["adyen"]) == (3600.0, 1, 0.0, 0)


def test_dedupe_entries_expire_after_the_ttl() -> None:
    value = dedupe.entry(1000.0)
    assert dedupe.is_duplicate(value, 1000.0 + 29, ttl_s=30)
    assert dedupe.is_expired(value, 1000.0 + 30, ttl_s=30)
    assert not dedupe.is_duplicate(None, 0, ttl_s=30)
    assert not dedupe.is_duplicate(b"garbage", 0, ttl_s=30)


def test_dlq_headers_keep_the_original_and_the_first_failure_time() -> None:
    error = UnknownProviderStatus("stripe: no mapping for event type 'x'")
    first = dlq_headers([("trace", b"1")], error=error, topic="in", partition=2, offset=7, now=T0)
    again = dlq_headers(first, error=error, topic="dlq-replay", partition=0, offset=1, now=T0 + timedelta(days=1))
    headers = dict(again)
    assert headers["trace"] == b"1"
    assert (headers[ERROR_CLASS], headers[ERROR_REASON], headers[SOURCE_OFFSET]) == (
        b"UnknownProviderStatus", b"unknown_provider_status", b"1")
    assert headers[FIRST_FAILURE_AT] == b"2024-05-01T10:00:00.000Z"
    assert len([name for name, _ in again if name == ERROR_CLASS]) == 1
