"""Adyen standard notifications: NotificationRequestItems → observations (push only; no pull).

The body is one item as ingest published it: the item itself, ``{"NotificationRequestItem": {...}}``, or a
whole ``{"notificationItems": [...]}`` batch (each item then gets ``{evidence_id}#{index}``). A Tokenization
webhook (``{"type": "recurring.token.…", "data": {...}}``, no items) goes to :mod:`ingest.providers.adyen.tokens`.

What each ``eventCode`` is (mapped or ignored on purpose, and why) is the catalog,
``ingest/providers/adyen/catalog.json``; what each ``(eventCode, success)`` pair does is :data:`RULES` here.
An eventCode the catalog does not know is a new Adyen word: :class:`UnknownProviderStatus` (the DLQ, with an
alert that names it). A pair that says nothing (most ``success=false`` items: the request did not happen)
gives no observation and is counted in ``paystream_events_ignored_total`` as ``{eventCode}:false``.

Payment key: ``payment:{pspReference of the payment}``. A modification (capture, refund, cancellation,
dispute stage) names its payment in ``originalReference``; Adyen sends some dispute stages without it unless
the merchant enables it, and then ``pspReference`` is the payment's. Captures and refunds are movements by
their own pspReference with their own state; they carry no status word (the join derives the money status
from the amounts). A dispute stage carries its status word and the payment's one dispute (Adyen's dispute
lifecycle is per payment), keyed by the payment's pspReference. Risk signals carry no status.

``authorization_expires_at`` stays None: Adyen's webhooks carry no authorisation expiry, and Adyen documents
no single validity (28 days for the major card networks, 12 for Cartes Bancaires, 3 for PayPal, others by
method and scheme).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.providers.adyen import tokens
from ingest.providers.catalog import count_ignored, load_catalog
from ingest.providers.parse_support import Stamp, field_of, iso_time, load_object, lookup, optional_field
from paystream.errors import ConfigurationError, NormalizationError, UnknownProviderStatus
from schemas.observation import Dispute, Movement, Observation, RiskSignal
from schemas.status import (
    AgreementStatus,
    DisputeState,
    MoneyState,
    ObjectKind,
    PaymentStatus,
    RiskState,
    Source,
)

PROVIDER = "adyen"
CATALOG = load_catalog(PROVIDER)
P, M, D = PaymentStatus, MoneyState, DisputeState


@dataclass(frozen=True, slots=True)
class Rule:
    """What one ``(eventCode, success)`` pair reports."""

    status: PaymentStatus | None = None
    capture: MoneyState | None = None  # a capture movement by the item's own pspReference
    refund: MoneyState | None = None  # a refund movement by the item's own pspReference
    dispute: DisputeState | None = None  # the payment's dispute
    risk: tuple[str, RiskState] | None = None  # (kind, state)
    agreement: AgreementStatus | None = None  # the stored payment method (recurring contract)
    states_amount: bool = False  # amount.value is the payment's (authorised) amount
    reason: str | None = None  # a fixed reason code instead of the item's
    # On success, `reason` is the item's reason only where it is one: an AUTHORISATION's is
    # authCode:cardSummary:expiry.
    keeps_reason: bool = True
    # Only with an originalReference: an unreferenced refund has no payment to move.
    needs_payment: bool = False
    # disputeStatus values that close an otherwise open dispute against the merchant.
    lost_when: frozenset[str] = frozenset()


# By additionalData["modification.action"] (CANCEL_OR_REFUND): cancelled before capture, refunded after.
Actions = Mapping[str, Rule | None]
Decision = Rule | Actions | None

OPEN = Rule(status=P.DISPUTED, dispute=D.OPEN)
# Won: the word is the money status the payment had (captured); the join refines it from the amounts.
WON = Rule(status=P.CAPTURED, dispute=D.WON)
LOST = Rule(status=P.CHARGED_BACK, dispute=D.LOST)

# eventCode -> (success "true", success "false"). None: the item reports nothing (the request did not happen,
# or Adyen documents no false for it), on purpose. The catalog says why per eventCode.
RULES: Mapping[str, tuple[Decision, Decision]] = {
    "AUTHORISATION": (Rule(status=P.AUTHORIZED, states_amount=True, keeps_reason=False), Rule(status=P.FAILED)),
    "AUTHORISATION_ADJUSTMENT": (Rule(status=P.AUTHORIZED, states_amount=True, keeps_reason=False), None),
    "CANCELLATION": (Rule(status=P.CANCELED), None),
    "TECHNICAL_CANCEL": (Rule(status=P.CANCELED), None),
    "EXPIRE": (Rule(status=P.CANCELED, reason="expired"), None),
    "OFFER_CLOSED": (Rule(status=P.FAILED), None),
    "CAPTURE": (Rule(capture=M.SUCCEEDED), Rule(capture=M.FAILED)),
    "CAPTURE_FAILED": (Rule(capture=M.FAILED), None),
    "REFUND": (Rule(refund=M.SUCCEEDED), Rule(refund=M.FAILED)),
    "REFUND_FAILED": (Rule(refund=M.FAILED), None),
    "REFUNDED_REVERSED": (Rule(refund=M.REVERSED), None),
    "REFUND_WITH_DATA": (Rule(refund=M.SUCCEEDED, needs_payment=True),
                         Rule(refund=M.FAILED, needs_payment=True)),
    "CANCEL_OR_REFUND": ({"cancel": Rule(status=P.CANCELED), "refund": Rule(refund=M.SUCCEEDED)},
                         {"cancel": None, "refund": Rule(refund=M.FAILED)}),
    "VOID_PENDING_REFUND": (Rule(refund=M.CANCELED, needs_payment=True), None),
    "POSTPONED_REFUND": (Rule(refund=M.PENDING), None),
    "REQUEST_FOR_INFORMATION": (OPEN, None),
    "NOTIFICATION_OF_CHARGEBACK": (OPEN, None),
    "CHARGEBACK": (Rule(status=P.CHARGED_BACK, dispute=D.OPEN, lost_when=frozenset({"Accepted", "Lost"})), None),
    "CHARGEBACK_REVERSED": (WON, None),
    "SECOND_CHARGEBACK": (LOST, None),
    "DISPUTE_DEFENSE_PERIOD_ENDED": (LOST, None),
    "ISSUER_RESPONSE_TIMEFRAME_EXPIRED": (WON, None),
    "PREARBITRATION_OPEN": (OPEN, None),
    "PREARBITRATION_DECLINED": (OPEN, None),
    "PREARBITRATION_ACCEPTED": (LOST, None),
    "PREARBITRATION_ISSUER_WITHDRAWN": (WON, None),
    "PREARBITRATION_WON": (WON, None),
    "PREARBITRATION_LOST": (LOST, None),
    "SCHEME_ARBITRATION": (OPEN, None),
    "SCHEME_ARBITRATION_WON": (WON, None),
    "SCHEME_ARBITRATION_LOST": (LOST, None),
    "NOTIFICATION_OF_FRAUD": (Rule(risk=("fraud_report", RiskState.CONFIRMED)), None),
    "MANUAL_REVIEW_ACCEPT": (Rule(risk=("manual_review", RiskState.CLEARED)), None),
    "MANUAL_REVIEW_REJECT": (Rule(risk=("manual_review", RiskState.CONFIRMED)), None),
    "RECURRING_CONTRACT": (Rule(agreement=AgreementStatus.ACTIVE), None),
}

# additionalData.disputeStatus as Adyen documents it (Webhooks-v1 DisputesNotificationAdditionalData).
DISPUTE_STATUSES = frozenset({"Unresponded", "Responded", "Expired", "Undefended", "Accepted", "Pending", "Lost",
                              "Won"})
# Where a dispute or fraud item names its reason code; else the item's `reason` text.
REASON_CODE_FIELDS = ("chargebackReasonCode", "nofReasonCode")
# The stored payment method a payment ran on: the current field first, then the one it replaces.
AGREEMENT_FIELDS = ("tokenization.storedPaymentMethodId", "recurring.recurringDetailReference")

# The recurring.token.* entries are webhook types, decided in tokens.STATUSES, not eventCodes.
_mapped = set(CATALOG.names()) - set(CATALOG.names("ignore")) - tokens.TYPES
if _mapped != set(RULES):
    raise ConfigurationError(f"adyen: catalog and RULES disagree on {sorted(_mapped ^ set(RULES))}")

# Checkout API resultCode words, for synchronous observations (POST /v1/observations).
RESULT_CODES: Mapping[str, PaymentStatus] = {
    "Authorised": P.AUTHORIZED,
    "Refused": P.FAILED,
    "Error": P.FAILED,
    "Cancelled": P.CANCELED,
    "Pending": P.PENDING,
    "Received": P.PENDING,
    "RedirectShopper": P.REQUIRES_ACTION,
    "IdentifyShopper": P.REQUIRES_ACTION,
    "ChallengeShopper": P.REQUIRES_ACTION,
    "PresentToShopper": P.REQUIRES_ACTION,
}


def sync_status(object_type: str, provider_status: str) -> PaymentStatus | AgreementStatus:
    if object_type != "payment":
        raise NormalizationError(f"adyen: sync observations are for object_type 'payment', not {object_type!r}",
                                 reason="unexpected_record")
    return lookup(RESULT_CODES, provider_status, PROVIDER, "resultCode")


def parse(
    body: bytes,
    *,
    account: str,
    source: Source,
    evidence_id: str,
    observed_at: datetime,
    object_kind: str,
) -> list[Observation]:
    if object_kind != "event":
        raise NormalizationError("adyen: only pushed notification items can be read", reason="unexpected_record")
    document = load_object(body, "adyen item")
    if tokens.is_type_webhook(document):
        return tokens.parse(document, Stamp(account, source, evidence_id, observed_at))
    if "notificationItems" in document:
        entries = document["notificationItems"]
        if not isinstance(entries, list):
            raise NormalizationError("adyen: notificationItems is not a list", reason="malformed_body")
        items = [_unwrap(entry) for entry in entries]
        ids = [f"{evidence_id}#{index}" for index in range(len(items))]
    else:
        items, ids = [_unwrap(document)], [evidence_id]
    observations = []
    for item, item_evidence in zip(items, ids, strict=True):
        observation = _item(item, Stamp(account, source, item_evidence, observed_at))
        if observation is not None:
            observations.append(observation)
    return observations


def _unwrap(entry: Any) -> dict[str, Any]:
    item = entry.get("NotificationRequestItem", entry) if isinstance(entry, dict) else None
    if not isinstance(item, dict):
        raise NormalizationError("adyen: notification item is not an object", reason="malformed_body")
    return item


def _success(value: Any) -> bool:
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise NormalizationError(f"adyen: success is {value!r}, not 'true'/'false'", reason="malformed_body")


def _ignored(label: str) -> None:
    count_ignored(PROVIDER, label)


def _rule(decision: Decision, code: str, success: bool, additional: Mapping[str, Any]) -> Rule | None:
    if decision is None or isinstance(decision, Rule):
        return decision
    action = additional.get("modification.action")
    if action is None and not success:
        return None  # refused, whichever it was: nothing moved
    if not isinstance(action, str) or action not in decision:
        raise UnknownProviderStatus(f"adyen: {code} with modification.action {action!r}", provider=PROVIDER,
                                    word=f"{code}:{action}")
    return decision[action]


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _item(item: Mapping[str, Any], stamp: Stamp) -> Observation | None:
    what = "adyen item"
    code = field_of(item, "eventCode", str, what)
    if code in tokens.TYPES:  # a webhook type where an eventCode belongs: no rule reads it
        raise UnknownProviderStatus(f"adyen: eventCode {code!r} is a webhook type", provider=PROVIDER, word=code,
                                    reason="unknown_event_type")
    if CATALOG.ignored(code):
        return None
    success = _success(item.get("success"))
    word = f"{code}:{'true' if success else 'false'}"
    raw_additional = item.get("additionalData")
    additional: Mapping[str, Any] = raw_additional if isinstance(raw_additional, dict) else {}
    rule = _rule(RULES[code][0 if success else 1], code, success, additional)
    if rule is None:
        _ignored(word)
        return None
    psp = field_of(item, "pspReference", str, what)
    original = optional_field(item, "originalReference", str, what) or None
    if rule.needs_payment and original is None:
        _ignored(f"{code}:unreferenced")
        return None
    payment_id = original or psp
    money = item.get("amount")
    value = currency = None
    if isinstance(money, dict):
        value = optional_field(money, "value", int, what)
        currency = optional_field(money, "currency", str, what)
    reason = rule.reason or _reason(item, additional, rule.keeps_reason or not success)
    occurred_at = iso_time(item.get("eventDate"), what)
    if rule.agreement is not None:
        # A RECURRING_CONTRACT's pspReference is the recurring detail reference itself (Adyen's schema).
        token = _text(additional.get("recurring.recurringDetailReference")) or psp
        return Observation(
            provider=PROVIDER, account=stamp.account, object_type="recurring_contract", object_id=token,
            kind=ObjectKind.AGREEMENT, status=rule.agreement, provider_status=word, source=stamp.source,
            evidence_id=stamp.evidence_id, occurred_at=occurred_at, observed_at=stamp.observed_at,
            reason_code=reason,
        )
    return Observation(
        provider=PROVIDER, account=stamp.account, object_type="payment", object_id=payment_id,
        kind=ObjectKind.PAYMENT, status=rule.status, provider_status=word, source=stamp.source,
        evidence_id=stamp.evidence_id, occurred_at=occurred_at, observed_at=stamp.observed_at, reason_code=reason,
        # Only the authorisation (or its adjustment) states the payment's amount; modifications have their own.
        amount=value if rule.states_amount else None, currency=currency.upper() if currency else None,
        captures=_movement(rule.capture, psp, value, word), refunds=_movement(rule.refund, psp, value, word),
        disputes=_dispute(rule, payment_id, value, additional, reason),
        risk=_risk(rule, payment_id, psp, reason),
        # A modification's merchantReference may be the modification's own reference, not the order's.
        order_ref=optional_field(item, "merchantReference", str, what) if original is None else None,
        agreement_ref=_agreement_ref(additional),
    )


def _reason(item: Mapping[str, Any], additional: Mapping[str, Any], keeps: bool) -> str | None:
    for name in REASON_CODE_FIELDS:
        code = _text(additional.get(name))  # Adyen pads some (" 4853")
        if code:
            return code
    return _text(item.get("reason")) if keeps else None


def _agreement_ref(additional: Mapping[str, Any]) -> str | None:
    for name in AGREEMENT_FIELDS:
        ref = _text(additional.get(name))
        if ref:
            return ref
    return None


def _movement(state: MoneyState | None, psp: str, value: int | None, word: str) -> dict[str, Movement]:
    if state is None:
        return {}
    if state is M.SUCCEEDED and value is None:
        raise NormalizationError(f"adyen: {word} without amount.value", reason="malformed_body")
    return {psp: Movement(value, state)}


def _dispute(rule: Rule, payment_id: str, value: int | None, additional: Mapping[str, Any],
             reason: str | None) -> dict[str, Dispute]:
    if rule.dispute is None:
        return {}
    status = additional.get("disputeStatus")
    if status is not None and status not in DISPUTE_STATUSES:
        raise UnknownProviderStatus(f"adyen: disputeStatus {status!r} is not one Adyen documents",
                                    provider=PROVIDER, word=f"disputeStatus:{status}")
    state = D.LOST if status in rule.lost_when else rule.dispute
    return {payment_id: Dispute(value, state, reason)}


def _risk(rule: Rule, payment_id: str, psp: str, reason: str | None) -> dict[str, RiskSignal]:
    if rule.risk is None:
        return {}
    kind, state = rule.risk
    # A review is the payment's (accept and reject close the same one); a fraud report is its own item.
    ref = payment_id if kind == "manual_review" else psp
    return {f"{kind}:{ref}": RiskSignal(kind, state, reason)}
