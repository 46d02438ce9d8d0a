"""Builds observations for the join tests with short, readable defaults."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.observation import Movement, Observation
from schemas.status import AgreementStatus, ObjectKind, PaymentStatus, Source

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KEY_FIELDS = {"provider": "stripe", "account": "eu-main", "object_type": "payment_intent", "object_id": "pi_1"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def movements(entries: Mapping[str, int | Movement] | None) -> dict[str, Movement]:
    """``{id: amount}`` (succeeded) or ``{id: Movement}`` as movements."""
    return {key: value if isinstance(value, Movement) else Movement(value) for key, value in (entries or {}).items()}


def obs(
    status: PaymentStatus | AgreementStatus | None,
    evidence_id: str,
    *,
    occurred: float = 0,
    observed: float | None = None,
    source: Source = Source.PUSH,
    amount: int | None = 1000,
    captures: Mapping[str, int | Movement] | None = None,
    refunds: Mapping[str, int | Movement] | None = None,
    provider_status: str | None = None,
    kind: ObjectKind = ObjectKind.PAYMENT,
    reason_code: str | None = None,
    order_ref: str | None = "order-42",
    **extra: Any,
) -> Observation:
    return Observation(
        **KEY_FIELDS,
        kind=kind,
        status=status,
        provider_status=provider_status or (status.value if status is not None else "refund"),
        source=source,
        evidence_id=evidence_id,
        occurred_at=at(occurred),
        observed_at=at(occurred + 1 if observed is None else observed),
        reason_code=reason_code,
        amount=amount,
        currency="EUR",
        captures=movements(captures),
        refunds=movements(refunds),
        order_ref=order_ref,
        **extra,
    )
