"""Stripe Radar → risk signals on the payment: early fraud warnings and reviews.

A risk signal never carries a status (``status=None``): the payment stays captured (or wherever it is), and
fulfillment holds a shipment while a signal is open or confirmed. Each signal is keyed by its own id
(``issfr_…``, ``prv_…``) on the payment it concerns: its PaymentIntent, else its charge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.providers.parse_support import field_of
from ingest.providers.stripe.fields import Seen, observation, payment_target, text, word
from schemas.observation import Observation, RiskSignal
from schemas.status import ObjectKind, RiskState

# Review.closed_reason (stripe-python 16.1.0; acknowledged and payment_never_settled since API 2025-09-30).
# Only a person accepting the payment clears a review: approved, or acknowledged ("the review was acknowledged
# and then closed"). Every other way a review closes leaves no one vouching for the payment, so fulfillment
# keeps holding: refunded_as_fraud and disputed confirm the fraud, refunded / canceled / payment_never_settled
# mean the money did not stay, and redacted erased the review without a decision.
REVIEW_CLOSED: Mapping[str, RiskState] = {
    "approved": RiskState.CLEARED,
    "acknowledged": RiskState.CLEARED,
    "refunded_as_fraud": RiskState.CONFIRMED,
    "disputed": RiskState.CONFIRMED,
    "refunded": RiskState.CONFIRMED,
    "canceled": RiskState.CONFIRMED,
    "payment_never_settled": RiskState.CONFIRMED,
    "redacted": RiskState.CONFIRMED,
}


def early_fraud_warning(efw: Mapping[str, Any], seen: Seen) -> list[Observation]:
    """Open while ``actionable``; Stripe makes a warning not actionable once its charge was disputed or fully
    refunded, so nothing is left to hold."""
    what = "stripe radar.early_fraud_warning"
    actionable = field_of(efw, "actionable", bool, what)
    object_type, object_id = payment_target(efw, what)
    signal = RiskSignal("early_fraud_warning", RiskState.OPEN if actionable else RiskState.CLEARED,
                        text(efw, "fraud_type"))
    return [observation(
        seen, object_type=object_type, object_id=object_id, kind=ObjectKind.PAYMENT, status=None,
        provider_status=f"early_fraud_warning:{'actionable' if actionable else 'not_actionable'}",
        reason_code=signal.reason, risk={field_of(efw, "id", str, what): signal},
    )]


def review(rv: Mapping[str, Any], seen: Seen) -> list[Observation]:
    what = "stripe review"
    if field_of(rv, "open", bool, what):
        reason = text(rv, "opened_reason") or text(rv, "reason")
        signal = RiskSignal("review", RiskState.OPEN, reason)
        provider_status = f"review:open:{reason}"
    else:
        closed_reason = field_of(rv, "closed_reason", str, what)
        signal = RiskSignal("review", word(REVIEW_CLOSED, closed_reason, "review.closed_reason"), closed_reason)
        provider_status = f"review:closed:{closed_reason}"
    object_type, object_id = payment_target(rv, what)
    return [observation(
        seen, object_type=object_type, object_id=object_id, kind=ObjectKind.PAYMENT, status=None,
        provider_status=provider_status, reason_code=signal.reason, risk={field_of(rv, "id", str, what): signal},
    )]
