"""Stripe's payment objects → observations: PaymentIntents, Charges, Refunds and Disputes.

Money is reported by id, each movement with its own state: the capture by charge id (so a PaymentIntent's
``amount_received`` and a ``charge.captured`` of the same money count once), each refund by refund id, each
dispute by dispute id. The join derives ``partially_refunded`` / ``refunded`` from those amounts and drops
back to ``captured`` when a refund fails, so a captured charge reports the money word CAPTURED whatever was
refunded — never REFUNDED as a word — together with its refunds: by id when the event embeds the refunds list
(API versions before 2022-11-15, or an expanded list), else ``amount_refunded`` as the refunded total.

A refund never names the payment's status (``status=None``): it contributes its movement. A dispute names
the status the payment has because of it (disputed while open, captured when won — the join refines that
into the money status — charged_back when lost) and the dispute itself, for ``disputed_amount``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ingest.providers.parse_support import field_of, optional_field, unix_time
from ingest.providers.stripe.fields import Seen, currency, id_of, observation, order_ref, payment_target, text, word
from paystream.errors import NormalizationError
from schemas.observation import Dispute, Movement, Observation
from schemas.status import DisputeState, MoneyState, ObjectKind, PaymentStatus

P = PaymentStatus

PAYMENT_INTENT_STATUSES: Mapping[str, PaymentStatus] = {
    "requires_payment_method": P.PENDING,  # P.FAILED when last_payment_error says an attempt failed
    "requires_confirmation": P.PENDING,
    "requires_action": P.REQUIRES_ACTION,
    "processing": P.PENDING,
    "requires_capture": P.AUTHORIZED,
    "canceled": P.CANCELED,
    "succeeded": P.CAPTURED,
}

CHARGE_STATUSES: Mapping[str, PaymentStatus] = {
    "pending": P.PENDING,
    "failed": P.FAILED,
    "succeeded": P.AUTHORIZED,  # refined below from the charge's ``captured`` and ``refunded`` flags
}

# Refund.status: "pending, requires_action, succeeded, failed, or canceled" (stripe-python 16.1.0, Refund).
# requires_action (the customer must give bank details) has not moved money yet: pending.
REFUND_STATES: Mapping[str, MoneyState] = {
    "pending": MoneyState.PENDING,
    "requires_action": MoneyState.PENDING,
    "succeeded": MoneyState.SUCCEEDED,
    "failed": MoneyState.FAILED,
    "canceled": MoneyState.CANCELED,
}

# Dispute.status (stripe-python 16.1.0, Dispute). warning_* are inquiries (no funds withdrawn yet);
# warning_closed is an inquiry that never became a chargeback and prevented one stopped before it was filed
# (a prevention program's refund, if any, arrives as its own refund events): the money stays, like won.
# appeal_* reopen a decided dispute while the merchant appeals it.
DISPUTE_STATUSES: Mapping[str, tuple[PaymentStatus, DisputeState]] = {
    "warning_needs_response": (P.DISPUTED, DisputeState.OPEN),
    "warning_under_review": (P.DISPUTED, DisputeState.OPEN),
    "needs_response": (P.DISPUTED, DisputeState.OPEN),
    "under_review": (P.DISPUTED, DisputeState.OPEN),
    "appeal_needs_response": (P.DISPUTED, DisputeState.OPEN),
    "appeal_under_review": (P.DISPUTED, DisputeState.OPEN),
    "warning_closed": (P.CAPTURED, DisputeState.WON),
    "won": (P.CAPTURED, DisputeState.WON),
    "prevented": (P.CAPTURED, DisputeState.WON),
    "lost": (P.CHARGED_BACK, DisputeState.LOST),
}

# Stripe documents that ``payment_method_details.card.capture_before`` says when an uncaptured charge's
# authorisation lapses, and that an online card authorisation is valid for 7 days (Visa merchant-initiated
# ones: 5), after which the funds are released and the PaymentIntent is canceled
# (https://docs.stripe.com/payments/place-a-hold-on-a-payment-method). Without capture_before, a card
# authorisation lapses 7 days after its charge was created.
CARD_AUTHORIZATION_VALIDITY = timedelta(days=7)


def payment_intent(pi: Mapping[str, Any], seen: Seen) -> list[Observation]:
    what = "stripe payment_intent"
    status_word = field_of(pi, "status", str, what)
    status = word(PAYMENT_INTENT_STATUSES, status_word, "payment_intent.status")
    error = pi.get("last_payment_error")
    reason = None
    if isinstance(error, dict):
        reason = text(error, "decline_code") or text(error, "code")
        if status_word == "requires_payment_method":  # back to the start after a failed attempt
            status = P.FAILED
    if seen.event_type == "payment_intent.payment_failed":
        status = P.FAILED
    if status_word == "canceled":
        reason = text(pi, "cancellation_reason") or reason
    pi_id = field_of(pi, "id", str, what)
    received = optional_field(pi, "amount_received", int, what) or 0
    latest = pi.get("latest_charge")
    charge_id = id_of(latest) or pi_id
    expires = _authorization_expiry(latest) if isinstance(latest, dict) and status is P.AUTHORIZED else None
    return [observation(
        seen, object_type="payment_intent", object_id=pi_id, kind=ObjectKind.PAYMENT, status=status,
        provider_status=status_word, reason_code=reason, amount=optional_field(pi, "amount", int, what),
        currency=currency(pi, what), captures={charge_id: Movement(received)} if received > 0 else {},
        order_ref=order_ref(pi), agreement_ref=id_of(pi.get("payment_method")), authorization_expires_at=expires,
    )]


def charge(ch: Mapping[str, Any], seen: Seen) -> list[Observation]:
    what = "stripe charge"
    charge_id = field_of(ch, "id", str, what)
    status_word = field_of(ch, "status", str, what)
    status: PaymentStatus | None = word(CHARGE_STATUSES, status_word, "charge.status")
    captured = ch.get("captured") is True
    refunds: dict[str, Movement] = {}
    refunded_total = None
    if status_word == "succeeded" and captured:
        status = P.CAPTURED
        refunds, refunded_total = _refunds_of(ch, what)
    elif status_word == "succeeded" and ch.get("refunded") is True:
        status = P.CANCELED  # an uncaptured charge "refunded" in full: its authorisation was released
    if seen.event_type == "charge.expired":
        status = P.CANCELED  # an uncaptured charge whose authorisation lapsed
    if status is P.CAPTURED and ch.get("disputed") is True:
        # A disputed charge cannot say how its dispute stands: the charge.dispute.* events name the status
        # (else a charge.updated after charge.dispute.created would undo "disputed"); its money still counts.
        status = None
    amount_captured = optional_field(ch, "amount_captured", int, what) or 0
    intent = id_of(ch.get("payment_intent"))  # a legacy charge without one is its own payment
    return [observation(
        seen, object_type="payment_intent" if intent else "charge", object_id=intent or charge_id,
        kind=ObjectKind.PAYMENT, status=status,
        provider_status=f"charge:{status_word}", reason_code=text(ch, "failure_code"),
        amount=optional_field(ch, "amount", int, what), currency=currency(ch, what),
        captures={charge_id: Movement(amount_captured)} if captured and amount_captured > 0 else {},
        refunds=refunds, refunded_total=refunded_total, order_ref=order_ref(ch), agreement_ref=_agreement_of(ch),
        authorization_expires_at=_authorization_expiry(ch) if status is P.AUTHORIZED else None,
    )]


def refund(re: Mapping[str, Any], seen: Seen) -> list[Observation]:
    """An amount-only observation: the refund by id with its own state (``refund.*``, ``charge.refund.updated``)."""
    what = "stripe refund"
    status_word = field_of(re, "status", str, what)
    state = word(REFUND_STATES, status_word, "refund.status")
    object_type, object_id = payment_target(re, what)
    return [observation(
        seen, object_type=object_type, object_id=object_id, kind=ObjectKind.PAYMENT, status=None,
        provider_status=f"refund:{status_word}", reason_code=text(re, "failure_reason"),
        currency=currency(re, what),
        refunds={field_of(re, "id", str, what): Movement(field_of(re, "amount", int, what), state)},
    )]


def dispute(dp: Mapping[str, Any], seen: Seen) -> list[Observation]:
    what = "stripe dispute"
    status_word = field_of(dp, "status", str, what)
    status, state = word(DISPUTE_STATUSES, status_word, "dispute.status")
    object_type, object_id = payment_target(dp, what)
    reason = text(dp, "reason")
    return [observation(
        seen, object_type=object_type, object_id=object_id, kind=ObjectKind.PAYMENT, status=status,
        provider_status=f"dispute:{status_word}", reason_code=reason, currency=currency(dp, what),
        disputes={field_of(dp, "id", str, what): Dispute(optional_field(dp, "amount", int, what), state, reason)},
    )]


def _refunds_of(ch: Mapping[str, Any], what: str) -> tuple[dict[str, Movement], int | None]:
    """A captured charge's refunds: by id when it embeds the complete list, else its ``amount_refunded``.

    From API version 2022-11-15 on a charge no longer embeds its refunds (unless expanded); a list with
    ``has_more`` names only the newest refunds. Either way the charge still states the running total."""
    listed = ch.get("refunds")
    if isinstance(listed, dict) and isinstance(listed.get("data"), list) and listed.get("has_more") is not True:
        refunds = {}
        for item in listed["data"]:
            if not isinstance(item, dict):
                raise NormalizationError(f"{what}: a refunds list entry is not an object", reason="malformed_body")
            refunds[field_of(item, "id", str, what)] = Movement(
                field_of(item, "amount", int, what),
                word(REFUND_STATES, field_of(item, "status", str, what), "refund.status"))
        return refunds, None
    return {}, optional_field(ch, "amount_refunded", int, what) or 0


def _agreement_of(ch: Mapping[str, Any]) -> str | None:
    """The mandate the charge ran on (``payment_method_details.{type}.mandate``), else its payment method."""
    details = ch.get("payment_method_details")
    if isinstance(details, dict) and isinstance(details.get("type"), str):
        method = details.get(details["type"])
        if isinstance(method, dict):
            mandate = id_of(method.get("mandate"))
            if mandate:
                return mandate
    return id_of(ch.get("payment_method"))


def _authorization_expiry(ch: Mapping[str, Any]) -> datetime | None:
    """When an uncaptured card charge's authorisation lapses (see CARD_AUTHORIZATION_VALIDITY)."""
    what = "stripe charge"
    details = ch.get("payment_method_details")
    if not isinstance(details, dict) or details.get("type") != "card":
        return None  # other methods (card_present, bank debits...) document other windows, or none
    card = details.get("card")
    if isinstance(card, dict) and card.get("capture_before") is not None:
        return unix_time(card["capture_before"], what)
    if ch.get("created") is None:
        return None
    return unix_time(ch["created"], what) + CARD_AUTHORIZATION_VALIDITY
