"""processors/freshness: the index of payments awaiting news built from the current-state topic, its gauges,
and following the topic on the real broker."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from processor_harness import drop_topics, fresh_settings, produce

from paystream.config import PROVIDERS, Settings
from paystream.metrics import AUTHORIZATIONS_EXPIRING, OLDEST_NON_TERMINAL_AGE, STALE_PAYMENTS
from processors.freshness import FreshnessIndex, Waiting, export, follow_state_topic
from processors.payment_record import PaymentRecord, Quarantine
from processors.reconcile import AWAITING_NEWS
from processors.scheduling import PollSchedule
from processors.state_doc import document
from schemas.event import build_event, serialize_event
from schemas.join import Emitted, PaymentState
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
SLO_S = 900.0


SCHEDULE = PollSchedule([60], 3600)


def state_record(object_id: str, status: PaymentStatus | AgreementStatus | None, *, provider: str = "stripe",
                 observed: datetime | None = T0, occurred: datetime = T0 - timedelta(seconds=30),
                 first_seen: datetime = T0 - timedelta(minutes=5), expires: datetime | None = None,
                 **record: Any) -> tuple[bytes, bytes, list[Any]]:
    """A payments.state.v1 record (key, value, headers) as the reconcile stage writes it."""
    kind = ObjectKind.AGREEMENT if isinstance(status, AgreementStatus) else ObjectKind.PAYMENT
    object_type = "charge_permission" if kind is ObjectKind.AGREEMENT else "payment"
    state = PaymentState(provider, "acct", object_type, object_id, kind, status=status, sequence=1,
                         source=Source.PUSH, occurred_at=occurred, observed_at=observed,
                         authorization_expires_at=expires,
                         emitted=None if status is None else Emitted(status, None, 0, 0, 0, ()))
    event = None if status is None else serialize_event(build_event(state, T0 + timedelta(seconds=1))).decode()
    stored = PaymentRecord(first_seen=first_seen.timestamp(), state=state if status else None, last_event=event,
                           **record)
    key = state.payment_key
    return key.encode(), document(key, stored, SCHEDULE, T0), [("content-type", b"application/json")]


def test_a_payment_awaiting_news_is_indexed_with_its_first_seen_and_last_change_times() -> None:
    index = FreshnessIndex()
    key, value, headers = state_record("p1", PaymentStatus.PENDING)
    index.update(key, value, headers)
    assert index.waiting == {key: Waiting("stripe", (T0 - timedelta(minutes=5)).timestamp(), T0.timestamp())}


@pytest.mark.parametrize("status", sorted(AWAITING_NEWS))
def test_every_awaiting_status_is_indexed(status: PaymentStatus) -> None:
    index = FreshnessIndex()
    index.update(*state_record("p1", status))
    assert len(index.waiting) == 1


@pytest.mark.parametrize("status", sorted(set(PaymentStatus) - AWAITING_NEWS))
def test_an_outcome_removes_the_payment(status: PaymentStatus) -> None:
    index = FreshnessIndex()
    index.update(*state_record("p1", PaymentStatus.AUTHORIZED))
    index.update(*state_record("p1", status))
    assert index.waiting == {}


def test_a_tombstone_removes_the_payment_and_an_unknown_tombstone_is_harmless() -> None:
    index = FreshnessIndex()
    key, value, headers = state_record("p1", PaymentStatus.PENDING)
    index.update(key, value, headers)
    index.update(key, None, [])
    index.update(b"never:seen", None, [])
    assert index.waiting == {}


def test_agreements_never_wait() -> None:
    index = FreshnessIndex()
    index.update(*state_record("cp1", AgreementStatus.ACTIVE))
    assert index.waiting == {}


def test_a_payment_without_any_event_waits_from_when_it_was_first_seen() -> None:
    # Issue 18: registered, parked and thin-pushed payments have no status event; they wait all the same.
    index = FreshnessIndex()
    key, value, headers = state_record("p1", None, first_seen=T0 - timedelta(hours=2))
    index.update(key, value, headers)
    first = (T0 - timedelta(hours=2)).timestamp()
    assert index.waiting[key] == Waiting("stripe", first, first)


@pytest.mark.parametrize("record", [{"polling_ended": ("not_found", T0.timestamp())},
                                    {"quarantine": Quarantine("record_size_cap", T0.timestamp(), 10)}])
def test_a_payment_whose_polling_ended_or_that_is_quarantined_waits_no_more(record: dict[str, Any]) -> None:
    index = FreshnessIndex()
    index.update(*state_record("p1", None))
    index.update(*state_record("p1", None, **record))
    assert index.waiting == {}


def test_uncaptured_authorisations_lapsing_soon_are_counted() -> None:
    index = FreshnessIndex()
    index.update(*state_record("soon", PaymentStatus.AUTHORIZED, expires=T0 + timedelta(hours=5)))
    index.update(*state_record("later", PaymentStatus.AUTHORIZED, expires=T0 + timedelta(days=5)))
    index.update(*state_record("captured", PaymentStatus.CAPTURED, expires=T0 + timedelta(hours=5)))
    _, _, expiring = index.gauges(T0.timestamp(), SLO_S, warning_s=86400)
    assert expiring["stripe"] == 1
    export(index, SLO_S, now_s=T0.timestamp())
    assert AUTHORIZATIONS_EXPIRING.labels("stripe")._value.get() == 1


def test_first_seen_is_never_later_than_the_last_change() -> None:
    index = FreshnessIndex()
    key, value, headers = state_record("p1", PaymentStatus.PENDING, first_seen=T0 + timedelta(minutes=1))
    index.update(key, value, headers)
    assert index.waiting[key].first_seen == T0.timestamp()


def test_without_a_receipt_time_the_provider_time_is_the_last_change() -> None:
    index = FreshnessIndex()
    key, value, headers = state_record("p1", PaymentStatus.PENDING, observed=None)
    index.update(key, value, headers)
    assert index.waiting[key].last_change == (T0 - timedelta(seconds=30)).timestamp()


def test_a_newer_state_replaces_the_older_one_of_the_same_payment() -> None:
    index = FreshnessIndex()
    index.update(*state_record("p1", PaymentStatus.PENDING))
    key, value, headers = state_record("p1", PaymentStatus.AUTHORIZED, observed=T0 + timedelta(minutes=2))
    index.update(key, value, headers)
    assert index.waiting[key].last_change == (T0 + timedelta(minutes=2)).timestamp()


def test_gauges_per_provider_oldest_age_and_payments_past_the_slo() -> None:
    index = FreshnessIndex()
    now = T0 + timedelta(minutes=20)
    index.update(*state_record("old", PaymentStatus.PENDING, first_seen=T0 - timedelta(hours=1)))  # 20 min quiet
    index.update(*state_record("fresh", PaymentStatus.PENDING, observed=now - timedelta(minutes=1),
                               first_seen=now - timedelta(minutes=2)))
    index.update(*state_record("mo", PaymentStatus.AUTHORIZED, provider="mollie", observed=now - timedelta(minutes=14),
                               first_seen=now - timedelta(minutes=14)))
    index.update(*state_record("done", PaymentStatus.CAPTURED, provider="adyen"))
    oldest, late, _ = index.gauges(now.timestamp(), SLO_S)
    assert set(oldest) == set(late) == set(PROVIDERS)  # every provider reported, zero when none waits
    assert oldest == {"stripe": 80 * 60.0, "mollie": 14 * 60.0, "adyen": 0.0, "amazon_pay": 0.0, "standard": 0.0}
    assert late == {"stripe": 1, "mollie": 0, "adyen": 0, "amazon_pay": 0, "standard": 0}


def test_export_sets_the_prometheus_gauges() -> None:
    index = FreshnessIndex()
    index.update(*state_record("p1", PaymentStatus.PENDING, provider="standard", observed=T0,
                               first_seen=T0 - timedelta(seconds=10)))
    export(index, SLO_S, now_s=(T0 + timedelta(hours=1)).timestamp())
    assert OLDEST_NON_TERMINAL_AGE.labels("standard")._value.get() == 3610.0
    assert STALE_PAYMENTS.labels("standard")._value.get() == 1
    assert STALE_PAYMENTS.labels("adyen")._value.get() == 0


@pytest.mark.kafka
async def test_following_the_state_topic_indexes_its_latest_records(base_settings: Settings,
                                                                    kafka_bootstrap: str) -> None:
    settings = await fresh_settings(base_settings)
    pending = state_record("f-pending", PaymentStatus.PENDING)
    settled = state_record("f-settled", PaymentStatus.PENDING)
    records = [pending, settled, state_record("f-settled", PaymentStatus.CAPTURED),
               state_record("f-gone", PaymentStatus.PENDING)]
    await produce(settings, settings.topics.state, [(key, value) for key, value, _ in records])
    # A tombstone: the payment is gone.
    await produce(settings, settings.topics.state, [(b"stripe:acct:payment:f-gone", None)])  # type: ignore[list-item]
    index = FreshnessIndex()
    stop = threading.Event()
    follower = asyncio.create_task(asyncio.to_thread(follow_state_topic, settings, stop, index))
    try:
        deadline = time.monotonic() + 30
        while pending[0] not in index.waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        late = state_record("f-late", PaymentStatus.REQUIRES_ACTION)  # written while it follows
        await produce(settings, settings.topics.state, [(late[0], late[1])])
        while late[0] not in index.waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(follower, 30)
        await drop_topics(settings)
    first_seen = (T0 - timedelta(minutes=5)).timestamp()
    assert index.waiting == {key: Waiting("stripe", first_seen, T0.timestamp()) for key in (pending[0], late[0])}
