"""Stripe parser: events (read through the catalog) and fetched PaymentIntents / Charges.

Money sequences are checked twice: the movements the parser reports, and what the pure join folds from them
(a refund that fails after charge.refunded, with and without the embedded refunds list; disputes won and lost).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from ingest.providers.stripe import parse as stripe
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.join import fold
from schemas.observation import Dispute, Movement, Observation, RiskSignal
from schemas.status import AgreementStatus, DisputeState, MoneyState, ObjectKind, PaymentStatus, RiskState, Source

P = PaymentStatus
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CREATED = 1714560000


def intent(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "pi_1", "object": "payment_intent", "amount": 2000, "amount_received": 0,
            "currency": "eur", "status": status, "created": CREATED, "latest_charge": "ch_1",
            "payment_method": "pm_1", "metadata": {"order_ref": "order-9"}, **extra}


def charge(**extra: Any) -> dict[str, Any]:
    return {"id": "ch_1", "object": "charge", "amount": 2000, "amount_captured": 2000, "amount_refunded": 0,
            "captured": True, "refunded": False, "disputed": False, "currency": "eur", "status": "succeeded",
            "payment_intent": "pi_1", "payment_method": "pm_1", "created": CREATED,
            "payment_method_details": {"type": "card", "card": {"brand": "visa", "mandate": None}}, **extra}


def refund(status: str = "succeeded", refund_id: str = "re_1", **extra: Any) -> dict[str, Any]:
    return {"id": refund_id, "object": "refund", "amount": 2000, "currency": "eur", "status": status,
            "payment_intent": "pi_1", "charge": "ch_1", **extra}


def dispute(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "dp_1", "object": "dispute", "amount": 2000, "status": status, "charge": "ch_1",
            "payment_intent": "pi_1", "reason": "fraudulent", "currency": "eur", **extra}


def session(payment_status: str, status: str = "complete", **extra: Any) -> dict[str, Any]:
    return {"id": "cs_1", "object": "checkout.session", "mode": "payment", "payment_intent": "pi_1",
            "payment_status": payment_status, "status": status, "amount_total": 2000, "currency": "eur",
            "client_reference_id": "cart-7", "metadata": {}, **extra}


def event(event_type: str, obj: dict[str, Any], evt: str = "evt_1", at: int = CREATED + 60) -> bytes:
    return orjson.dumps({"id": evt, "object": "event", "type": event_type, "created": at,
                         "data": {"object": obj}})


def push(body: bytes, evidence: str = "evt_1") -> list[Observation]:
    return stripe.parse(body, account="acct", source=Source.PUSH, evidence_id=evidence, observed_at=NOW,
                        object_kind="event")


def one(event_type: str, obj: dict[str, Any], evidence: str = "evt_1", at: int = CREATED + 60) -> Observation:
    (obs,) = push(event(event_type, obj, evidence, at), evidence)
    return obs


def ignored_count(event_type: str) -> float:
    return REGISTRY.get_sample_value("paystream_events_ignored_total",
                                     {"provider": "stripe", "type": event_type}) or 0.0


# --- the catalog decides -------------------------------------------------------------------------------


def test_a_type_the_catalog_does_not_know_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match=r"payment_intent\.teleported") as raised:
        push(event("payment_intent.teleported", intent("succeeded")))
    assert (raised.value.provider, raised.value.word) == ("stripe", "payment_intent.teleported")


def test_an_ignored_type_gives_nothing_and_is_counted() -> None:
    before = ignored_count("customer.created")
    assert push(event("customer.created", {"object": "customer", "id": "cus_1"})) == []
    assert ignored_count("customer.created") == before + 1


def test_a_mapped_type_carrying_an_unexpected_object_is_an_error() -> None:
    with pytest.raises(NormalizationError, match="customer"):
        push(event("charge.succeeded", {"object": "customer", "id": "cus_1"}))


# --- PaymentIntents ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [
    ("requires_payment_method", P.PENDING),
    ("requires_confirmation", P.PENDING),
    ("requires_action", P.REQUIRES_ACTION),
    ("processing", P.PENDING),
    ("requires_capture", P.AUTHORIZED),
    ("canceled", P.CANCELED),
])
def test_payment_intent_statuses_map_explicitly(status: str, expected: PaymentStatus) -> None:
    obs = one("payment_intent.created", intent(status))
    assert (obs.status, obs.object_type, obs.object_id) == (expected, "payment_intent", "pi_1")


def test_succeeded_intent_is_captured_with_the_charge_as_capture_id_and_names_its_payment_method() -> None:
    obs = one("payment_intent.succeeded", intent("succeeded", amount_received=2000))
    assert (obs.status, dict(obs.captures), obs.currency, obs.order_ref, obs.agreement_ref) == (
        P.CAPTURED, {"ch_1": Movement(2000)}, "EUR", "order-9", "pm_1")
    assert obs.occurred_at == datetime.fromtimestamp(CREATED + 60, UTC)


def test_payment_failed_event_is_failed_with_decline_code() -> None:
    failed = intent("requires_payment_method", last_payment_error={"code": "card_declined",
                                                                   "decline_code": "insufficient_funds"})
    obs = one("payment_intent.payment_failed", failed)
    assert (obs.status, obs.reason_code) == (P.FAILED, "insufficient_funds")


def test_unknown_payment_intent_status_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        push(event("payment_intent.created", intent("requires_reauthorization")))
    assert raised.value.word == "payment_intent.status:requires_reauthorization"


def test_an_authorized_intent_with_its_charge_expanded_says_when_the_authorisation_lapses() -> None:
    expanded = charge(captured=False, amount_captured=0,
                      payment_method_details={"type": "card", "card": {"capture_before": CREATED + 3600}})
    obs = one("payment_intent.amount_capturable_updated", intent("requires_capture", latest_charge=expanded))
    assert (obs.status, obs.authorization_expires_at) == (P.AUTHORIZED, datetime.fromtimestamp(CREATED + 3600, UTC))


# --- charges and refunds -------------------------------------------------------------------------------


def test_uncaptured_card_charge_is_authorized_until_its_capture_before() -> None:
    obs = one("charge.succeeded", charge(captured=False, amount_captured=0, payment_method_details={
        "type": "card", "card": {"capture_before": CREATED + 86400}}))
    assert (obs.status, dict(obs.captures), obs.authorization_expires_at) == (
        P.AUTHORIZED, {}, datetime.fromtimestamp(CREATED + 86400, UTC))


def test_uncaptured_card_charge_without_capture_before_lapses_seven_days_after_its_creation() -> None:
    obs = one("charge.succeeded", charge(captured=False, amount_captured=0))
    assert obs.authorization_expires_at == datetime.fromtimestamp(CREATED, UTC) + timedelta(days=7)


def test_only_card_authorisations_get_the_documented_seven_days() -> None:
    present = one("charge.succeeded", charge(captured=False, amount_captured=0,
                                             payment_method_details={"type": "card_present", "card_present": {}}))
    captured = one("charge.captured", charge())
    assert (present.authorization_expires_at, captured.authorization_expires_at) == (None, None)


def test_charge_names_the_mandate_it_ran_on_before_its_payment_method() -> None:
    debit = charge(payment_method_details={"type": "sepa_debit", "sepa_debit": {"mandate": "mandate_1"}})
    assert (one("charge.succeeded", debit).agreement_ref, one("charge.succeeded", charge()).agreement_ref) == (
        "mandate_1", "pm_1")


def test_charge_refunded_with_the_embedded_list_names_each_refund_with_its_state() -> None:
    listed = charge(amount_refunded=1500, refunded=False, refunds={"object": "list", "has_more": False, "data": [
        refund("succeeded", "re_1", amount=1000), refund("pending", "re_2", amount=500),
        refund("requires_action", "re_3", amount=300), refund("failed", "re_4", amount=200)]})
    obs = one("charge.refunded", listed)
    assert (obs.status, obs.refunded_total, dict(obs.captures)) == (P.CAPTURED, None, {"ch_1": Movement(2000)})
    assert dict(obs.refunds) == {
        "re_1": Movement(1000, MoneyState.SUCCEEDED), "re_2": Movement(500, MoneyState.PENDING),
        "re_3": Movement(300, MoneyState.PENDING), "re_4": Movement(200, MoneyState.FAILED)}


def test_charge_refunded_without_the_list_reports_amount_refunded_as_the_total() -> None:
    obs = one("charge.refunded", charge(amount_refunded=2000, refunded=True))  # API 2022-11-15 on: no list
    assert (obs.status, dict(obs.refunds), obs.refunded_total) == (P.CAPTURED, {}, 2000)


def test_an_incomplete_refunds_list_falls_back_to_the_total() -> None:
    partial = charge(amount_refunded=1800, refunds={"object": "list", "has_more": True,
                                                    "data": [refund("succeeded", "re_9", amount=100)]})
    obs = one("charge.updated", partial)
    assert (dict(obs.refunds), obs.refunded_total) == ({}, 1800)


def test_an_uncaptured_charge_refunded_is_a_released_authorisation() -> None:
    released = charge(captured=False, amount_captured=0, refunded=True, amount_refunded=2000)
    obs = one("charge.refunded", released)
    assert (obs.status, dict(obs.refunds), obs.refunded_total, obs.authorization_expires_at) == (
        P.CANCELED, {}, None, None)


def test_expired_charge_is_canceled() -> None:
    assert one("charge.expired", charge(captured=False, amount_captured=0)).status is P.CANCELED


def test_a_disputed_charge_leaves_the_status_to_its_dispute_events() -> None:
    obs = one("charge.updated", charge(disputed=True))
    assert (obs.status, dict(obs.captures)) == (None, {"ch_1": Movement(2000)})


@pytest.mark.parametrize(("status", "state"), [
    ("pending", MoneyState.PENDING), ("requires_action", MoneyState.PENDING), ("succeeded", MoneyState.SUCCEEDED),
    ("failed", MoneyState.FAILED), ("canceled", MoneyState.CANCELED),
])
@pytest.mark.parametrize("event_type", ["refund.created", "refund.updated", "refund.failed", "charge.refund.updated"])
def test_refund_events_are_amount_only_movements_by_refund_id(event_type: str, status: str,
                                                              state: MoneyState) -> None:
    obs = one(event_type, refund(status, failure_reason="expired_or_canceled_card" if status == "failed" else None))
    assert (obs.object_id, obs.status, dict(obs.refunds)) == ("pi_1", None, {"re_1": Movement(2000, state)})
    assert obs.reason_code == ("expired_or_canceled_card" if status == "failed" else None)


def test_unknown_refund_status_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        push(event("refund.updated", refund("reversed_by_bank")))
    assert raised.value.word == "refund.status:reversed_by_bank"


def test_a_refund_without_its_payment_intent_is_observed_under_its_charge() -> None:
    obs = one("refund.created", refund(payment_intent=None))
    assert (obs.object_type, obs.object_id) == ("charge", "ch_1")


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded-list", "amount-refunded"])
def test_a_refund_failing_after_charge_refunded_takes_the_payment_back_to_captured(embedded: bool) -> None:
    refunded = charge(amount_refunded=2000, refunded=True)
    if embedded:
        refunded["refunds"] = {"object": "list", "has_more": False, "data": [refund("succeeded")]}
    steps = [one("payment_intent.succeeded", intent("succeeded", amount_received=2000), "evt_1", CREATED + 60),
             one("charge.refunded", refunded, "evt_2", CREATED + 120),
             one("refund.failed", refund("failed", failure_reason="lost_or_stolen_card"), "evt_3", CREATED + 180)]
    assert fold(steps[:2]).status is P.REFUNDED
    state = fold(steps)
    assert (state.status, state.captured_amount, state.refunded_amount, state.reason_code) == (
        P.CAPTURED, 2000, 0, "lost_or_stolen_card")


def test_refund_events_and_the_embedded_list_count_the_same_refund_once() -> None:
    listed = charge(amount_refunded=500, refunds={"data": [refund("succeeded", amount=500)], "has_more": False})
    observations = [one("charge.refunded", listed, "evt_2", CREATED + 120),
                    one("refund.updated", refund("succeeded", amount=500), "evt_3", CREATED + 121),
                    one("charge.captured", charge(), "evt_1", CREATED + 60)]
    state = fold(observations)
    assert (state.status, state.captured_amount, state.refunded_amount) == (P.PARTIALLY_REFUNDED, 2000, 500)


# --- disputes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected", "state"), [
    ("warning_needs_response", P.DISPUTED, DisputeState.OPEN),
    ("warning_under_review", P.DISPUTED, DisputeState.OPEN),
    ("warning_closed", P.CAPTURED, DisputeState.WON),
    ("needs_response", P.DISPUTED, DisputeState.OPEN),
    ("under_review", P.DISPUTED, DisputeState.OPEN),
    ("won", P.CAPTURED, DisputeState.WON),
    ("lost", P.CHARGED_BACK, DisputeState.LOST),
    ("prevented", P.CAPTURED, DisputeState.WON),
    ("appeal_needs_response", P.DISPUTED, DisputeState.OPEN),
    ("appeal_under_review", P.DISPUTED, DisputeState.OPEN),
])
def test_every_dispute_status(status: str, expected: PaymentStatus, state: DisputeState) -> None:
    obs = one("charge.dispute.updated", dispute(status))
    assert (obs.status, obs.object_id, obs.reason_code, dict(obs.disputes)) == (
        expected, "pi_1", "fraudulent", {"dp_1": Dispute(2000, state, "fraudulent")})


def test_unknown_dispute_status_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        push(event("charge.dispute.closed", dispute("charge_refunded")))
    assert (raised.value.provider, raised.value.word) == ("stripe", "dispute.status:charge_refunded")


@pytest.mark.parametrize(("outcome", "final", "disputed"), [("won", P.CAPTURED, 0), ("lost", P.CHARGED_BACK, 2000)])
def test_a_dispute_opens_then_is_won_or_lost(outcome: str, final: PaymentStatus, disputed: int) -> None:
    steps = [one("charge.captured", charge(), "evt_1", CREATED + 60),
             one("charge.dispute.created", dispute("needs_response"), "evt_2", CREATED + 120),
             one("charge.updated", charge(disputed=True), "evt_3", CREATED + 121),
             one("charge.dispute.closed", dispute(outcome), "evt_4", CREATED + 180)]
    opened = fold(steps[:3])
    assert (opened.status, opened.disputed_amount) == (P.DISPUTED, 2000)
    state = fold(steps)
    assert (state.status, state.captured_amount, state.disputed_amount) == (final, 2000, disputed)


# --- Checkout Sessions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("event_type", "payment_status", "expected"), [
    ("checkout.session.completed", "paid", P.CAPTURED),
    ("checkout.session.completed", "unpaid", P.PENDING),
    ("checkout.session.async_payment_succeeded", "paid", P.CAPTURED),
    ("checkout.session.async_payment_failed", "unpaid", P.FAILED),
])
def test_checkout_sessions_reach_their_payment_intent(event_type: str, payment_status: str,
                                                      expected: PaymentStatus) -> None:
    obs = one(event_type, session(payment_status))
    assert (obs.object_type, obs.object_id, obs.status, obs.amount, obs.currency, obs.order_ref) == (
        "payment_intent", "pi_1", expected, 2000, "EUR", "cart-7")


def test_an_expired_session_cancels_its_payment_intent() -> None:
    obs = one("checkout.session.expired", session("unpaid", status="expired", metadata={"order_ref": "order-1"}))
    assert (obs.object_id, obs.status, obs.order_ref) == ("pi_1", P.CANCELED, "order-1")


@pytest.mark.parametrize(("event_type", "cs"), [
    ("checkout.session.completed", session("no_payment_required")),
    ("checkout.session.expired", session("unpaid", status="expired", payment_intent=None)),
    ("checkout.session.completed", session("paid", mode="subscription", payment_intent=None)),
    ("checkout.session.completed", session("no_payment_required", mode="setup", payment_intent=None)),
])
def test_a_session_that_names_no_payment_gives_nothing_and_is_counted(event_type: str, cs: dict[str, Any]) -> None:
    before = ignored_count(event_type)
    assert push(event(event_type, cs)) == []
    assert ignored_count(event_type) == before + 1


def test_unknown_session_payment_status_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match="payment_status"):
        push(event("checkout.session.completed", session("partially_paid")))


def test_a_consumer_sees_one_payment_whichever_checkout_and_intent_events_arrive() -> None:
    steps = [one("checkout.session.completed", session("unpaid"), "evt_1", CREATED + 60),
             one("payment_intent.processing", intent("processing"), "evt_2", CREATED + 61),
             one("checkout.session.async_payment_succeeded", session("paid"), "evt_3", CREATED + 120),
             one("payment_intent.succeeded", intent("succeeded", amount_received=2000), "evt_4", CREATED + 120)]
    assert {obs.payment_key for obs in steps} == {"stripe:acct:payment_intent:pi_1"}
    state = fold(steps)
    assert (state.status, state.captured_amount, state.order_ref) == (P.CAPTURED, 2000, "order-9")


# --- risk ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("actionable", "state"), [(True, RiskState.OPEN), (False, RiskState.CLEARED)])
def test_early_fraud_warnings_are_risk_signals_without_a_status(actionable: bool, state: RiskState) -> None:
    warning = {"id": "issfr_1", "object": "radar.early_fraud_warning", "actionable": actionable,
               "charge": "ch_1", "payment_intent": "pi_1", "fraud_type": "made_with_stolen_card", "created": CREATED}
    obs = one("radar.early_fraud_warning.updated", warning)
    assert (obs.object_id, obs.status, dict(obs.risk)) == (
        "pi_1", None, {"issfr_1": RiskSignal("early_fraud_warning", state, "made_with_stolen_card")})


def review(**fields: Any) -> dict[str, Any]:
    return {"id": "prv_1", "object": "review", "charge": "ch_1", "payment_intent": None, "open": True,
            "opened_reason": "rule", "reason": "rule", "closed_reason": None, **fields}


def test_an_opened_review_is_an_open_risk_signal_on_the_charge() -> None:
    obs = one("review.opened", review())
    assert (obs.object_type, obs.object_id, obs.status, dict(obs.risk)) == (
        "charge", "ch_1", None, {"prv_1": RiskSignal("review", RiskState.OPEN, "rule")})


@pytest.mark.parametrize(("closed_reason", "state"), [
    ("approved", RiskState.CLEARED), ("acknowledged", RiskState.CLEARED),
    ("refunded_as_fraud", RiskState.CONFIRMED), ("disputed", RiskState.CONFIRMED), ("refunded", RiskState.CONFIRMED),
    ("canceled", RiskState.CONFIRMED), ("payment_never_settled", RiskState.CONFIRMED),
    ("redacted", RiskState.CONFIRMED),
])
def test_a_closed_review_clears_only_when_a_person_accepted_the_payment(closed_reason: str,
                                                                        state: RiskState) -> None:
    obs = one("review.closed", review(open=False, closed_reason=closed_reason, reason=closed_reason))
    assert dict(obs.risk) == {"prv_1": RiskSignal("review", state, closed_reason)}


def test_unknown_review_closed_reason_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match="closed_reason"):
        push(event("review.closed", review(open=False, closed_reason="vanished")))


# --- agreements ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [
    ("active", AgreementStatus.ACTIVE), ("pending", AgreementStatus.SUSPENDED), ("inactive", AgreementStatus.CLOSED)])
def test_mandate_is_an_agreement(status: str, expected: AgreementStatus) -> None:
    obs = one("mandate.updated", {"id": "mandate_1", "object": "mandate", "status": status})
    assert (obs.kind, obs.status, obs.object_type, obs.object_id) == (
        ObjectKind.AGREEMENT, expected, "mandate", "mandate_1")


def setup(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "seti_1", "object": "setup_intent", "status": status, "payment_method": "pm_1",
            "last_setup_error": None, **fields}


def test_a_succeeded_setup_makes_its_payment_method_an_active_agreement() -> None:
    obs = one("setup_intent.succeeded", setup("succeeded"))
    assert (obs.kind, obs.object_type, obs.object_id, obs.status) == (
        ObjectKind.AGREEMENT, "payment_method", "pm_1", AgreementStatus.ACTIVE)


def test_a_failed_setup_suspends_the_payment_method_that_failed_with_its_decline_code() -> None:
    failed = setup("requires_payment_method", payment_method=None, last_setup_error={
        "code": "card_declined", "decline_code": "do_not_honor", "payment_method": {"id": "pm_2"}})
    obs = one("setup_intent.setup_failed", failed)
    assert (obs.object_id, obs.status, obs.reason_code) == ("pm_2", AgreementStatus.SUSPENDED, "do_not_honor")


@pytest.mark.parametrize("event_type", ["setup_intent.created", "setup_intent.requires_action",
                                        "setup_intent.canceled"])
def test_setup_steps_without_an_outcome_are_ignored(event_type: str) -> None:
    assert push(event(event_type, setup("requires_action"))) == []


def test_a_setup_that_names_no_payment_method_gives_nothing() -> None:
    before = ignored_count("setup_intent.succeeded")
    assert push(event("setup_intent.succeeded", setup("succeeded", payment_method=None))) == []
    assert ignored_count("setup_intent.succeeded") == before + 1


@pytest.mark.parametrize(("event_type", "customer", "expected"), [
    ("payment_method.attached", "cus_1", AgreementStatus.ACTIVE),
    ("payment_method.updated", "cus_1", AgreementStatus.ACTIVE),
    ("payment_method.automatically_updated", "cus_1", AgreementStatus.ACTIVE),
    ("payment_method.detached", None, AgreementStatus.CLOSED),
])
def test_saved_payment_methods_are_agreements(event_type: str, customer: str | None,
                                              expected: AgreementStatus) -> None:
    obs = one(event_type, {"id": "pm_1", "object": "payment_method", "type": "card", "customer": customer})
    assert (obs.object_type, obs.object_id, obs.status) == ("payment_method", "pm_1", expected)


def test_a_payment_method_saved_to_no_customer_is_no_agreement() -> None:
    assert push(event("payment_method.updated", {"id": "pm_1", "object": "payment_method", "customer": None})) == []


# --- fetched objects, thin events, malformed input -----------------------------------------------------


def test_fetched_payment_intent_is_dated_by_the_provider_not_the_fetch() -> None:
    (obs,) = stripe.parse(orjson.dumps(intent("requires_capture")), account="acct", source=Source.POLL,
                          evidence_id="f-1", observed_at=NOW, object_kind="object")
    assert (obs.status, obs.occurred_at, obs.source) == (P.AUTHORIZED, datetime.fromtimestamp(CREATED, UTC),
                                                         Source.POLL)


def test_fetched_intent_after_failed_attempt_is_failed() -> None:
    (obs,) = stripe.parse(orjson.dumps(intent("requires_payment_method", last_payment_error={"code": "x"})),
                          account="acct", source=Source.POLL, evidence_id="f-1", observed_at=NOW,
                          object_kind="object")
    assert obs.status is P.FAILED


def test_event_without_data_object_is_malformed() -> None:
    with pytest.raises(NormalizationError):
        push(orjson.dumps({"id": "evt", "type": "charge.succeeded", "created": CREATED, "data": {}}))


def test_sync_status_of_an_unknown_word_names_it() -> None:
    assert stripe.sync_status("payment_intent", "succeeded") is P.CAPTURED
    with pytest.raises(UnknownProviderStatus) as raised:
        stripe.sync_status("payment_intent", "exploded")
    assert raised.value.word == "payment_intent.status:exploded"


def test_thin_event_names_its_related_object() -> None:
    body = orjson.dumps({"id": "evt_t", "object": "v2.core.event", "type": "v1.payment_intent.succeeded",
                         "related_object": {"id": "pi_9", "type": "payment_intent", "url": "/v1/payment_intents/pi_9"}})
    (target,) = stripe.thin_targets(body)
    assert (target.object_type, target.object_id) == ("payment_intent", "pi_9")
