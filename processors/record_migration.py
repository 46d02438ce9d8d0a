"""Records written by the first processor (record v1: the unbounded join state) read into today's shape.

A v1 state kept every distinct observation as a retained group with captures and refunds as ``[id, amount]``
pairs (all succeeded). Its groups are folded again by today's join (:mod:`schemas.join`), and what its last
event said becomes the emitted view, so numbering continues and the next input emits only a real change.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from schemas.join import Emitted, PaymentState, Retained, fold_groups
from schemas.status import MoneyState, ObjectKind, Source
from schemas.transitions import parse_status


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _group(raw: dict[str, Any]) -> Retained:
    status = raw["status"]
    return Retained(
        occurred_at=datetime.fromisoformat(raw["occurred_at"]), status=None if status is None else parse_status(status),
        provider_status=raw["provider_status"], source=Source(raw["source"]), reason_code=raw["reason_code"],
        amount=raw["amount"], currency=raw["currency"], order_ref=raw["order_ref"], agreement_ref=None,
        authorization_expires_at=None,
        captures=tuple((key, value, MoneyState.SUCCEEDED) for key, value in raw["captures"]),
        refunds=tuple((key, value, MoneyState.SUCCEEDED) for key, value in raw["refunds"]),
        refunded_total=None, disputes=(), risk=(), observed_at=datetime.fromisoformat(raw["observed_at"]),
        evidence_ids=tuple(raw["evidence_ids"]),
    )


def migrate_v1_state(raw: dict[str, Any]) -> PaymentState:
    base = PaymentState(raw["provider"], raw["account"], raw["object_type"], raw["object_id"],
                        ObjectKind(raw["kind"]))
    groups = [_group(group) for group in raw["retained"]]
    state = fold_groups(base, groups)
    status = raw["status"]
    emitted = None
    if raw["sequence"] > 0 and status is not None:
        emitted = Emitted(parse_status(status), raw["amount"], raw["captured_amount"], raw["refunded_amount"], 0, ())
    previous = raw["previous_status"]
    return replace(state, sequence=raw["sequence"], emitted=emitted,
                   previous_status=None if previous is None else parse_status(previous))
