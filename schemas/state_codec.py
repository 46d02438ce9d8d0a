"""A payment's join state (:class:`schemas.join.PaymentState`) as compact JSON and back.

The processor writes this once per input (inside the per-payment record), so it is built for orjson: lists
instead of objects for the repeated parts (retained groups, ledger entries), datetimes and enums left to
orjson (RFC 3339 with microseconds; string values), and read back with the C parsers of ``datetime``.
Rebuild diffs and test fixtures use it too. ``to_json`` gives orjson-serializable values (datetimes and
enums included); ``plain`` gives plain JSON types only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from schemas.join import Decider, Emitted, PaymentState, Retained, Summary
from schemas.ledger import Ledgers
from schemas.status import DisputeState, MoneyState, ObjectKind, RiskState, Source
from schemas.transitions import Status, parse_status

_STATUSES: dict[str, Status] = {}
_SOURCES = {source.value: source for source in Source}
_MONEY = {state.value: state for state in MoneyState}
_DISPUTE = {state.value: state for state in DisputeState}
_RISK = {state.value: state for state in RiskState}


def _status(word: str | None) -> Status | None:
    if word is None:
        return None
    status = _STATUSES.get(word)
    if status is None:
        status = _STATUSES[word] = parse_status(word)
    return status


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# --- retained groups ------------------------------------------------------------------------------------
def _group_out(group: Retained) -> list[Any]:
    return [group.occurred_at, group.status, group.provider_status, group.source, group.reason_code, group.amount,
            group.currency, group.order_ref, group.agreement_ref, group.authorization_expires_at, group.captures,
            group.refunds, group.refunded_total, group.disputes, group.risk, group.observed_at,
            group.evidence_ids]


def _group_in(raw: list[Any]) -> Retained:
    (occurred, status, provider_status, source, reason, amount, currency, order_ref, agreement_ref, expires,
     captures, refunds, total, disputes, risk, observed, evidence) = raw
    return Retained(
        datetime.fromisoformat(occurred), _status(status), provider_status, _SOURCES[source], reason, amount,
        currency, order_ref, agreement_ref, _time(expires),
        tuple((key, value, _MONEY[state]) for key, value, state in captures),
        tuple((key, value, _MONEY[state]) for key, value, state in refunds),
        total, tuple((key, value, _DISPUTE[state], why) for key, value, state, why in disputes),
        tuple((key, kind, _RISK[state], why) for key, kind, state, why in risk),
        datetime.fromisoformat(observed), tuple(evidence),
    )


# --- the summary of compacted groups --------------------------------------------------------------------
def _decider_out(decider: Decider | None) -> list[Any] | None:
    if decider is None:
        return None
    return [decider.provider_status, decider.reason_code, decider.source, decider.occurred_at, decider.observed_at]


def _decider_in(raw: list[Any] | None) -> Decider | None:
    if raw is None:
        return None
    provider_status, reason, source, occurred, observed = raw
    return Decider(provider_status, reason, _SOURCES[source], datetime.fromisoformat(occurred),
                   datetime.fromisoformat(observed))


def _ledgers_out(ledgers: Ledgers) -> dict[str, Any]:
    return {
        "captures": {key: list(value) for key, value in ledgers.captures.items()},
        "refunds": {key: list(value) for key, value in ledgers.refunds.items()},
        "disputes": {key: list(value) for key, value in ledgers.disputes.items()},
        "risk": {key: list(value) for key, value in ledgers.risk.items()},
        "total": None if ledgers.total is None else list(ledgers.total),
        "in_total": ledgers.in_total, "after_total": sorted(ledgers.after_total),
    }


def _ledgers_in(raw: dict[str, Any]) -> Ledgers:
    total = raw["total"]
    return Ledgers(
        captures={key: (datetime.fromisoformat(at), _MONEY[state], amount)
                  for key, (at, state, amount) in raw["captures"].items()},
        refunds={key: (datetime.fromisoformat(at), _MONEY[state], amount)
                 for key, (at, state, amount) in raw["refunds"].items()},
        disputes={key: (datetime.fromisoformat(at), _DISPUTE[state], amount, why)
                  for key, (at, state, amount, why) in raw["disputes"].items()},
        risk={key: (datetime.fromisoformat(at), _RISK[state], kind, why)
              for key, (at, state, kind, why) in raw["risk"].items()},
        total=None if total is None else (datetime.fromisoformat(total[0]), total[1]),
        in_total=dict(raw["in_total"]), after_total=set(raw["after_total"]),
    )


def _summary_out(summary: Summary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {
        "position": summary.position, "reported": summary.reported, "run_start": summary.run_start,
        "run_decider": _decider_out(summary.run_decider), "run_evidence": summary.run_evidence,
        "change_at": summary.change_at, "change_decider": _decider_out(summary.change_decider),
        "change_evidence": summary.change_evidence,
        "facts": {name: list(held) for name, held in (summary.facts or {}).items()},
        "ledgers": _ledgers_out(summary.ledgers or Ledgers()), "stale": summary.stale,
    }


def _summary_in(raw: dict[str, Any] | None) -> Summary | None:
    if raw is None:
        return None
    facts: dict[str, tuple[datetime, Any]] = {}
    for name, (at, value) in raw["facts"].items():
        facts[name] = (datetime.fromisoformat(at), _time(value) if name == "authorization_expires_at" else value)
    return Summary(raw["position"], _status(raw["reported"]), raw["run_start"], _decider_in(raw["run_decider"]),
                   tuple(raw["run_evidence"]), raw["change_at"], _decider_in(raw["change_decider"]),
                   tuple(raw["change_evidence"]), facts, _ledgers_in(raw["ledgers"]), raw["stale"])


# --- the state ------------------------------------------------------------------------------------------
def to_json(state: PaymentState) -> dict[str, Any]:
    """The state as orjson-serializable values."""
    emitted = state.emitted
    return {
        "provider": state.provider, "account": state.account, "object_type": state.object_type,
        "object_id": state.object_id, "kind": state.kind, "status": state.status,
        "reported_status": state.reported_status, "provider_status": state.provider_status,
        "reason_code": state.reason_code, "amount": state.amount, "currency": state.currency,
        "captured_amount": state.captured_amount, "refunded_amount": state.refunded_amount,
        "disputed_amount": state.disputed_amount, "risk": state.risk, "order_ref": state.order_ref,
        "agreement_ref": state.agreement_ref, "authorization_expires_at": state.authorization_expires_at,
        "source": state.source, "occurred_at": state.occurred_at, "observed_at": state.observed_at,
        "evidence": state.evidence, "stale_count": state.stale_count, "sequence": state.sequence,
        "epoch": state.epoch, "previous_status": state.previous_status,
        "emitted": None if emitted is None else [emitted.status, emitted.amount, emitted.captured_amount,
                                                  emitted.refunded_amount, emitted.disputed_amount, emitted.risk],
        "absorbed_count": state.absorbed_count, "summary": _summary_out(state.summary),
        "retained": [_group_out(group) for group in state.retained],
    }


def from_json(raw: dict[str, Any]) -> PaymentState:
    """The inverse of :func:`to_json` after a JSON round trip."""
    emitted = raw["emitted"]
    source = raw["source"]
    return PaymentState(
        provider=raw["provider"], account=raw["account"], object_type=raw["object_type"],
        object_id=raw["object_id"], kind=ObjectKind(raw["kind"]), status=_status(raw["status"]),
        reported_status=_status(raw["reported_status"]), provider_status=raw["provider_status"],
        reason_code=raw["reason_code"], amount=raw["amount"], currency=raw["currency"],
        captured_amount=raw["captured_amount"], refunded_amount=raw["refunded_amount"],
        disputed_amount=raw["disputed_amount"],
        risk=tuple((key, kind, _RISK[state], why) for key, kind, state, why in raw["risk"]),
        order_ref=raw["order_ref"], agreement_ref=raw["agreement_ref"],
        authorization_expires_at=_time(raw["authorization_expires_at"]),
        source=None if source is None else _SOURCES[source], occurred_at=_time(raw["occurred_at"]),
        observed_at=_time(raw["observed_at"]), evidence=tuple(raw["evidence"]), stale_count=raw["stale_count"],
        sequence=raw["sequence"], epoch=raw["epoch"], previous_status=_status(raw["previous_status"]),
        emitted=None if emitted is None else Emitted(
            _status(emitted[0]), emitted[1], emitted[2], emitted[3], emitted[4],  # type: ignore[arg-type]
            tuple((key, state) for key, state in emitted[5])),
        absorbed_count=raw["absorbed_count"], summary=_summary_in(raw["summary"]),
        retained=tuple(_group_in(group) for group in raw["retained"]),
    )


def plain(state: PaymentState) -> dict[str, Any]:
    """The state in plain JSON types (fixtures, diffs)."""
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(to_json(state)))
    return loaded
