"""One observation of a payment's (or agreement's) state, from any source.

Provider parsers (``ingest/providers/*/parse.py``) produce these from verified pushes and from fetch
results alike; the pure join (:mod:`schemas.join`) folds a set of them into the payment state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source


def payment_key(provider: str, account: str, object_type: str, object_id: str) -> str:
    """``{provider}:{account}:{object_type}:{object_id}`` (DESIGN §4.2)."""
    return f"{provider}:{account}:{object_type}:{object_id}"


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
    # Distinct capture / refund ids → amount in minor units. Amounts accumulate over distinct ids, so a
    # capture reported by a push and again by a poll counts once.
    captures: Mapping[str, int] = field(default_factory=dict)
    refunds: Mapping[str, int] = field(default_factory=dict)
    order_ref: str | None = None

    @property
    def payment_key(self) -> str:
        return payment_key(self.provider, self.account, self.object_type, self.object_id)
