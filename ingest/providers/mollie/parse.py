"""Mollie: a webhook is an unsigned hint (``id=tr_…``, ``ord_…``, ``re_…``, ...); what the fetcher gets is parsed.

Every resource id prefix Mollie documents is decided in ``catalog.json``. The fetcher asks for
(``ingest/providers/mollie/client.py``):

* a payment (``tr_``) with its refunds and chargebacks embedded;
* an order (``ord_``) with its payments and refunds embedded: each payment is observed under
  ``payment:{tr_…}`` with the order's number as ``order_ref``;
* a refund (``re_``) or a chargeback (``chb_``) through the list of all refunds / chargebacks starting from
  its id, with its payment embedded: it is observed under its payment;
* a subscription (``sub_``) through the list of all subscriptions starting from its id: an agreement under
  ``subscription:{sub_…}``, on its mandate (``agreement_ref``).

Refunds and chargebacks are movements by their own ids (``re_…``, ``chb_…``), each with its own state and time,
in observations of their own. Only when a payment comes without them (an order's payment has no chargebacks
embedded) do the running totals ``amountRefunded`` / ``amountChargedBack`` stand in, each as one entry keyed by
the payment (``{tr_…}:refunded``, ``{tr_…}:chargeback``): never beside named ones, since a total dated by the
payment's status time would count a refund again that is named later. Not as ``refunded_total``: every poll
dates the total by the same status time, and the join keeps the larger of two same-time reports of one entry
(a total only grows), where two same-time totals would be decided by their fetch ids.

Provider time: the timestamp of the payment's current status (``paidAt``, ``canceledAt``, …), a refund's
``createdAt`` (Mollie gives a refund no other time: its states at that time are told apart by their progress),
a chargeback's ``createdAt`` or ``reversedAt``. Repeated polls of an unchanged object collapse into one
observation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs

from ingest.providers.catalog import load_catalog
from ingest.providers.parse_support import FetchTarget, Stamp, field_of, iso_time, load_object, minor_units
from paystream.errors import NormalizationError, UnknownProviderStatus
from schemas.observation import Dispute, Movement, Observation
from schemas.status import AgreementStatus, DisputeState, MoneyState, ObjectKind, PaymentStatus, Source

PROVIDER = "mollie"
P = PaymentStatus
T = TypeVar("T")

# Fetched object types whose poll reads a payment's status: an order, refund, chargeback or subscription is
# fetched by its own id, but what it says is filed under payments (or is an agreement).
PAYMENT_OBJECT_TYPES = frozenset({"payment"})

PAYMENT_STATUSES: Mapping[str, PaymentStatus] = {
    "open": P.PENDING,
    "pending": P.PENDING,
    "authorized": P.AUTHORIZED,
    "paid": P.CAPTURED,
    "canceled": P.CANCELED,
    "expired": P.FAILED,  # the shopper never completed the payment (or an authorization lapsed)
    "failed": P.FAILED,
}

# Which timestamp dates each payment status.
STATUS_TIMES: Mapping[str, str] = {
    "open": "createdAt",
    "pending": "createdAt",
    "authorized": "authorizedAt",
    "paid": "paidAt",
    "canceled": "canceledAt",
    "expired": "expiredAt",
    "failed": "failedAt",
}

REFUND_STATES: Mapping[str, MoneyState] = {
    "queued": MoneyState.PENDING,  # waiting for the balance to cover it
    "pending": MoneyState.PENDING,  # will be processed (can still be canceled)
    "processing": MoneyState.PENDING,
    "refunded": MoneyState.SUCCEEDED,
    "failed": MoneyState.FAILED,  # e.g. the customer's account was closed: the money came back
    "canceled": MoneyState.CANCELED,
}

# An order's own status decides nothing: its payments (embedded) are what is observed, each in its own status.
ORDER_STATUSES: Mapping[str, str] = {
    "created": "no payment yet (or none completed): the order's payments, if any, say so",
    "pending": "a payment is pending: observed from the payment",
    "authorized": "a payment is authorized (pay later methods): observed from the payment",
    "paid": "a payment is paid: observed from the payment",
    "shipping": "lines are being shipped; the captures show on the payment",
    "completed": "every line shipped or canceled; the payment's status and refunds say what moved",
    "canceled": "the order was canceled: its payment says canceled (or refunded)",
    "expired": "the order expired: its payment says expired",
}

SUBSCRIPTION_STATUSES: Mapping[str, AgreementStatus] = {
    "active": AgreementStatus.ACTIVE,
    "pending": AgreementStatus.SUSPENDED,  # waiting for a valid mandate: nothing is charged yet
    "suspended": AgreementStatus.SUSPENDED,  # its mandate became invalid: nothing is charged
    "canceled": AgreementStatus.CLOSED,
    "completed": AgreementStatus.CLOSED,  # every payment of the subscription was made
}

# Resource id prefixes the catalog fetches → the object type of the fetch request (client.py).
HINT_OBJECT_TYPES: Mapping[str, str] = {
    "tr_": "payment", "ord_": "order", "re_": "refund", "chb_": "chargeback", "sub_": "subscription",
}


def known(mapping: Mapping[str, T], word: Any, what: str) -> T:
    """The explicit decision for a provider word; a word without one is Mollie's new word (DLQ + alert)."""
    if isinstance(word, str) and word in mapping:
        return mapping[word]
    raise UnknownProviderStatus(f"{PROVIDER}: no mapping for {what} {word!r}", provider=PROVIDER, word=str(word))


def sync_status(object_type: str, provider_status: str) -> PaymentStatus:
    if object_type != "payment":
        raise NormalizationError(f"mollie: sync observations are for object_type 'payment', not {object_type!r}",
                                 reason="unexpected_record")
    return known(PAYMENT_STATUSES, provider_status, "payment status")


def thin_targets(body: bytes) -> list[FetchTarget]:
    """The resource a hint names (a form body ``id=tr_…``, or JSON ``{"id": "tr_…"}``), decided by its prefix."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        resource_id = field_of(load_object(body, "mollie hint"), "id", str, "mollie hint")
    else:
        values = parse_qs(text).get("id", [])
        if len(values) != 1 or not values[0]:
            raise NormalizationError("mollie hint: expected exactly one id=…", reason="malformed_body")
        resource_id = values[0]
    head, underscore, rest = resource_id.partition("_")
    if not underscore or not head or not rest:
        raise NormalizationError(f"mollie hint: {resource_id!r} is not a Mollie resource id", reason="malformed_body")
    prefix = f"{head}_"
    if load_catalog(PROVIDER).ignored(prefix):
        return []
    return [FetchTarget(known(HINT_OBJECT_TYPES, prefix, "hint resource id prefix"), resource_id)]


def parse(
    body: bytes,
    *,
    account: str,
    source: Source,
    evidence_id: str,
    observed_at: datetime,
    object_kind: str,
) -> list[Observation]:
    """A fetched payment, order or subscription, or a list of refunds, chargebacks or subscriptions."""
    if object_kind != "object":
        raise NormalizationError("mollie: webhooks are hints and are fetched, not parsed",
                                 reason="unexpected_record")
    resource = load_object(body, "mollie object")
    stamp = Stamp(account, source, evidence_id, observed_at)
    kind = resource.get("resource")
    if kind == "payment":
        return _payment(resource, stamp)
    if kind == "order":
        return _order(resource, stamp)
    if kind == "subscription":
        return [_subscription(resource, stamp)]
    if kind is None and "count" in resource:
        return _listed(resource, stamp)
    raise NormalizationError(f"mollie: cannot read a {kind!r}", reason="unexpected_record")


# --- money ------------------------------------------------------------------------------------------------


def _money(obj: Mapping[str, Any], name: str, what: str) -> tuple[int, str] | None:
    money = obj.get(name)
    if money is None:
        return None
    if not isinstance(money, dict):
        raise NormalizationError(f"{what}: {name} is not an object", reason="malformed_body")
    currency = field_of(money, "currency", str, what).upper()
    return minor_units(field_of(money, "value", str, what), currency, f"{what}.{name}"), currency


def _embedded(obj: Mapping[str, Any], what: str) -> dict[str, Any]:
    embedded = obj.get("_embedded")
    if embedded is None:
        return {}
    if not isinstance(embedded, dict):
        raise NormalizationError(f"{what}: _embedded is not an object", reason="malformed_body")
    return embedded


def _items(embedded: Mapping[str, Any], name: str, what: str) -> list[dict[str, Any]] | None:
    """An embedded list (None when it is not embedded at all)."""
    items = embedded.get(name)
    if items is None:
        return None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise NormalizationError(f"{what}: _embedded.{name} is not a list of objects", reason="malformed_body")
    return items


def _text(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    return value if isinstance(value, str) and value else None


# --- payments -----------------------------------------------------------------------------------------------


def _payment(
    payment: Mapping[str, Any],
    stamp: Stamp,
    *,
    order_ref: str | None = None,
    refunds: list[dict[str, Any]] | None = None,
    chargebacks: list[dict[str, Any]] | None = None,
) -> list[Observation]:
    """The payment's status observation, then one per refund and chargeback it names.

    ``refunds`` / ``chargebacks`` given by the caller are what the surrounding object tells of this payment
    (an order's refunds, the one refund of a refund list); otherwise the payment's own embedded lists, and
    only when those are absent the running totals."""
    what = "mollie payment"
    if payment.get("resource", "payment") != "payment":
        raise NormalizationError(f"mollie: expected a payment, got {payment.get('resource')!r}",
                                 reason="unexpected_record")
    payment_id = field_of(payment, "id", str, what)
    word = field_of(payment, "status", str, what)
    status = known(PAYMENT_STATUSES, word, "payment status")
    occurred = iso_time(payment.get(STATUS_TIMES[word]) or payment.get("createdAt"), what)
    embedded = _embedded(payment, what)
    if refunds is None:
        refunds = _items(embedded, "refunds", what)
    if chargebacks is None:
        chargebacks = _items(embedded, "chargebacks", what)
    amount = _money(payment, "amount", what)
    captured = _money(payment, "amountCaptured", what)
    reason = None
    captures: dict[str, Movement] = {}
    if captured and captured[0] > 0:
        captures[f"{payment_id}:captured"] = Movement(captured[0])
    elif word == "paid" and amount:
        captures[f"{payment_id}:captured"] = Movement(amount[0])
    totals: dict[str, Movement] = {}
    if refunds is None:
        refunded = _money(payment, "amountRefunded", what)
        if refunded and refunded[0] > 0:
            totals[f"{payment_id}:refunded"] = Movement(refunded[0])
    disputes: dict[str, Dispute] = {}
    if chargebacks is None:
        charged_back = _money(payment, "amountChargedBack", what)
        if word == "paid" and charged_back and charged_back[0] > 0:
            status, reason = P.CHARGED_BACK, "chargeback"
            disputes[f"{payment_id}:chargeback"] = Dispute(charged_back[0], DisputeState.LOST)
    details = payment.get("details")
    if word == "failed" and isinstance(details, dict) and isinstance(details.get("failureReason"), str):
        reason = details["failureReason"]
    metadata = payment.get("metadata")
    if order_ref is None and isinstance(metadata, dict) and isinstance(metadata.get("order_ref"), str):
        order_ref = metadata["order_ref"]
    capture_before = payment.get("captureBefore") if word == "authorized" else None
    observations = [Observation(
        provider=PROVIDER, account=stamp.account, object_type="payment", object_id=payment_id,
        kind=ObjectKind.PAYMENT, status=status, provider_status=word, source=stamp.source,
        evidence_id=stamp.evidence_id, occurred_at=occurred, observed_at=stamp.observed_at, reason_code=reason,
        amount=amount[0] if amount else None, currency=amount[1] if amount else None, captures=captures,
        refunds=totals, disputes=disputes, order_ref=order_ref,
        agreement_ref=_text(payment, "mandateId"),
        authorization_expires_at=None if capture_before is None else iso_time(capture_before, f"{what}.captureBefore"),
    )]
    observations += [_refund(refund, payment_id, stamp) for refund in refunds or ()]
    observations += [_chargeback(chargeback, payment_id, stamp) for chargeback in chargebacks or ()]
    return observations


def _owner(resource: Mapping[str, Any], resource_id: str, payment_id: str | None, what: str) -> str:
    """The payment a refund or chargeback is filed under: the one it was embedded in (which its own
    ``paymentId`` must name, when it has one), else its ``paymentId``."""
    named = _text(resource, "paymentId")
    if payment_id is None:
        return field_of(resource, "paymentId", str, what)
    if named is not None and named != payment_id:
        raise NormalizationError(f"{what} {resource_id} belongs to {named}, not {payment_id}", reason="malformed_body")
    return payment_id


def _refund(refund: Mapping[str, Any], payment_id: str | None, stamp: Stamp) -> Observation:
    """One refund under its payment: no status word (a refund does not say the payment's status)."""
    what = "mollie refund"
    refund_id = field_of(refund, "id", str, what)
    payment_id = _owner(refund, refund_id, payment_id, what)
    word = field_of(refund, "status", str, what)
    amount = _money(refund, "amount", what)
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="payment", object_id=payment_id,
        kind=ObjectKind.PAYMENT, status=None, provider_status=f"refund:{word}", source=stamp.source,
        evidence_id=stamp.evidence_id, occurred_at=iso_time(refund.get("createdAt"), what),
        observed_at=stamp.observed_at, currency=amount[1] if amount else None,
        refunds={refund_id: Movement(amount[0] if amount else None, known(REFUND_STATES, word, "refund status"))},
    )


def _chargeback(chargeback: Mapping[str, Any], payment_id: str | None, stamp: Stamp) -> Observation:
    """One chargeback under its payment: money taken back (charged_back) until Mollie reverses it (won)."""
    what = "mollie chargeback"
    chargeback_id = field_of(chargeback, "id", str, what)
    payment_id = _owner(chargeback, chargeback_id, payment_id, what)
    amount = _money(chargeback, "amount", what)
    reason = chargeback.get("reason")
    code = _text(reason, "code") if isinstance(reason, dict) else None
    reversed_at = chargeback.get("reversedAt")
    state = DisputeState.LOST if reversed_at is None else DisputeState.WON
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="payment", object_id=payment_id,
        kind=ObjectKind.PAYMENT, status=P.CHARGED_BACK if reversed_at is None else P.CAPTURED,
        provider_status="chargeback" if reversed_at is None else "chargeback:reversed", source=stamp.source,
        evidence_id=stamp.evidence_id,
        occurred_at=iso_time(chargeback.get("createdAt") if reversed_at is None else reversed_at, what),
        observed_at=stamp.observed_at, reason_code=code, currency=amount[1] if amount else None,
        disputes={chargeback_id: Dispute(amount[0] if amount else None, state, code)},
    )


# --- orders, lists, subscriptions ---------------------------------------------------------------------------


def _order(order: Mapping[str, Any], stamp: Stamp) -> list[Observation]:
    """Each embedded payment under ``payment:{tr_…}``, with the order's refunds that name it."""
    what = "mollie order"
    field_of(order, "id", str, what)
    known(ORDER_STATUSES, field_of(order, "status", str, what), "order status")
    order_ref = _text(order, "orderNumber")
    embedded = _embedded(order, what)
    refunds = _items(embedded, "refunds", what)
    observations: list[Observation] = []
    for payment in _items(embedded, "payments", what) or ():
        payment_id = field_of(payment, "id", str, "mollie order payment")
        mine = None if refunds is None else [refund for refund in refunds if refund.get("paymentId") == payment_id]
        observations += _payment(payment, stamp, order_ref=order_ref, refunds=mine)
    return observations


def _listed(listing: Mapping[str, Any], stamp: Stamp) -> list[Observation]:
    """A page of the list of all refunds, chargebacks or subscriptions (the fetcher asks from one id on)."""
    what = "mollie list"
    embedded = _embedded(listing, what)
    observations: list[Observation] = []
    if (refunds := _items(embedded, "refunds", what)) is not None:
        for refund in refunds:
            payment = _embedded(refund, "mollie refund").get("payment")
            if isinstance(payment, dict):  # what this refund says of its payment, and nothing more
                observations += _payment(payment, stamp, refunds=[refund], chargebacks=[])
            else:
                observations.append(_refund(refund, None, stamp))
    elif (chargebacks := _items(embedded, "chargebacks", what)) is not None:
        for chargeback in chargebacks:
            payment = _embedded(chargeback, "mollie chargeback").get("payment")
            if isinstance(payment, dict):
                observations += _payment(payment, stamp, refunds=[], chargebacks=[chargeback])
            else:
                observations.append(_chargeback(chargeback, None, stamp))
    elif (subscriptions := _items(embedded, "subscriptions", what)) is not None:
        observations += [_subscription(subscription, stamp) for subscription in subscriptions]
    elif embedded:
        raise NormalizationError(f"mollie: cannot read a list of {sorted(embedded)}", reason="unexpected_record")
    return observations


def _subscription(subscription: Mapping[str, Any], stamp: Stamp) -> Observation:
    """An agreement under ``subscription:{sub_…}``, on its mandate.

    Only a cancellation has a time of its own; any other status is dated by when it was fetched (a
    subscription's ``createdAt`` would date ``pending`` and ``active`` alike)."""
    what = "mollie subscription"
    word = field_of(subscription, "status", str, what)
    canceled_at = subscription.get("canceledAt") if word == "canceled" else None
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="subscription",
        object_id=field_of(subscription, "id", str, what), kind=ObjectKind.AGREEMENT,
        status=known(SUBSCRIPTION_STATUSES, word, "subscription status"), provider_status=word,
        source=stamp.source, evidence_id=stamp.evidence_id,
        occurred_at=stamp.observed_at if canceled_at is None else iso_time(canceled_at, what),
        observed_at=stamp.observed_at, agreement_ref=_text(subscription, "mandateId"),
    )
