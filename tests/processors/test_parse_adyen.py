"""Adyen parser: notification items by (eventCode, success), and what the join makes of them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.providers.adyen import parse as adyen
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.join import PaymentState, advance, fold
from schemas.observation import Dispute, Movement, Observation, RiskSignal
from schemas.status import AgreementStatus, DisputeState, MoneyState, ObjectKind, PaymentStatus, RiskState, Source

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
P, M, D = PaymentStatus, MoneyState, DisputeState
PAYMENT = "7914073381342284"

# From Adyen/adyen-python-api-library test/UtilTest.py (commit b6f49792b79c23e2674b35c04dd045aa07daf599),
# as copied into ../shared/vectors/adyen.json: "test_notification_request_item_hmac".
VECTOR_ITEM: dict[str, Any] = {
    "pspReference": PAYMENT,
    "merchantReference": "TestPayment-1407325143704",
    "merchantAccountCode": "TestMerchant",
    "amount": {"currency": "EUR", "value": 1130},
    "eventCode": "AUTHORISATION",
    "success": "true",
    "eventDate": "2019-05-06T17:15:34.121+02:00",
    "operations": ["CANCEL", "CAPTURE", "REFUND"],
    "paymentMethod": "visa",
}


def modification(code: str, psp: str, value: int, success: str = "true", minute: int = 20,
                 **extra: Any) -> dict[str, Any]:
    return {"pspReference": psp, "originalReference": PAYMENT, "merchantAccountCode": "TestMerchant",
            "merchantReference": "TestPayment-1407325143704", "amount": {"currency": "EUR", "value": value},
            "eventCode": code, "success": success, "eventDate": f"2019-05-06T17:{minute}:00+02:00", **extra}


def push(item: dict[str, Any], evidence: str = "d-1") -> list[Observation]:
    return adyen.parse(orjson.dumps(item), account="main", source=Source.PUSH, evidence_id=evidence,
                       observed_at=NOW, object_kind="event")


def one(item: dict[str, Any]) -> Observation:
    (obs,) = push(item)
    return obs


def events(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(status, captured, refunded, disputed, reason_code) of each event the join emits, items in order."""
    state: PaymentState | None = None
    emitted = []
    for n, item in enumerate(items):
        for obs in push(item, f"d-{n}"):
            step = advance(state, obs, NOW)
            state = step.state
            if step.event is not None:
                data = step.event["data"]
                emitted.append((data["status"], data["captured_amount"], data["refunded_amount"],
                                data["disputed_amount"], data["reason_code"]))
    return emitted


AUTHORISED = [VECTOR_ITEM, modification("CAPTURE", "C1", 1130, minute=16)]


# --- payments --------------------------------------------------------------------------------------------


def test_published_vector_item_is_an_authorisation() -> None:
    obs = one(VECTOR_ITEM)
    assert (obs.status, obs.object_type, obs.object_id, obs.amount, obs.currency, obs.order_ref) == (
        P.AUTHORIZED, "payment", PAYMENT, 1130, "EUR", "TestPayment-1407325143704")
    assert obs.occurred_at == datetime(2019, 5, 6, 15, 15, 34, 121000, tzinfo=UTC)
    # Adyen says no expiry in its webhooks and documents no single validity.
    assert (obs.reason_code, obs.agreement_ref, obs.authorization_expires_at) == (None, None, None)


def test_refused_authorisation_is_failed_with_reason() -> None:
    obs = one({**VECTOR_ITEM, "success": "false", "reason": "Refused"})
    assert (obs.status, obs.reason_code, obs.provider_status) == (P.FAILED, "Refused", "AUTHORISATION:false")


@pytest.mark.parametrize(("field", "other"), [("tokenization.storedPaymentMethodId", None),
                                              ("recurring.recurringDetailReference", None),
                                              ("tokenization.storedPaymentMethodId",
                                               "recurring.recurringDetailReference")])
def test_an_authorisation_names_the_stored_payment_method_it_ran_on(field: str, other: str | None) -> None:
    additional = {field: "M5N7TQ4TG5PFWR50", "recurringProcessingModel": "Subscription"}
    if other:
        additional[other] = "OLDREFERENCE0001"  # the field the current one replaces loses
    assert one({**VECTOR_ITEM, "additionalData": additional}).agreement_ref == "M5N7TQ4TG5PFWR50"


def test_a_modification_does_not_take_its_merchant_reference_for_the_order() -> None:
    assert one(modification("CAPTURE", "C1", 1130, merchantReference="capture-ref-9")).order_ref is None


def test_authorisation_adjustment_states_the_new_amount_and_a_refused_one_changes_nothing() -> None:
    adjusted = one(modification("AUTHORISATION_ADJUSTMENT", "A1", 2000))
    assert (adjusted.status, adjusted.amount, adjusted.object_id) == (P.AUTHORIZED, 2000, PAYMENT)
    assert push(modification("AUTHORISATION_ADJUSTMENT", "A2", 3000, success="false")) == []
    assert events([VECTOR_ITEM, modification("AUTHORISATION_ADJUSTMENT", "A1", 2000)]) == [
        ("authorized", 0, 0, 0, None), ("authorized", 0, 0, 0, None)]


@pytest.mark.parametrize(("item", "reason"), [
    ({**VECTOR_ITEM, "eventCode": "EXPIRE", "eventDate": "2019-05-20T10:00:00+02:00"}, "expired"),
    (modification("TECHNICAL_CANCEL", "T1", 1130), None),
    (modification("CANCELLATION", "X1", 1130), None),
    (modification("CANCEL_OR_REFUND", "X2", 1130, additionalData={"modification.action": "cancel"}), None),
])
def test_authorisations_that_end_are_canceled(item: dict[str, Any], reason: str | None) -> None:
    obs = one(item)
    assert (obs.status, obs.object_id, obs.reason_code) == (P.CANCELED, PAYMENT, reason)
    assert events([VECTOR_ITEM, item]) == [("authorized", 0, 0, 0, None), ("canceled", 0, 0, 0, reason)]


@pytest.mark.parametrize("code", ["EXPIRE", "CANCELLATION", "TECHNICAL_CANCEL", "OFFER_CLOSED"])
def test_a_failed_end_of_an_authorisation_reports_nothing(code: str) -> None:
    assert push(modification(code, "X1", 1130, success="false")) == []


# --- captures --------------------------------------------------------------------------------------------


def test_captures_are_movements_by_their_own_reference_without_a_status() -> None:
    assert one(modification("CAPTURE", "C1", 1130)).captures == {"C1": Movement(1130, M.SUCCEEDED)}
    refused = one(modification("CAPTURE", "C2", 1130, success="false", reason="Insufficient balance"))
    assert (refused.status, refused.captures, refused.reason_code) == (None, {"C2": Movement(1130, M.FAILED)},
                                                                       "Insufficient balance")


def test_a_capture_the_scheme_rejected_moves_the_payment_back_to_authorised() -> None:
    failed = one(modification("CAPTURE_FAILED", "C1", 1130, reason="Capture Failed"))
    assert (failed.status, failed.captures, failed.reason_code) == (None, {"C1": Movement(1130, M.FAILED)},
                                                                    "Capture Failed")
    assert events([*AUTHORISED, modification("CAPTURE_FAILED", "C1", 1130, minute=30, reason="Capture Failed")]) == [
        ("authorized", 0, 0, 0, None), ("captured", 1130, 0, 0, None), ("authorized", 0, 0, 0, "Capture Failed")]


def test_a_capture_reported_succeeded_without_an_amount_is_malformed() -> None:
    item = modification("CAPTURE", "C1", 1)
    del item["amount"]
    with pytest.raises(NormalizationError, match="amount"):
        push(item)


# --- refunds ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "success", "state"), [
    ("REFUND", "true", M.SUCCEEDED), ("REFUND", "false", M.FAILED), ("REFUND_FAILED", "true", M.FAILED),
    ("REFUNDED_REVERSED", "true", M.REVERSED), ("REFUND_WITH_DATA", "true", M.SUCCEEDED),
    ("REFUND_WITH_DATA", "false", M.FAILED), ("VOID_PENDING_REFUND", "true", M.CANCELED),
    ("POSTPONED_REFUND", "true", M.PENDING),
])
def test_refunds_are_movements_with_their_own_state(code: str, success: str, state: MoneyState) -> None:
    obs = one(modification(code, "R1", 130, success=success))
    assert (obs.status, obs.object_id, obs.refunds) == (None, PAYMENT, {"R1": Movement(130, state)})


@pytest.mark.parametrize("code", ["REFUND_FAILED", "REFUNDED_REVERSED", "VOID_PENDING_REFUND", "POSTPONED_REFUND"])
def test_a_false_refund_outcome_reports_nothing(code: str) -> None:
    assert push(modification(code, "R1", 130, success="false")) == []


@pytest.mark.parametrize("code", ["REFUND_WITH_DATA", "VOID_PENDING_REFUND"])
def test_an_unreferenced_refund_has_no_payment_to_move(code: str) -> None:
    item = modification(code, "R1", 130)
    del item["originalReference"]
    assert push(item) == []
    assert push({**item, "originalReference": ""}) == []


@pytest.mark.parametrize(("code", "reason"), [("REFUND_FAILED", "Refund Failed"), ("REFUNDED_REVERSED", None)])
def test_a_refund_that_failed_or_was_reversed_moves_the_payment_back(code: str, reason: str | None) -> None:
    undone = modification(code, "R1", 1130, minute=40, reason=reason or "")
    assert events([*AUTHORISED, modification("REFUND", "R1", 1130, minute=30), undone]) == [
        ("authorized", 0, 0, 0, None), ("captured", 1130, 0, 0, None), ("refunded", 1130, 1130, 0, None),
        ("captured", 1130, 0, 0, reason)]


def test_a_refused_refund_never_counted() -> None:
    refused = modification("REFUND", "R1", 130, success="false", minute=30, reason="Refund not possible")
    assert events([*AUTHORISED, refused]) == [("authorized", 0, 0, 0, None), ("captured", 1130, 0, 0, None)]


def test_cancel_or_refund_after_capture_is_a_refund() -> None:
    action: dict[str, Any] = {"additionalData": {"modification.action": "refund"}}
    assert one(modification("CANCEL_OR_REFUND", "X1", 1130, **action)).refunds == {"X1": Movement(1130, M.SUCCEEDED)}
    assert one(modification("CANCEL_OR_REFUND", "X1", 1130, success="false", **action)).refunds == {
        "X1": Movement(1130, M.FAILED)}
    assert events([*AUTHORISED, modification("CANCEL_OR_REFUND", "X1", 1130, minute=30, **action)])[-1] == (
        "refunded", 1130, 1130, 0, None)


def test_cancel_or_refund_refused_or_without_a_known_action() -> None:
    assert push(modification("CANCEL_OR_REFUND", "X1", 1130, success="false",
                             additionalData={"modification.action": "cancel"})) == []
    assert push(modification("CANCEL_OR_REFUND", "X1", 1130, success="false")) == []
    with pytest.raises(UnknownProviderStatus, match="void") as raised:
        push(modification("CANCEL_OR_REFUND", "X1", 1130, additionalData={"modification.action": "void"}))
    assert (raised.value.provider, raised.value.word) == ("adyen", "CANCEL_OR_REFUND:void")
    with pytest.raises(UnknownProviderStatus):
        push(modification("CANCEL_OR_REFUND", "X1", 1130))


def test_lifecycle_folds_to_partially_refunded_in_any_order() -> None:
    items = [(VECTOR_ITEM, "d-1"), (modification("CAPTURE", "C1", 1130), "d-2"),
             (modification("REFUND", "R1", 130, minute=30), "d-3")]
    observations = [obs for item, evidence in items for obs in push(item, evidence)]
    forward, backward = fold(observations), fold(list(reversed(observations)))
    assert (forward.status, forward.captured_amount, forward.refunded_amount) == (P.PARTIALLY_REFUNDED, 1130, 130)
    assert (backward.status, backward.captured_amount, backward.refunded_amount) == (
        forward.status, forward.captured_amount, forward.refunded_amount)


# --- disputes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "status", "state"), [
    ("REQUEST_FOR_INFORMATION", P.DISPUTED, D.OPEN), ("NOTIFICATION_OF_CHARGEBACK", P.DISPUTED, D.OPEN),
    ("CHARGEBACK", P.CHARGED_BACK, D.OPEN), ("CHARGEBACK_REVERSED", P.CAPTURED, D.WON),
    ("SECOND_CHARGEBACK", P.CHARGED_BACK, D.LOST), ("DISPUTE_DEFENSE_PERIOD_ENDED", P.CHARGED_BACK, D.LOST),
    ("ISSUER_RESPONSE_TIMEFRAME_EXPIRED", P.CAPTURED, D.WON), ("PREARBITRATION_OPEN", P.DISPUTED, D.OPEN),
    ("PREARBITRATION_DECLINED", P.DISPUTED, D.OPEN), ("PREARBITRATION_ACCEPTED", P.CHARGED_BACK, D.LOST),
    ("PREARBITRATION_ISSUER_WITHDRAWN", P.CAPTURED, D.WON), ("PREARBITRATION_WON", P.CAPTURED, D.WON),
    ("PREARBITRATION_LOST", P.CHARGED_BACK, D.LOST), ("SCHEME_ARBITRATION", P.DISPUTED, D.OPEN),
    ("SCHEME_ARBITRATION_WON", P.CAPTURED, D.WON), ("SCHEME_ARBITRATION_LOST", P.CHARGED_BACK, D.LOST),
])
def test_each_dispute_stage_has_a_status_word_and_the_payments_dispute(
        code: str, status: PaymentStatus, state: DisputeState) -> None:
    obs = one(modification(code, "DSP1", 1130, reason="Fraud", additionalData={"chargebackReasonCode": " 4853"}))
    assert (obs.status, obs.object_id, obs.disputes) == (status, PAYMENT, {PAYMENT: Dispute(1130, state, "4853")})
    assert obs.reason_code == "4853"
    assert push(modification(code, "DSP1", 1130, success="false")) == []


@pytest.mark.parametrize("code", ["INFORMATION_SUPPLIED", "ISSUER_COMMENTS"])
def test_dispute_steps_that_move_no_money_are_ignored(code: str) -> None:
    assert push(modification(code, "DSP1", 1130, additionalData={"disputeStatus": "Pending"})) == []


@pytest.mark.parametrize(("dispute_status", "state"), [(None, D.OPEN), ("Undefended", D.OPEN), ("Pending", D.OPEN),
                                                       ("Accepted", D.LOST), ("Lost", D.LOST)])
def test_a_chargeback_is_lost_when_its_dispute_status_says_so(dispute_status: str | None,
                                                               state: DisputeState) -> None:
    additional = {} if dispute_status is None else {"disputeStatus": dispute_status}
    assert one(modification("CHARGEBACK", "DSP1", 1130, additionalData=additional)).disputes[PAYMENT].state is state


def test_an_undocumented_dispute_status_is_a_new_word() -> None:
    with pytest.raises(UnknownProviderStatus) as raised:
        push(modification("CHARGEBACK", "DSP1", 1130, additionalData={"disputeStatus": "Arbitrated"}))
    assert (raised.value.provider, raised.value.word) == ("adyen", "disputeStatus:Arbitrated")


def test_a_dispute_stage_without_original_reference_names_the_payment_by_its_psp_reference() -> None:
    item = modification("CHARGEBACK_REVERSED", PAYMENT, 1130)
    del item["originalReference"]
    obs = one(item)
    assert (obs.object_id, list(obs.disputes)) == (PAYMENT, [PAYMENT])


def test_a_dispute_won_returns_the_payment_to_its_money_status_and_one_lost_charges_it_back() -> None:
    stages = [modification(code, "DSP1", 1130, minute=minute) for code, minute in (
        ("NOTIFICATION_OF_CHARGEBACK", 30), ("CHARGEBACK", 31), ("CHARGEBACK_REVERSED", 32))]
    won = [("disputed", 1130, 0, 1130, None), ("charged_back", 1130, 0, 1130, None), ("captured", 1130, 0, 0, None)]
    assert events([*AUTHORISED, *stages])[2:] == won
    lost = events([*AUTHORISED, *stages, modification("SECOND_CHARGEBACK", "DSP1", 1130, minute=33)])
    assert lost[2:] == [*won, ("charged_back", 1130, 0, 1130, None)]


# --- risk and agreements ---------------------------------------------------------------------------------


def test_an_issuer_fraud_report_is_a_confirmed_risk_signal_without_a_status() -> None:
    obs = one(modification("NOTIFICATION_OF_FRAUD", "NOF1", 1130, reason="Fraudulent Use of Account Number",
                           additionalData={"nofReasonCode": "6", "nofSchemeCode": "visa"}))
    assert (obs.status, obs.object_id, obs.risk) == (
        None, PAYMENT, {"fraud_report:NOF1": RiskSignal("fraud_report", RiskState.CONFIRMED, "6")})


def test_manual_review_accept_and_reject_close_the_same_review() -> None:
    accepted = one(modification("MANUAL_REVIEW_ACCEPT", PAYMENT, 1130))
    rejected = one(modification("MANUAL_REVIEW_REJECT", PAYMENT, 1130))
    key = f"manual_review:{PAYMENT}"
    assert (accepted.status, accepted.risk[key].kind, accepted.risk[key].state) == (
        None, "manual_review", RiskState.CLEARED)
    assert (rejected.status, rejected.risk[key].state) == (None, RiskState.CONFIRMED)


def test_a_recurring_contract_is_an_active_agreement_keyed_by_its_detail_reference() -> None:
    item = {"pspReference": "M5N7TQ4TG5PFWR50", "originalReference": "INITIAL_PAYMENT_PSP_REFERENCE",
            "merchantAccountCode": "TestMerchant", "merchantReference": "order-1",
            "amount": {"currency": "USD", "value": 0}, "eventCode": "RECURRING_CONTRACT", "success": "true",
            "eventDate": "2024-05-01T10:00:00+02:00", "reason": "first payment stored",
            "additionalData": {"recurring.recurringDetailReference": "M5N7TQ4TG5PFWR50",
                               "recurring.shopperReference": "shopper-1"}}
    obs = one(item)
    assert (obs.kind, obs.object_type, obs.object_id, obs.status, obs.reason_code) == (
        ObjectKind.AGREEMENT, "recurring_contract", "M5N7TQ4TG5PFWR50", AgreementStatus.ACTIVE, "first payment stored")
    assert push({**item, "success": "false"}) == []


# --- the envelope ----------------------------------------------------------------------------------------


def test_unknown_event_code_is_never_guessed() -> None:
    with pytest.raises(UnknownProviderStatus, match="DONATION"):
        push({**VECTOR_ITEM, "eventCode": "DONATION"})


def test_report_available_is_deliberately_ignored() -> None:
    assert push({**VECTOR_ITEM, "eventCode": "REPORT_AVAILABLE"}) == []


def test_success_must_be_a_boolean_word() -> None:
    with pytest.raises(NormalizationError, match="success"):
        push({**VECTOR_ITEM, "success": "maybe"})


def test_wrapped_batch_items_get_distinct_evidence() -> None:
    batch = {"live": "false", "notificationItems": [{"NotificationRequestItem": VECTOR_ITEM},
                                                    {"NotificationRequestItem": modification("CAPTURE", "C1", 1)}]}
    observations = push(batch, "batch-1")
    assert [obs.evidence_id for obs in observations] == ["batch-1#0", "batch-1#1"]


def test_sync_result_codes() -> None:
    assert adyen.sync_status("payment", "RedirectShopper") is PaymentStatus.REQUIRES_ACTION
    with pytest.raises(UnknownProviderStatus):
        adyen.sync_status("payment", "Authorized")
