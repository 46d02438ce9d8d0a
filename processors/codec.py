"""The record on the internal observations topic (normalize → reconcile), keyed by payment key.

An observation travels with the fetch reason that produced it (for poll observations), so reconcile can tell
a status first seen by a stale poll or sweep ("missed webhook") from one a thin push asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from paystream.errors import NormalizationError
from schemas.envelopes import from_rfc3339
from schemas.observation import Observation
from schemas.status import ObjectKind, Source
from schemas.transitions import parse_status


@dataclass(frozen=True, slots=True)
class ObservationRecord:
    observation: Observation
    fetch_reason: str | None = None
    v: int = 1

    @property
    def key(self) -> bytes:
        return self.observation.payment_key.encode()

    def to_bytes(self) -> bytes:
        obs = self.observation
        return orjson.dumps({
            "v": self.v, "fetch_reason": self.fetch_reason,
            "provider": obs.provider, "account": obs.account, "object_type": obs.object_type,
            "object_id": obs.object_id, "kind": obs.kind.value,
            "status": None if obs.status is None else obs.status.value, "provider_status": obs.provider_status,
            "source": obs.source.value, "evidence_id": obs.evidence_id,
            # Microsecond precision: the join collapses observations by exact provider time.
            "occurred_at": obs.occurred_at.isoformat(), "observed_at": obs.observed_at.isoformat(),
            "reason_code": obs.reason_code, "amount": obs.amount, "currency": obs.currency,
            "captures": dict(obs.captures), "refunds": dict(obs.refunds), "order_ref": obs.order_ref,
        })

    @classmethod
    def from_bytes(cls, raw: bytes) -> ObservationRecord:
        try:
            record: dict[str, Any] = orjson.loads(raw)
            observation = Observation(
                provider=record["provider"], account=record["account"], object_type=record["object_type"],
                object_id=record["object_id"], kind=ObjectKind(record["kind"]),
                status=None if record["status"] is None else parse_status(record["status"]),
                provider_status=record["provider_status"], source=Source(record["source"]),
                evidence_id=record["evidence_id"], occurred_at=from_rfc3339(record["occurred_at"]),
                observed_at=from_rfc3339(record["observed_at"]), reason_code=record["reason_code"],
                amount=record["amount"], currency=record["currency"], captures=record["captures"],
                refunds=record["refunds"], order_ref=record["order_ref"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise NormalizationError(f"observation record: {exc}", reason="malformed_observation") from exc
        return cls(observation, record.get("fetch_reason"), record.get("v", 1))

