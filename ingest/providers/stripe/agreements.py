"""Stripe agreements: mandates (``mandate:{id}``) and payment methods saved for reuse
(``payment_method:{pm_…}``). A payment names the agreement it ran on in ``agreement_ref`` (payments.py).

Decisions per event (the catalog gives the why of each):

* ``mandate.updated`` — the mandate's own status word.
* ``setup_intent.succeeded`` — the payment method is set up for future payments: active.
* ``setup_intent.setup_failed`` — the payment method that failed (``last_setup_error.payment_method``) is not
  usable until a setup succeeds: suspended (a later success may reactivate it; closed would be final), with
  the decline code as the reason.
* ``payment_method.attached`` / ``updated`` / ``automatically_updated`` — a payment method saved to a customer
  is usable: active. One saved to no customer is no agreement (nothing).
* ``payment_method.detached`` — Stripe cannot reuse a detached payment method: closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.providers.parse_support import field_of
from ingest.providers.stripe.fields import Seen, id_of, nothing, observation, text, word
from paystream.errors import NormalizationError
from schemas.observation import Observation
from schemas.status import AgreementStatus, ObjectKind

A = AgreementStatus

MANDATE_STATUSES: Mapping[str, AgreementStatus] = {
    "active": A.ACTIVE,
    "pending": A.SUSPENDED,  # not usable yet
    "inactive": A.CLOSED,
}
SETUP_INTENT_EVENTS: Mapping[str, AgreementStatus] = {
    "setup_intent.succeeded": A.ACTIVE,
    "setup_intent.setup_failed": A.SUSPENDED,
}
PAYMENT_METHOD_EVENTS: Mapping[str, AgreementStatus] = {
    "payment_method.attached": A.ACTIVE,
    "payment_method.updated": A.ACTIVE,
    "payment_method.automatically_updated": A.ACTIVE,
    "payment_method.detached": A.CLOSED,
}


def mandate(md: Mapping[str, Any], seen: Seen) -> list[Observation]:
    what = "stripe mandate"
    status_word = field_of(md, "status", str, what)
    return [observation(
        seen, object_type="mandate", object_id=field_of(md, "id", str, what), kind=ObjectKind.AGREEMENT,
        status=word(MANDATE_STATUSES, status_word, "mandate.status"), provider_status=f"mandate:{status_word}",
    )]


def setup_intent(si: Mapping[str, Any], seen: Seen) -> list[Observation]:
    what = "stripe setup_intent"
    status = _decision(SETUP_INTENT_EVENTS, seen, what)
    method = id_of(si.get("payment_method"))
    reason = None
    error = si.get("last_setup_error")
    if status is A.SUSPENDED and isinstance(error, dict):
        # Stripe resets a failed SetupIntent to requires_payment_method: the method that failed is in the error.
        method = id_of(error.get("payment_method")) or method
        reason = text(error, "decline_code") or text(error, "code")
    if method is None:
        return nothing(seen)  # no payment method was named: no agreement to speak of
    return [observation(
        seen, object_type="payment_method", object_id=method, kind=ObjectKind.AGREEMENT, status=status,
        provider_status=f"setup_intent:{field_of(si, 'status', str, what)}", reason_code=reason,
    )]


def payment_method(pm: Mapping[str, Any], seen: Seen) -> list[Observation]:
    what = "stripe payment_method"
    status = _decision(PAYMENT_METHOD_EVENTS, seen, what)
    if status is A.ACTIVE and id_of(pm.get("customer")) is None:
        return nothing(seen)  # not saved to a customer: a one-off payment method, no agreement
    event_type = seen.event_type or ""
    return [observation(
        seen, object_type="payment_method", object_id=field_of(pm, "id", str, what), kind=ObjectKind.AGREEMENT,
        status=status, provider_status=f"payment_method:{event_type.removeprefix('payment_method.')}",
    )]


def _decision(decisions: Mapping[str, AgreementStatus], seen: Seen, what: str) -> AgreementStatus:
    event_type = seen.event_type
    if event_type is None or event_type not in decisions:
        raise NormalizationError(f"{what}: cannot read one from {event_type!r}", reason="unexpected_record")
    return decisions[event_type]
