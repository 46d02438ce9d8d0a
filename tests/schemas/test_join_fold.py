"""The pure join, case by case: transitions, stale regressions, amounts, parking, dedupe, events."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
import pytest
from observation_factory import T0, at, obs

from paystream.errors import NormalizationError
from schemas.join import PaymentState, advance, fold
from schemas.observation import Observation
from schemas.state_codec import from_json, to_json
from schemas.status import AgreementStatus as A
from schemas.status import ObjectKind, Source
from schemas.status import PaymentStatus as P

EMITTED = at(3600)


def run(observations: list[Observation]) -> tuple[PaymentState, list[dict[str, Any]]]:
    state: PaymentState | None = None
    events = []
    for item in observations:
        step = advance(state, item, EMITTED)
        state = step.state
        if step.event is not None:
            events.append(step.event)
    assert state is not None
    return state, events


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [event["data"]["status"] for event in events]


def test_forward_progress_emits_one_event_per_change_numbered_from_one() -> None:
    _, events = run([obs(P.PENDING, "e1", occurred=0), obs(P.AUTHORIZED, "e2", occurred=1),
                     obs(P.CAPTURED, "e3", occurred=2, captures={"ch_1": 1000})])
    assert statuses(events) == ["pending", "authorized", "captured"]
    assert [e["data"]["sequence"] for e in events] == [1, 2, 3]
    assert [e["data"]["previous_status"] for e in events] == [None, "pending", "authorized"]


def test_older_lower_ranked_observation_arriving_late_emits_nothing() -> None:
    # Older evidence is history that precedes the current status: absorbed, never a step back.
    state, _ = run([obs(P.CAPTURED, "e2", occurred=10)])
    step = advance(state, obs(P.AUTHORIZED, "e1", occurred=5), EMITTED)
    assert step.event is None
    assert (step.state.status, step.state.evidence) == (P.CAPTURED, ("e2",))


def test_older_observation_arriving_late_can_make_a_newer_one_stale() -> None:
    # Amazon Pay style: the charge still says Captured at t10, but a refund happened at t5.
    state, _ = run([obs(P.CAPTURED, "charge_poll", occurred=10, source=Source.POLL)])
    step = advance(state, obs(P.REFUNDED, "refund_push", occurred=5), EMITTED)
    assert step.event is not None
    assert (step.event["data"]["status"], step.state.stale_count, step.stale) == ("refunded", 1, False)


def test_newer_observation_whose_move_is_not_in_the_table_is_ignored() -> None:
    state, _ = run([obs(P.CAPTURED, "e1", occurred=0)])
    step = advance(state, obs(P.PENDING, "e2", occurred=60, source=Source.SYNC), EMITTED)
    assert (step.event, step.stale, step.state.status) == (None, True, P.CAPTURED)


def test_failed_then_captured_with_newer_evidence_is_a_late_legitimate_move() -> None:
    _, events = run([obs(P.FAILED, "e1", occurred=0), obs(P.CAPTURED, "e2", occurred=30)])
    assert statuses(events) == ["failed", "captured"]
    assert events[-1]["data"]["previous_status"] == "failed"


def test_failed_then_captured_reported_only_by_checkout_sync_is_ignored() -> None:
    state, events = run([obs(P.FAILED, "e1", occurred=0), obs(P.CAPTURED, "e2", occurred=30, source=Source.SYNC)])
    assert statuses(events) == ["failed"]
    assert state.stale_count == 1


def test_captured_evidence_older_than_failure_does_not_override_it_when_it_arrives_late() -> None:
    state, events = run([obs(P.CAPTURED, "late", occurred=0), obs(P.FAILED, "e1", occurred=30)])
    assert state.status == P.CAPTURED
    assert statuses(events) == ["captured"]


def test_same_provider_time_is_decided_by_progress_rank_whatever_the_arrival_order() -> None:
    state, _ = run([obs(P.CAPTURED, "b", occurred=5), obs(P.AUTHORIZED, "a", occurred=5)])
    assert state.status == P.CAPTURED
    assert state.stale_count == 0


def test_disputed_then_captured_when_the_dispute_is_won() -> None:
    _, events = run([obs(P.CAPTURED, "e1", occurred=0), obs(P.DISPUTED, "e2", occurred=10),
                     obs(P.CAPTURED, "e3", occurred=20)])
    assert statuses(events) == ["captured", "disputed", "captured"]


def test_disputed_then_charged_back_when_the_dispute_is_lost() -> None:
    _, events = run([obs(P.DISPUTED, "e1", occurred=0), obs(P.CHARGED_BACK, "e2", occurred=10)])
    assert statuses(events) == ["disputed", "charged_back"]


def test_redelivered_observation_is_a_duplicate_and_emits_nothing() -> None:
    state, _ = run([obs(P.AUTHORIZED, "e1", occurred=0)])
    step = advance(state, obs(P.AUTHORIZED, "e1", occurred=0, observed=500), EMITTED)
    assert step.duplicate
    assert step.event is None
    assert step.state.observed_at == at(1)  # the earliest receipt is kept


def test_poll_confirming_the_status_is_no_duplicate_but_emits_nothing() -> None:
    state, _ = run([obs(P.AUTHORIZED, "evt_1", occurred=0)])
    step = advance(state, obs(P.AUTHORIZED, "fetch_1", occurred=0, source=Source.POLL), EMITTED)
    assert (step.duplicate, step.stale, step.event) == (False, False, None)
    assert set(step.state.evidence) == {"evt_1", "fetch_1"}


def test_identical_polls_collapse_into_one_retained_group() -> None:
    state, _ = run([obs(P.PENDING, f"fetch_{n}", occurred=0, source=Source.POLL, observed=n) for n in range(40)])
    assert len(state.retained) == 1
    assert len(state.retained[0].evidence_ids) == 16


def test_partial_capture_is_derived_from_amounts() -> None:
    state = fold([obs(P.CAPTURED, "e1", amount=1000, captures={"cap_1": 400})])
    assert (state.status, state.reported_status, state.captured_amount) == (P.PARTIALLY_CAPTURED, P.CAPTURED, 400)


def test_second_capture_completes_the_capture_and_emits() -> None:
    _, events = run([obs(P.CAPTURED, "e1", occurred=0, captures={"cap_1": 400}),
                     obs(P.CAPTURED, "e2", occurred=5, captures={"cap_2": 600})])
    assert statuses(events) == ["partially_captured", "captured"]
    assert events[-1]["data"]["captured_amount"] == 1000


def test_the_same_capture_reported_twice_counts_once() -> None:
    state = fold([obs(P.CAPTURED, "push", captures={"cap_1": 1000}),
                  obs(P.CAPTURED, "poll", source=Source.POLL, occurred=9, captures={"cap_1": 1000})])
    assert state.captured_amount == 1000


def test_the_newest_report_of_one_refund_id_wins() -> None:
    state = fold([obs(P.CAPTURED, "e1", captures={"c": 1000}), obs(None, "r1", occurred=1, refunds={"re": 300}),
                  obs(None, "r2", occurred=2, refunds={"re": 200})])
    assert state.refunded_amount == 200


def test_two_reports_of_one_refund_id_at_the_same_time_resolve_to_the_larger_amount() -> None:
    # A running total polled twice without a newer provider time (Mollie's amountRefunded, say).
    for order in ((300, 200), (200, 300)):
        state = fold([obs(P.CAPTURED, "e1", captures={"c": 1000}),
                      *(obs(None, f"r{value}", occurred=1, refunds={"re": value}) for value in order)])
        assert state.refunded_amount == 300


def test_partial_refund_then_full_refund() -> None:
    _, events = run([obs(P.CAPTURED, "e1", captures={"c": 1000}),
                     obs(P.PARTIALLY_REFUNDED, "e2", occurred=5, refunds={"re_1": 250}),
                     obs(P.REFUNDED, "e3", occurred=9, refunds={"re_2": 750})])
    assert statuses(events) == ["captured", "partially_refunded", "refunded"]
    assert events[-1]["data"]["refunded_amount"] == 1000


def test_amount_only_refund_moves_a_captured_payment_to_partially_refunded() -> None:
    _, events = run([obs(P.CAPTURED, "e1", captures={"c": 1000}),
                     obs(None, "refund_push", occurred=5, refunds={"re_1": 100}, reason_code="customer")])
    assert statuses(events) == ["captured", "partially_refunded"]
    assert events[-1]["data"]["evidence"] == ["e1", "refund_push"]
    assert events[-1]["data"]["reason_code"] == "customer"


def test_refund_seen_before_its_charge_is_parked_then_applied() -> None:
    parked = advance(None, obs(None, "refund_first", occurred=50, refunds={"re_1": 1000}), EMITTED)
    state = parked.state
    assert parked.event is None
    assert (state.status, state.refunded_amount) == (None, 1000)
    step = advance(state, obs(P.CAPTURED, "charge", occurred=10, captures={"c": 1000}), EMITTED)
    assert step.event is not None
    assert (step.event["data"]["status"], step.event["data"]["sequence"]) == ("refunded", 1)
    assert step.event["data"]["evidence"] == ["charge", "refund_first"]
    assert step.event["data"]["occurred_at"] == "2025-03-01T12:00:50Z"  # the refund is the newest support


def test_an_amount_only_change_emits_an_event_with_the_same_status() -> None:
    _, events = run([obs(P.DISPUTED, "e1", captures={"c": 1000}), obs(None, "r", occurred=5, refunds={"r": 10})])
    assert statuses(events) == ["disputed", "disputed"]
    assert events[-1]["data"]["previous_status"] == "disputed"


def test_deciding_observation_is_the_one_that_moved_the_status() -> None:
    state = fold([obs(P.AUTHORIZED, "poll_1", occurred=10, observed=100, source=Source.POLL),
                  obs(P.AUTHORIZED, "push_1", occurred=20, observed=30, source=Source.PUSH)])
    assert (state.source, state.occurred_at, state.observed_at) == (Source.POLL, at(10), at(100))
    assert state.evidence == ("poll_1", "push_1")


def test_agreement_moves_emit_agreement_events() -> None:
    _, events = run([obs(A.ACTIVE, "m1", kind=ObjectKind.AGREEMENT, amount=None),
                     obs(A.SUSPENDED, "m2", occurred=5, kind=ObjectKind.AGREEMENT, amount=None),
                     obs(A.ACTIVE, "m3", occurred=9, kind=ObjectKind.AGREEMENT, amount=None),
                     obs(A.CLOSED, "m4", occurred=20, kind=ObjectKind.AGREEMENT, amount=None),
                     obs(A.ACTIVE, "m5", occurred=30, kind=ObjectKind.AGREEMENT, amount=None)])
    assert statuses(events) == ["active", "suspended", "active", "closed"]
    assert {e["type"] for e in events} == {"agreement.status.changed"}


def test_state_round_trips_through_plain_json() -> None:
    state, _ = run([obs(P.CAPTURED, "e1", captures={"c": 600}), obs(None, "r", occurred=5, refunds={"r": 100}),
                    obs(P.PENDING, "stale", occurred=9)])
    restored = from_json(orjson.loads(orjson.dumps(to_json(state))))
    assert restored == state


def test_applying_to_a_restored_state_continues_the_sequence() -> None:
    state, _ = run([obs(P.AUTHORIZED, "e1")])
    restored = from_json(orjson.loads(orjson.dumps(to_json(state))))
    step = advance(restored, obs(P.CAPTURED, "e2", occurred=5), EMITTED)
    assert step.event is not None
    assert step.event["data"]["sequence"] == 2


def test_fold_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fold([])


def test_observations_of_another_payment_are_rejected() -> None:
    other = replace(obs(P.PENDING, "e2"), object_id="pi_2")
    with pytest.raises(ValueError, match="pi_2"):
        fold([obs(P.PENDING, "e1"), other])


def test_status_of_the_wrong_model_is_a_normalization_error() -> None:
    with pytest.raises(NormalizationError) as caught:
        fold([obs(A.ACTIVE, "e1", kind=ObjectKind.PAYMENT)])
    assert caught.value.reason == "kind_mismatch"


def test_naive_provider_time_is_a_normalization_error() -> None:
    naive = replace(obs(P.PENDING, "e1"), occurred_at=datetime(2025, 1, 1))
    with pytest.raises(NormalizationError) as caught:
        fold([naive])
    assert caught.value.reason == "naive_timestamp"


def test_negative_capture_is_a_normalization_error() -> None:
    with pytest.raises(NormalizationError) as caught:
        fold([obs(P.CAPTURED, "e1", captures={"c": -5})])
    assert caught.value.reason == "negative_amount"


def test_times_are_normalized_to_utc() -> None:
    from datetime import timedelta, timezone

    local = replace(obs(P.PENDING, "e1"), occurred_at=T0.astimezone(timezone(timedelta(hours=2))))
    assert fold([local]).occurred_at == T0


def test_the_amount_of_a_refund_only_observation_is_not_the_payment_amount() -> None:
    state = fold([obs(P.CAPTURED, "e1", amount=1000), obs(None, "r", occurred=5, amount=300, refunds={"r": 300})])
    assert (state.amount, state.status) == (1000, P.PARTIALLY_REFUNDED)
