"""One observation of a payment's (or agreement's) state, from any source.

Provider parsers (``ingest/providers/*/parse.py``) produce these from verified pushes and from fetch
results alike; the pure join (:mod:`schemas.join`) folds a set of them into the payment state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from schemas.status import AgreementStatus, DisputeState, MoneyState, ObjectKind, PaymentStatus, RiskState, Source


def payment_key(provider: str, account: str, object_type: str, object_id: str) -> str:
    """``{provider}:{account}:{object_type}:{object_id}`` (DESIGN §4.2)."""
    return f"{provider}:{account}:{object_type}:{object_id}"


@dataclass(frozen=True, slots=True)
class Movement:
    """One capture or refund, by its own id (the provider's capture / refund id)."""

    amount: int | None  # minor units; None when this report of it does not say (a failure notice)
    state: MoneyState = MoneyState.SUCCEEDED


@dataclass(frozen=True, slots=True)
class Dispute:
    """One dispute of the payment, by its own id (Stripe ``dp_…``, an Adyen dispute's payment, ...)."""

    amount: int | None  # minor units at stake; None when this report does not say
    state: DisputeState
    reason: str | None = None  # the provider's dispute reason (``fraudulent``, ``4837``, ...)


@dataclass(frozen=True, slots=True)
class RiskSignal:
    """One risk signal by its own id (an early fraud warning, a review, an issuer's fraud report)."""

    kind: str  # "early_fraud_warning", "review", "fraud_report", "manual_review"
    state: RiskState
    reason: str | None = None  # the provider's word (``fraudulent``, ``rule``, ``approved``, ...)


@dataclass(frozen=True, slots=True)
class Observation:
    provider: str
    account: str
    object_type: str  # e.g. "charge", "payment_intent", "payment", "charge_permission"
    object_id: str
    kind: ObjectKind
    # None for an amount-only observation (a capture or refund that does not say the overall status,
    # e.g. an Adyen REFUND item): it contributes amounts, and needs a status-bearing observation of the
    # same payment before anything is emitted (it is "parked" until then).
    status: PaymentStatus | AgreementStatus | None
    provider_status: str  # the provider's own word, e.g. "Completed", "succeeded", "AUTHORISATION:true"
    source: Source
    evidence_id: str  # delivery id, provider event id or fetch id: the dedupe key of this observation
    occurred_at: datetime  # provider time (timezone-aware, UTC)
    observed_at: datetime  # our receipt time (timezone-aware, UTC)
    reason_code: str | None = None
    amount: int | None = None  # authorized/requested amount in minor units
    currency: str | None = None  # ISO 4217, upper case
    # Captures, refunds and disputes by their own ids: each counts by its latest state (DESIGN §4.3), so a
    # capture reported by a push and again by a poll counts once, and a refund that fails stops counting.
    captures: Mapping[str, Movement] = field(default_factory=dict)
    refunds: Mapping[str, Movement] = field(default_factory=dict)
    # A running total of succeeded refunds the provider reported without naming each refund (a Stripe
    # ``charge.refunded`` from API 2022-11-15 on, a Standard Webhooks ``refunded_amount``): it sets
    # ``refunded_amount`` as of ``occurred_at``; refunds by id reported later adjust it.
    refunded_total: int | None = None
    disputes: Mapping[str, Dispute] = field(default_factory=dict)
    risk: Mapping[str, RiskSignal] = field(default_factory=dict)
    order_ref: str | None = None
    # The agreement the payment ran on: an Amazon Pay Charge Permission, a Stripe payment method or mandate, an
    # Adyen recurring detail reference, a Mollie mandate ("which payments ran on this agreement").
    agreement_ref: str | None = None
    # When the authorisation lapses if nobody captures: said by the provider, or its documented validity.
    authorization_expires_at: datetime | None = None

    @property
    def payment_key(self) -> str:
        return payment_key(self.provider, self.account, self.object_type, self.object_id)
