"""The pure join (DESIGN §5): a payment's state as a function of the SET of observations seen so far.

How the set is folded:

* Observations with identical content (everything but ``evidence_id`` and ``observed_at``) collapse into
  one :class:`Retained` group: a webhook redelivery or a poll that sees nothing new adds an evidence id (the
  smallest ``MAX_GROUP_EVIDENCE`` are kept) and nothing else. Each group keeps the earliest receipt time.
  Collapsing is a semilattice join (set union, min, smallest-k), so the retained set does not depend on
  arrival order or duplication.
* Status-bearing groups are applied in canonical order — provider time, then progress rank, then smallest
  evidence id, then content — through the transition table (:mod:`schemas.transitions`). The first status
  may be anything; a move the table does not list is a stale regression: counted and ignored.
* Amounts accumulate over distinct capture / refund ids across ALL groups (a conflict for one id resolves
  to the larger amount). ``partially_captured`` / ``captured`` and ``partially_refunded`` / ``refunded``
  then follow from the amounts when they are known. Amount-only observations (``status is None``) are
  parked: no status exists until a status-bearing observation does, and then their amounts count.

:func:`apply` re-folds the retained groups plus the new observation, so incremental processing equals the
batch :func:`fold` by construction. Parsers should set ``occurred_at`` to the provider's time of the status
(not the fetch time) so that polls seeing the same object collapse instead of growing the retained set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from paystream.errors import NormalizationError
from schemas.event import build_event, format_time, parse_time
from schemas.observation import Observation, payment_key
from schemas.status import ObjectKind, PaymentStatus, Source
from schemas.transitions import TABLE, Status, kind_of, parse_status

MAX_GROUP_EVIDENCE = 16  # evidence ids kept per collapsed group (dedupe memory for retries)
MAX_STATE_EVIDENCE = 32  # evidence ids reported with the current status

P = PaymentStatus
CAPTURE_FAMILY = frozenset({P.AUTHORIZED, P.PARTIALLY_CAPTURED, P.CAPTURED, P.PARTIALLY_REFUNDED, P.REFUNDED})
REFUND_STATUSES = frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED})
CAPTURE_STATUSES = frozenset({P.PARTIALLY_CAPTURED, P.CAPTURED})


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise NormalizationError(f"{what} must be timezone-aware: {moment!r}", reason="naive_timestamp")
    return moment.astimezone(UTC)


def _amounts(entries: Mapping[str, int], what: str) -> tuple[tuple[str, int], ...]:
    if not entries:
        return ()
    if any(value < 0 for value in entries.values()):
        raise NormalizationError(f"negative {what} amount: {dict(entries)!r}", reason="negative_amount")
    return tuple(sorted(entries.items()))


@dataclass(frozen=True, slots=True)
class Retained:
    """One or more observations with identical content, collapsed."""

    occurred_at: datetime
    status: Status | None
    provider_status: str
    source: Source
    reason_code: str | None
    amount: int | None
    currency: str | None
    order_ref: str | None
    captures: tuple[tuple[str, int], ...]
    refunds: tuple[tuple[str, int], ...]
    observed_at: datetime  # earliest receipt among the collapsed observations
    evidence_ids: tuple[str, ...]  # sorted, the smallest MAX_GROUP_EVIDENCE

    @classmethod
    def of(cls, obs: Observation) -> Retained:
        if obs.amount is not None and obs.amount < 0:
            raise NormalizationError(f"negative amount {obs.amount}", reason="negative_amount")
        return cls(
            _utc(obs.occurred_at, "occurred_at"), obs.status, obs.provider_status, obs.source,
            obs.reason_code, obs.amount, obs.currency, obs.order_ref, _amounts(obs.captures, "capture"),
            _amounts(obs.refunds, "refund"), _utc(obs.observed_at, "observed_at"), (obs.evidence_id,),
        )

    def content(self) -> tuple[object, ...]:
        """The collapse key: everything but receipt time and evidence ids."""
        return (self.occurred_at, self.status, self.provider_status, self.source, self.reason_code,
                self.amount, self.currency, self.order_ref, self.captures, self.refunds)

    def facts(self) -> tuple[object, ...]:
        """:meth:`content` without the source: what was observed, whoever observed it."""
        return (self.occurred_at, self.status, self.provider_status, self.reason_code, self.amount, self.currency,
                self.order_ref, self.captures, self.refunds)

    def order_key(self) -> tuple[datetime, int, str, bytes]:
        return (*self.short_order_key(), self.content_bytes())

    def short_order_key(self) -> tuple[datetime, int, str]:
        """:meth:`order_key` without its last part, which only separates groups this one does not."""
        return (self.occurred_at, -1 if self.status is None else TABLE.rank(self.status), self.evidence_ids[0])

    def content_bytes(self) -> bytes:
        return orjson.dumps([self.status, self.provider_status, self.source, self.reason_code, self.amount,
                             self.currency, self.order_ref, self.captures, self.refunds])

    def merged(self, other: Retained) -> Retained:
        ids = tuple(sorted(set(self.evidence_ids) | set(other.evidence_ids))[:MAX_GROUP_EVIDENCE])
        return replace(self, observed_at=min(self.observed_at, other.observed_at), evidence_ids=ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "occurred_at": format_time(self.occurred_at), "status": self.status,
            "provider_status": self.provider_status, "source": self.source, "reason_code": self.reason_code,
            "amount": self.amount, "currency": self.currency, "order_ref": self.order_ref,
            "captures": dict(self.captures), "refunds": dict(self.refunds),
            "observed_at": format_time(self.observed_at), "evidence_ids": list(self.evidence_ids),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Retained:
        return cls(
            parse_time(raw["occurred_at"]), None if raw["status"] is None else parse_status(raw["status"]),
            raw["provider_status"], Source(raw["source"]), raw["reason_code"], raw["amount"], raw["currency"],
            raw["order_ref"], tuple(sorted(raw["captures"].items())), tuple(sorted(raw["refunds"].items())),
            parse_time(raw["observed_at"]), tuple(raw["evidence_ids"]),
        )


@dataclass(frozen=True, slots=True)
class PaymentState:
    provider: str
    account: str
    object_type: str
    object_id: str
    kind: ObjectKind
    status: Status | None = None  # None while only amount-only observations are known (parked)
    previous_status: Status | None = None  # the status before the last emitted event
    reported_status: Status | None = None  # the provider's status before amounts refined it
    provider_status: str | None = None
    reason_code: str | None = None
    amount: int | None = None
    currency: str | None = None
    captured_amount: int = 0
    refunded_amount: int = 0
    order_ref: str | None = None
    # The deciding observation: the one that moved the payment into its current status.
    source: Source | None = None
    occurred_at: datetime | None = None
    observed_at: datetime | None = None
    evidence: tuple[str, ...] = ()
    sequence: int = 0  # events emitted so far for this payment
    stale_count: int = 0  # distinct observations ignored as stale regressions
    retained: tuple[Retained, ...] = ()

    @property
    def payment_key(self) -> str:
        return payment_key(self.provider, self.account, self.object_type, self.object_id)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (rebuild diffs and test fixtures; the processor stores the state with orjson)."""
        out: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, datetime):
                value = format_time(value)
            elif spec.name == "retained":
                value = [group.to_dict() for group in value]
            elif spec.name == "evidence":
                value = list(value)
            out[spec.name] = value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PaymentState:
        values: dict[str, Any] = dict(raw)
        for name in ("status", "previous_status", "reported_status"):
            values[name] = None if raw[name] is None else parse_status(raw[name])
        for name in ("occurred_at", "observed_at"):
            values[name] = None if raw[name] is None else parse_time(raw[name])
        values["kind"] = ObjectKind(raw["kind"])
        values["source"] = None if raw["source"] is None else Source(raw["source"])
        values["evidence"] = tuple(raw["evidence"])
        values["retained"] = tuple(Retained.from_dict(group) for group in raw["retained"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: PaymentState
    duplicate: bool  # this exact observation (evidence id and content) was already retained
    stale: bool  # the observation is a stale regression: recorded, ignored
    changed: bool  # status or an amount differs from the previous state


@dataclass(frozen=True, slots=True)
class Step:
    """:func:`apply` followed by :func:`next_event`."""

    state: PaymentState
    event: dict[str, Any] | None
    duplicate: bool
    stale: bool


def _derive(reported: Status, amount: int | None, captured: int, refunded: int) -> Status:
    """Refine the provider's status with the amounts, when they say more than the word."""
    if reported not in CAPTURE_FAMILY or (captured == 0 and refunded == 0):
        return reported
    if refunded > 0:
        base = captured if captured > 0 else amount
        if base is None:
            return reported if reported in REFUND_STATUSES else P.PARTIALLY_REFUNDED
        return P.REFUNDED if refunded >= base else P.PARTIALLY_REFUNDED
    if reported in REFUND_STATUSES:  # the provider says refunded but we know no refund id: trust it
        return reported
    if amount is None:
        return reported if reported in CAPTURE_STATUSES else P.CAPTURED
    return P.CAPTURED if captured >= amount else P.PARTIALLY_CAPTURED


def _canonical_order(groups: Iterable[Retained]) -> tuple[Retained, ...]:
    """``groups`` sorted by :meth:`Retained.order_key`. The full key serializes the content, so groups are
    sorted by its cheap prefix first and only a run of groups that tie on the prefix (rare: same provider time,
    rank and smallest evidence id) is sorted again by the full key; the result is the same order."""
    ordered = sorted(groups, key=Retained.short_order_key)
    keys = [group.short_order_key() for group in ordered]
    if len(set(keys)) != len(keys):
        ordered.sort(key=Retained.order_key)
    return tuple(ordered)


def _join(base: PaymentState, groups: Iterable[Retained]) -> tuple[PaymentState, frozenset[Retained]]:
    """Fold collapsed groups into a state; also returns the groups ignored as stale."""
    fields_, ignored = _joined_fields(groups)
    return replace(base, **fields_), ignored


def _joined_fields(groups: Iterable[Retained], *, in_order: bool = False) -> tuple[dict[str, Any],
                                                                                   frozenset[Retained]]:
    """The state fields the fold of ``groups`` decides, and the groups ignored as stale. ``in_order``: the
    caller knows ``groups`` are already in canonical order (skips the sort)."""
    ordered = tuple(groups) if in_order else _canonical_order(groups)
    captures: dict[str, int] = {}
    refunds: dict[str, int] = {}
    facts: dict[str, Any] = {"amount": None, "currency": None, "order_ref": None}
    reported: Status | None = None
    run_start = 0
    stale: set[int] = set()  # indexes into `ordered`
    for index, group in enumerate(ordered):
        for entry_id, value in group.captures:
            captures[entry_id] = max(value, captures.get(entry_id, value))
        for entry_id, value in group.refunds:
            refunds[entry_id] = max(value, refunds.get(entry_id, value))
        if group.status is not None:
            if reported is not None and not TABLE.allows(reported, group.status, group.source):
                stale.add(index)
                continue
            if group.status != reported:
                reported, run_start = group.status, index
        # The latest accepted observation that knows a fact wins. The payment's amount is only taken from
        # status-bearing observations: on a capture/refund-only observation it may be the entry's amount.
        if group.amount is not None and group.status is not None:
            facts["amount"] = group.amount
        if group.currency is not None:
            facts["currency"] = group.currency
        if group.order_ref is not None:
            facts["order_ref"] = group.order_ref
    captured, refunded = sum(captures.values()), sum(refunds.values())
    fields_: dict[str, Any] = dict(facts, captured_amount=captured, refunded_amount=refunded,
                                   stale_count=len(stale), retained=ordered)
    ignored = frozenset(ordered[index] for index in stale) if stale else frozenset()
    if reported is None:
        return fields_, ignored
    status = _derive(reported, facts["amount"], captured, refunded)
    run = [g for i, g in enumerate(ordered[run_start:], run_start) if g.status == reported and i not in stale]
    deciding, support = run[0], run
    if status != reported:  # amounts refined the status: the newest of the supporting observations decided
        wants_refunds = status in REFUND_STATUSES
        carriers = [i for i, g in enumerate(ordered) if (g.refunds if wants_refunds else g.captures)
                    and i not in stale]
        if carriers:
            deciding = ordered[max(carriers[-1], run_start)]
            support = run + [ordered[i] for i in carriers]
    evidence = tuple(dict.fromkeys(eid for g in support for eid in g.evidence_ids))[:MAX_STATE_EVIDENCE]
    fields_.update(status=status, reported_status=reported, provider_status=deciding.provider_status,
                   reason_code=deciding.reason_code, source=deciding.source,
                   occurred_at=deciding.occurred_at, observed_at=deciding.observed_at, evidence=evidence)
    return fields_, ignored


def _check(base: PaymentState, obs: Observation) -> None:
    if (obs.object_id, obs.object_type, obs.account, obs.provider) != (
            base.object_id, base.object_type, base.account, base.provider):
        raise ValueError(f"observation for {obs.payment_key} folded into {base.payment_key}")
    if obs.kind != base.kind or (obs.status is not None and kind_of(obs.status) != obs.kind):
        raise NormalizationError(
            f"{obs.payment_key}: {obs.kind} observation with status {obs.status!r} (state kind {base.kind})",
            reason="kind_mismatch",
        )


def _collapse(groups: Iterable[Retained], new: Retained) -> tuple[list[Retained], bool]:
    """``groups`` (already collapsed) with ``new`` merged into the group of equal content, or appended."""
    collapsed = list(groups)
    content = new.content()
    for index, group in enumerate(collapsed):
        # Provider time first: a cheap filter before the full content comparison.
        if group.occurred_at == new.occurred_at and group.content() == content:
            collapsed[index] = group.merged(new)
            return collapsed, new.evidence_ids[0] in group.evidence_ids
    collapsed.append(new)
    return collapsed, False


def _base_for(obs: Observation) -> PaymentState:
    return PaymentState(obs.provider, obs.account, obs.object_type, obs.object_id, obs.kind)


def fold(observations: Iterable[Observation]) -> PaymentState:
    """The state of one payment from a set of its observations (order and duplication do not matter)."""
    base: PaymentState | None = None
    groups: list[Retained] = []
    for obs in observations:
        base = base or _base_for(obs)
        _check(base, obs)
        groups, _ = _collapse(groups, Retained.of(obs))
    if base is None:
        raise ValueError("fold needs at least one observation")
    return _join(base, groups)[0]


def _signature(state: PaymentState | None) -> tuple[object, ...]:
    if state is None:
        return (None, None, 0, 0)
    return (state.status, state.amount, state.captured_amount, state.refunded_amount)


def _applied(state: PaymentState | None, obs: Observation) -> tuple[PaymentState, dict[str, Any], bool, bool]:
    """(base state, the fields the join decides, duplicate, stale) for one more observation."""
    base = state or _base_for(obs)
    _check(base, obs)
    new_group = Retained.of(obs)
    retained = base.retained
    groups, duplicate = _collapse(retained, new_group)
    # The retained groups are in canonical order (the previous fold's output): a new group that sorts after
    # the last one (the usual case: newer provider time) keeps them in order.
    appended = len(groups) > len(retained)
    in_order = appended and (not retained or new_group.short_order_key() > retained[-1].short_order_key())
    fields_, stale = _joined_fields(groups, in_order=in_order)
    is_stale = any(group.content() == new_group.content() for group in stale)
    return base, fields_, duplicate, is_stale


def apply(state: PaymentState | None, obs: Observation) -> Outcome:
    """Add one observation: equals :func:`fold` of the union, keeping ``sequence`` and ``previous_status``."""
    base, fields_, duplicate, is_stale = _applied(state, obs)
    new_state = replace(base, **fields_)
    return Outcome(new_state, duplicate, is_stale, _signature(new_state) != _signature(state))


def next_event(
    prev: PaymentState | None, new: PaymentState, emitted_at: datetime
) -> tuple[PaymentState, dict[str, Any] | None]:
    """When status or amounts changed (and a status exists), number the next event and build it."""
    if new.status is None or _signature(new) == _signature(prev):
        return new, None
    sequence = (prev.sequence if prev is not None else 0) + 1
    last = prev.status if prev is not None and prev.sequence > 0 else None
    emitted = replace(new, sequence=sequence, previous_status=last)
    return emitted, build_event(emitted, emitted_at)


def advance(state: PaymentState | None, obs: Observation, emitted_at: datetime) -> Step:
    """What the reconcile stage does per observation: join it, and build the event if one is due.
    The same as :func:`apply` then :func:`next_event`, with the new state built once (the per-record path)."""
    base, fields_, duplicate, is_stale = _applied(state, obs)
    status = fields_.get("status", base.status)
    signature = (status, fields_["amount"], fields_["captured_amount"], fields_["refunded_amount"])
    if status is None or signature == _signature(state):
        return Step(replace(base, **fields_), None, duplicate, is_stale)
    fields_["sequence"] = (state.sequence if state is not None else 0) + 1
    fields_["previous_status"] = state.status if state is not None and state.sequence > 0 else None
    emitted = replace(base, **fields_)
    return Step(emitted, build_event(emitted, emitted_at), duplicate, is_stale)
