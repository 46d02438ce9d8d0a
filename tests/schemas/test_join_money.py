"""The join's money, disputes, risk, emission discipline and bounded state, case by case."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from observation_factory import at, obs

from schemas.join import LIVE_GROUPS, PaymentState, advance, fold
from schemas.observation import Dispute, Movement, Observation, RiskSignal
from schemas.status import DisputeState, MoneyState, RiskState, Source
from schemas.status import PaymentStatus as P

EMITTED = at(3600)
FAILED, REVERSED, PENDING = MoneyState.FAILED, MoneyState.REVERSED, MoneyState.PENDING


def run(observations: list[Observation], state: PaymentState | None = None) -> tuple[PaymentState,
                                                                                    list[dict[str, Any]]]:
    events = []
    for item in observations:
        step = advance(state, item, EMITTED)
        state = step.state
        if step.event is not None:
            events.append(step.event["data"])
    assert state is not None
    return state, events


def path(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(data["status"], data["refunded_amount"]) for data in events]


# --- emission discipline (issue 18, point 1) ---------------------------------------------------------------
def test_a_late_older_failure_never_makes_the_stream_say_captured_then_failed() -> None:
    # A checkout's sync report `succeeded` (t=10), then an older push payment_failed (t=5), then the push
    # payment_intent.succeeded (t=10): the fold passes through `failed` (a sync cannot revive a failed
    # payment), the stream must not.
    state, events = run([
        obs(P.CAPTURED, "sync_1", occurred=10, source=Source.SYNC),
        obs(P.FAILED, "evt_failed", occurred=5),
        obs(P.CAPTURED, "evt_succeeded", occurred=10),
    ])
    assert [data["status"] for data in events] == ["captured"]
    assert state.absorbed_count == 1
    assert state.status == P.CAPTURED


def test_an_absorbed_observation_waits_and_a_legal_move_later_is_emitted() -> None:
    state, events = run([obs(P.CAPTURED, "sync_1", occurred=10, source=Source.SYNC),
                         obs(P.FAILED, "evt_failed", occurred=5)])
    assert ([data["status"] for data in events], state.status) == (["captured"], P.FAILED)
    # The provider confirms the capture (the fold is back where the stream is: nothing to say), then a refund.
    state, later = run([obs(P.CAPTURED, "evt_succeeded", occurred=20),
                        obs(P.REFUNDED, "evt_refunded", occurred=30, refunds={"re_1": 1000})], state)
    assert [(data["previous_status"], data["status"]) for data in later] == [("captured", "refunded")]


# --- refunds by id with their own outcome ----------------------------------------------------------------
def test_a_refund_that_fails_after_charge_refunded_moves_the_payment_back_to_captured() -> None:
    # Stripe from API 2022-11-15: charge.refunded carries amount_refunded, not the refunds.
    _, events = run([
        obs(P.CAPTURED, "evt_pi", occurred=0, captures={"ch_1": 1000}),
        obs(P.CAPTURED, "evt_charge_refunded", occurred=5, captures={"ch_1": 1000}, refunded_total=1000),
        obs(None, "evt_refund_failed", occurred=9, refunds={"re_1": Movement(1000, FAILED)},
            reason_code="expired_or_canceled_card", provider_status="refund:failed"),
    ])
    assert path(events) == [("captured", 0), ("refunded", 1000), ("captured", 0)]
    assert (events[-1]["reason_code"], events[-1]["provider_status"]) == ("expired_or_canceled_card",
                                                                          "refund:failed")


def test_a_refund_failing_after_an_embedded_refund_list_moves_the_payment_back_too() -> None:
    _, events = run([
        obs(P.CAPTURED, "evt_charge_refunded", occurred=5, captures={"ch_1": 1000}, refunds={"re_1": 1000}),
        obs(None, "evt_refund_failed", occurred=9, refunds={"re_1": Movement(None, FAILED)}),
    ])
    assert path(events) == [("refunded", 1000), ("captured", 0)]


def test_the_report_that_changed_the_money_decides_even_when_a_stale_one_sorts_after_it() -> None:
    # Mollie polls date every payment report by the payment's paidAt: the refund's outcome changes, the time
    # does not. Whatever the order the two polls sort in, the one that said `failed` decided the move back.
    for refunded_id, failed_id in (("a_poll", "b_poll"), ("b_poll", "a_poll")):  # either sorts first
        refunded = obs(P.CAPTURED, refunded_id, occurred=5, captures={"cap": 1000}, refunds={"re_1": 1000},
                       provider_status="refund:refunded")
        failed = obs(P.CAPTURED, failed_id, occurred=5, captures={"cap": 1000},
                     refunds={"re_1": Movement(1000, FAILED)}, provider_status="refund:failed")
        earlier = obs(P.CAPTURED, "0_push", occurred=0, captures={"cap": 1000})
        state = fold([earlier, refunded, failed])
        assert (state.status, state.refunded_amount, state.provider_status) == (P.CAPTURED, 0, "refund:failed")


def test_a_reversed_refund_no_longer_counts() -> None:
    _, events = run([obs(P.CAPTURED, "c", captures={"cap": 1000}),
                     obs(None, "r1", occurred=1, refunds={"re_1": 400}),
                     obs(None, "r1_reversed", occurred=2, refunds={"re_1": Movement(400, REVERSED)})])
    assert path(events) == [("captured", 0), ("partially_refunded", 400), ("captured", 0)]


def test_a_pending_refund_does_not_count_until_it_succeeds() -> None:
    _, events = run([obs(P.CAPTURED, "c", captures={"cap": 1000}),
                     obs(None, "r_pending", occurred=1, refunds={"re_1": Movement(1000, PENDING)}),
                     obs(None, "r_done", occurred=2, refunds={"re_1": Movement(1000)})])
    assert path(events) == [("captured", 0), ("refunded", 1000)]


def test_refunds_by_id_after_a_total_move_it_by_the_difference() -> None:
    state = fold([obs(P.CAPTURED, "c", captures={"cap": 1000}),
                  obs(P.CAPTURED, "total", occurred=5, captures={"cap": 1000}, refunded_total=300),
                  obs(None, "new_refund", occurred=6, refunds={"re_2": 200}),
                  obs(None, "old_refund_reversed", occurred=7, refunds={"re_1": Movement(300, REVERSED)})])
    # re_1 (unnamed by the total, first reported already reversed) was in the total; re_2 came after it.
    assert (state.refunded_amount, state.status) == (200, P.PARTIALLY_REFUNDED)


def test_a_refund_first_seen_pending_after_a_total_that_then_fails_takes_nothing_out() -> None:
    state = fold([obs(P.CAPTURED, "total", occurred=5, captures={"cap": 1000}, refunded_total=300),
                  obs(None, "pending", occurred=6, refunds={"re_2": Movement(200, PENDING)}),
                  obs(None, "failed", occurred=7, refunds={"re_2": Movement(200, FAILED)})])
    assert state.refunded_amount == 300


def test_a_failed_capture_leaves_the_payment_authorized() -> None:
    _, events = run([obs(P.AUTHORIZED, "auth", amount=1000),
                     obs(None, "capture", occurred=5, captures={"cap_1": 1000}),
                     obs(None, "capture_failed", occurred=9, captures={"cap_1": Movement(1000, FAILED)})])
    assert [(data["status"], data["captured_amount"]) for data in events] == [
        ("authorized", 0), ("captured", 1000), ("authorized", 0)]


def test_an_authorisation_that_expires_after_a_partial_capture_keeps_what_was_captured() -> None:
    # Adyen EXPIRE after a partial capture: "the remaining uncaptured amount expired".
    state, events = run([obs(P.AUTHORIZED, "auth", amount=1000),
                         obs(None, "capture", occurred=5, captures={"cap_1": 600}),
                         obs(P.CANCELED, "expire", occurred=9, reason_code="expired")])
    assert [(data["status"], data["captured_amount"]) for data in events] == [
        ("authorized", 0), ("partially_captured", 600), ("captured", 600)]
    assert (events[-1]["reason_code"], state.absorbed_count) == ("expired", 0)


# --- disputes --------------------------------------------------------------------------------------------
def test_a_dispute_won_returns_the_payment_to_its_money_status_and_stops_counting() -> None:
    _, events = run([
        obs(P.CAPTURED, "c", captures={"cap": 1000}),
        obs(None, "r", occurred=1, refunds={"re_1": 100}),
        obs(P.DISPUTED, "dp_open", occurred=2, disputes={"dp_1": Dispute(900, DisputeState.OPEN)}),
        obs(P.CAPTURED, "dp_won", occurred=3, disputes={"dp_1": Dispute(900, DisputeState.WON)}),
    ])
    assert [(data["status"], data["disputed_amount"]) for data in events] == [
        ("captured", 0), ("partially_refunded", 0), ("disputed", 900), ("partially_refunded", 0)]


def test_a_dispute_lost_is_charged_back_with_the_amount() -> None:
    state, _ = run([obs(P.CAPTURED, "c", captures={"cap": 1000}),
                    obs(P.DISPUTED, "open", occurred=2, disputes={"dp_1": Dispute(1000, DisputeState.OPEN)}),
                    obs(P.CHARGED_BACK, "lost", occurred=3, disputes={"dp_1": Dispute(None, DisputeState.LOST)})])
    assert (state.status, state.disputed_amount) == (P.CHARGED_BACK, 1000)


# --- risk ------------------------------------------------------------------------------------------------
def test_a_fraud_warning_on_a_captured_payment_emits_risk_without_changing_the_status() -> None:
    warning = RiskSignal("early_fraud_warning", RiskState.OPEN, "fraudulent")
    _, events = run([obs(P.CAPTURED, "c", captures={"cap": 1000}),
                     obs(None, "efw", occurred=5, risk={"issfr_1": warning})])
    assert [data["status"] for data in events] == ["captured", "captured"]
    assert events[0]["risk"] is None
    assert events[1]["risk"] == {"hold": True, "signals": [
        {"id": "issfr_1", "kind": "early_fraud_warning", "state": "open", "reason": "fraudulent"}]}


def test_a_cleared_review_releases_the_hold() -> None:
    state = fold([obs(P.CAPTURED, "c"),
                  obs(None, "open", occurred=1, risk={"prv_1": RiskSignal("review", RiskState.OPEN, "rule")}),
                  obs(None, "closed", occurred=2, risk={"prv_1": RiskSignal("review", RiskState.CLEARED, "approved")})])
    assert state.risk == (("prv_1", "review", RiskState.CLEARED, "approved"),)


# --- facts -----------------------------------------------------------------------------------------------
def test_agreement_and_authorisation_expiry_come_from_the_newest_observation_that_knows_them() -> None:
    expiry = at(7 * 86400)
    state = fold([obs(P.AUTHORIZED, "a", agreement_ref="pm_1", authorization_expires_at=expiry),
                  obs(P.CAPTURED, "c", occurred=5, agreement_ref=None)])
    assert (state.agreement_ref, state.authorization_expires_at) == ("pm_1", expiry)


# --- bounded state (issue 18, point 2) -------------------------------------------------------------------
def storm(count: int, start: int = 0) -> list[Observation]:
    """Distinct confirmations of one pending payment (a provider that re-sends with new times)."""
    return [obs(P.PENDING, f"e{n:05d}", occurred=n, provider_status=f"pending:{n}") for n in range(start, count)]


def test_a_busy_payment_keeps_a_bounded_number_of_whole_groups() -> None:
    state, events = run(storm(200))
    assert len(state.retained) == LIVE_GROUPS
    assert state.compacted_count == 200 - LIVE_GROUPS
    assert [data["status"] for data in events] == ["pending"]
    assert state.status == P.PENDING


def test_a_compacted_observation_told_again_changes_nothing_and_the_record_stays_bounded() -> None:
    state, _ = run(storm(100))
    again = replace_evidence(storm(1)[0], "redelivered")
    step = advance(state, again, EMITTED)
    assert step.event is None and not step.absorbed
    assert (step.state.status, len(step.state.retained)) == (P.PENDING, LIVE_GROUPS)


def test_a_late_status_word_older_than_the_compaction_point_is_stale() -> None:
    # Folded after the summary, an old word would otherwise move the status (disputed -> captured is allowed).
    history = [obs(P.CAPTURED, "c", occurred=0, captures={"cap": 1000}),
               obs(P.DISPUTED, "d", occurred=50), *storm(100, start=60)]
    state, _ = run([*history[:2], *(replace_status(item, P.DISPUTED) for item in history[2:])])
    assert state.summary is not None
    step = advance(state, obs(P.CAPTURED, "old_capture_poll", occurred=1, source=Source.POLL), EMITTED)
    assert (step.state.status, step.event, step.stale) == (P.DISPUTED, None, True)


def test_an_observation_older_than_the_compaction_point_cannot_rewind_newer_evidence() -> None:
    history = [obs(P.CAPTURED, "c", occurred=0, captures={"cap": 1000}),
               obs(None, "r", occurred=1, refunds={"re_1": 1000}), *storm(100, start=2)]
    state, _ = run([*history[:2], *(replace_status(item, P.REFUNDED) for item in history[2:])])
    assert state.summary is not None
    late = obs(None, "late_pending_report", occurred=1, refunds={"re_1": Movement(1000, PENDING)})
    step = advance(state, late, EMITTED)
    assert (step.state.refunded_amount, step.event) == (1000, None)


def test_the_fold_of_a_busy_payment_in_order_equals_the_unbounded_fold() -> None:
    items = [obs(P.CAPTURED, "c", occurred=0, captures={"cap": 1000}),
             *(obs(None, f"r{n}", occurred=n, refunds={f"re_{n}": 5}) for n in range(1, 120))]
    state, _ = run(items)
    assert state.summary is not None
    assert (state.refunded_amount, state.status) == (fold(items).refunded_amount, fold(items).status)


def replace_evidence(item: Observation, evidence_id: str) -> Observation:
    from dataclasses import replace

    return replace(item, evidence_id=evidence_id, observed_at=item.observed_at + timedelta(seconds=1))


def replace_status(item: Observation, status: P) -> Observation:
    from dataclasses import replace

    return replace(item, status=status)
