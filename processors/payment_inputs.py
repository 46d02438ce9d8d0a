"""The records on the processor's internal topic (``{app_id}-payment-inputs``), keyed by payment key.

The intake stage turns each inbox delivery and each fetch result into inputs about single payments; the
topic repartitions them so that everything about one payment reaches one reconcile task, in order. Three
kinds:

* :class:`ObservationInput` — one status observation (push, poll, sync or replay), with the dedupe id of the
  delivery it came from;
* :class:`FetchInput` — a fetch request the intake derived from a thin push, a hint or a registered poll;
  reconcile emits it unless its delivery is a duplicate;
* :class:`PolledInput` — a fetch result arrived, whatever its outcome: it moves the stale-poll chain on.

The shapes are a contract between two stages that may run different versions during a rolling upgrade:
change them only with a new ``v``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from paystream.errors import NormalizationError
from schemas.envelopes import FetchRequest
from schemas.observation import Dispute, Movement, Observation, RiskSignal, payment_key
from schemas.status import AgreementStatus, DisputeState, MoneyState, ObjectKind, PaymentStatus, RiskState, Source
from schemas.transitions import Status

VERSION = 2  # 2: captures/refunds as movements, disputes, risk, agreement and expiry


@dataclass(frozen=True, slots=True)
class ObservationInput:
    observation: Observation
    # None when the observation is not deduplicated by delivery: replays (they must re-apply after a state
    # wipe) and polls (every fetch has its own id).
    dedupe_id: str | None
    fetch_reason: str | None = None  # for polls: why the fetch was made ("stale", "sweep", "thin_push", ...)

    @property
    def payment_key(self) -> str:
        return self.observation.payment_key


@dataclass(frozen=True, slots=True)
class FetchInput:
    request: FetchRequest
    dedupe_id: str | None  # None for hints: the fetcher coalesces them per object instead

    @property
    def payment_key(self) -> str:
        return self.request.payment_key


@dataclass(frozen=True, slots=True)
class PolledInput:
    provider: str
    account: str
    object_type: str
    object_id: str
    request_id: str
    reason: str
    attempt: int
    outcome: str

    @property
    def payment_key(self) -> str:
        return payment_key(self.provider, self.account, self.object_type, self.object_id)


PaymentInput = ObservationInput | FetchInput | PolledInput


# Every input is written once and read once per delivery: words map back through tables (cheaper than the
# enum constructors).
_STATUSES: dict[str, Status] = {status.value: status for status in (*PaymentStatus, *AgreementStatus)}
_SOURCES = {source.value: source for source in Source}
_KINDS = {kind.value: kind for kind in ObjectKind}


def _observation_dict(obs: Observation) -> dict[str, Any]:
    return {
        "provider": obs.provider, "account": obs.account, "object_type": obs.object_type,
        "object_id": obs.object_id, "kind": obs.kind, "status": obs.status, "provider_status": obs.provider_status,
        "source": obs.source, "evidence_id": obs.evidence_id,
        # Microsecond precision: the join collapses observations by exact provider time.
        "occurred_at": obs.occurred_at, "observed_at": obs.observed_at,
        "reason_code": obs.reason_code, "amount": obs.amount, "currency": obs.currency,
        "captures": obs.captures, "refunds": obs.refunds, "refunded_total": obs.refunded_total,
        "disputes": obs.disputes, "risk": obs.risk, "order_ref": obs.order_ref, "agreement_ref": obs.agreement_ref,
        "authorization_expires_at": obs.authorization_expires_at,
    }


def _observation(raw: dict[str, Any]) -> Observation:
    status, expires = raw["status"], raw["authorization_expires_at"]
    return Observation(
        provider=raw["provider"], account=raw["account"], object_type=raw["object_type"],
        object_id=raw["object_id"], kind=_KINDS[raw["kind"]], status=None if status is None else _STATUSES[status],
        provider_status=raw["provider_status"], source=_SOURCES[raw["source"]], evidence_id=raw["evidence_id"],
        occurred_at=datetime.fromisoformat(raw["occurred_at"]), observed_at=datetime.fromisoformat(raw["observed_at"]),
        reason_code=raw["reason_code"], amount=raw["amount"], currency=raw["currency"],
        captures={key: Movement(value["amount"], MoneyState(value["state"])) for key, value in raw["captures"].items()},
        refunds={key: Movement(value["amount"], MoneyState(value["state"])) for key, value in raw["refunds"].items()},
        refunded_total=raw["refunded_total"],
        disputes={key: Dispute(value["amount"], DisputeState(value["state"]), value["reason"])
                  for key, value in raw["disputes"].items()},
        risk={key: RiskSignal(value["kind"], RiskState(value["state"]), value["reason"])
              for key, value in raw["risk"].items()},
        order_ref=raw["order_ref"], agreement_ref=raw["agreement_ref"],
        authorization_expires_at=None if expires is None else datetime.fromisoformat(expires),
    )


def encode(item: PaymentInput) -> bytes:
    if isinstance(item, ObservationInput):
        return orjson.dumps({"v": VERSION, "kind": "observation", "dedupe_id": item.dedupe_id,
                             "fetch_reason": item.fetch_reason, "observation": _observation_dict(item.observation)})
    if isinstance(item, FetchInput):
        return orjson.dumps({"v": VERSION, "kind": "fetch", "dedupe_id": item.dedupe_id, "request": item.request})
    return orjson.dumps({"v": VERSION, "kind": "polled", "polled": item})


def decode(raw: bytes) -> PaymentInput:
    """Raises :class:`NormalizationError` (the record goes to the DLQ) for anything unreadable."""
    try:
        record: dict[str, Any] = orjson.loads(raw)
        kind = record["kind"]
        if kind == "observation":
            return ObservationInput(_observation(record["observation"]), record["dedupe_id"], record["fetch_reason"])
        if kind == "fetch":
            return FetchInput(FetchRequest(**record["request"]), record["dedupe_id"])
        if kind == "polled":
            return PolledInput(**record["polled"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise NormalizationError(f"payment input: {exc}", reason="malformed_payment_input") from exc
    raise NormalizationError(f"payment input of unknown kind {kind!r}", reason="malformed_payment_input")
