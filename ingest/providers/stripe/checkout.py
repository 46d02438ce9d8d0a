"""Stripe Checkout Sessions → the session's PaymentIntent.

Stripe tells Checkout merchants to fulfil on ``checkout.session.completed`` when ``payment_status`` is
``paid``, and otherwise (``unpaid``: an asynchronous method such as a bank debit is still processing) to wait
for ``checkout.session.async_payment_succeeded`` / ``…async_payment_failed``. Every one of them is observed
under ``payment_intent:{pi}``, the key the PaymentIntent's own events use, so a consumer sees one payment
whichever of these events the merchant subscribed to.

A session names no payment when it has no PaymentIntent (setup and subscription mode; a payment-mode session
that expired before any attempt: from API 2022-08-01 on its PaymentIntent is only created on confirmation)
or when nothing was to be paid (``no_payment_required``): no observation, counted as ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.providers.parse_support import field_of, optional_field
from ingest.providers.stripe.fields import Seen, currency, id_of, nothing, observation, order_ref, text, word
from paystream.errors import NormalizationError
from schemas.observation import Observation
from schemas.status import ObjectKind, PaymentStatus

P = PaymentStatus

# checkout.session.completed, by Session.payment_status (stripe-python 16.1.0: paid, unpaid, no_payment_required).
COMPLETED: Mapping[str, PaymentStatus | None] = {
    "paid": P.CAPTURED,
    "unpaid": P.PENDING,
    "no_payment_required": None,  # a free order (a 100% discount, a trial): no money to track
}
# The other session events say the outcome themselves, whatever payment_status the session shows.
BY_EVENT: Mapping[str, PaymentStatus] = {
    "checkout.session.async_payment_succeeded": P.CAPTURED,
    "checkout.session.async_payment_failed": P.FAILED,
    "checkout.session.expired": P.CANCELED,
}


def session(cs: Mapping[str, Any], seen: Seen) -> list[Observation]:
    what = "stripe checkout.session"
    payment_status = field_of(cs, "payment_status", str, what)
    event_type = seen.event_type
    if event_type == "checkout.session.completed":
        status = word(COMPLETED, payment_status, "checkout.session.payment_status")
    elif event_type is not None and event_type in BY_EVENT:
        status = BY_EVENT[event_type]
    else:
        raise NormalizationError(f"{what}: cannot read a session from {event_type!r}", reason="unexpected_record")
    intent = id_of(cs.get("payment_intent"))
    if status is None or intent is None:
        return nothing(seen)
    session_status = text(cs, "status") or "unknown"
    return [observation(
        seen, object_type="payment_intent", object_id=intent, kind=ObjectKind.PAYMENT, status=status,
        provider_status=f"checkout.session:{session_status}:{payment_status}",
        amount=optional_field(cs, "amount_total", int, what), currency=currency(cs, what),
        order_ref=order_ref(cs) or text(cs, "client_reference_id"),
    )]
