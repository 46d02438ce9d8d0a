"""The pure join (DESIGN §5, JOIN_V2): a payment's state as a function of the SET of observations seen so far,
and the stream of events it emits as a legal path of the transition table.

How the set is folded:

* Observations with identical content (everything but ``evidence_id`` and ``observed_at``) collapse into
  one :class:`Retained` group: a webhook redelivery or a poll that sees nothing new adds an evidence id (the
  smallest ``MAX_GROUP_EVIDENCE`` are kept) and nothing else. Each group keeps the earliest receipt time.
  Collapsing is a semilattice join (set union, min, smallest-k), so the retained set does not depend on
  arrival order or duplication.
* Groups are folded left to right in canonical order — provider time, then progress rank, then smallest
  evidence id, then content. Status words go through the transition table (:mod:`schemas.transitions`): the
  first may be anything; a move the table does not list is a stale regression, counted and ignored.
  Captures, refunds, disputes and risk signals go to per-id ledgers (:mod:`schemas.ledger`), each id by its
  newest report. Facts (amount, currency, order and agreement references, the authorisation's expiry) come
  from the newest accepted group that knows them.
* The status of the capture family is then refined by the amounts: captured vs. the amount gives
  ``partially_captured`` / ``captured``, refunds give ``partially_refunded`` / ``refunded`` — and a capture
  or refund that failed or was reversed moves the status back, decided by the observation that said so.

Bounded state: only the newest ``LIVE_GROUPS`` groups are kept whole; older ones are folded into a
:class:`Summary` (the fold's accumulator at that point). An observation older than the compaction point of
such a busy payment (a late redelivery, say) is folded after the summary, and cannot rewind newer evidence:
each ledger entry keeps its newest report, each fact its newest value, and a status word older than the one
that set the current status is ignored as stale. Below ``LIVE_GROUPS`` distinct observations the state is
exactly the fold of the set.

Emission discipline: an event is due when the fold's status, amounts or risk differ from the last emitted
event. The emitted stream is itself a legal path of the table: when the move from the last emitted status to
the fold's status is not allowed (a late older observation rearranged the fold), nothing is emitted — the
observation is absorbed (counted) and the payment waits for evidence that allows a legal move.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from paystream.errors import NormalizationError
from schemas.event import build_event
from schemas.ledger import DisputeEntry, Ledgers, MoneyEntry, RiskEntry
from schemas.observation import Observation, payment_key
from schemas.status import ObjectKind, PaymentStatus, Source
from schemas.transitions import TABLE, Status, kind_of

MAX_GROUP_EVIDENCE = 16  # evidence ids kept per collapsed group (dedupe memory for retries)
MAX_STATE_EVIDENCE = 32  # evidence ids reported with the current status
LIVE_GROUPS = 32  # distinct observations kept whole per payment; older ones live on in the summary

P = PaymentStatus
CAPTURE_FAMILY = frozenset({P.AUTHORIZED, P.PARTIALLY_CAPTURED, P.CAPTURED, P.PARTIALLY_REFUNDED, P.REFUNDED})
REFUND_STATUSES = frozenset({P.PARTIALLY_REFUNDED, P.REFUNDED})
CAPTURE_STATUSES = frozenset({P.PARTIALLY_CAPTURED, P.CAPTURED})
_FACTS = ("amount", "currency", "order_ref", "agreement_ref", "authorization_expires_at")


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise NormalizationError(f"{what} must be timezone-aware: {moment!r}", reason="naive_timestamp")
    return moment.astimezone(UTC)


def _checked(amount: int | None, what: str) -> None:
    if amount is not None and amount < 0:
        raise NormalizationError(f"negative {what} amount {amount}", reason="negative_amount")


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
    agreement_ref: str | None
    authorization_expires_at: datetime | None
    captures: tuple[MoneyEntry, ...]
    refunds: tuple[MoneyEntry, ...]
    refunded_total: int | None
    disputes: tuple[DisputeEntry, ...]
    risk: tuple[RiskEntry, ...]
    observed_at: datetime  # earliest receipt among the collapsed observations
    evidence_ids: tuple[str, ...]  # sorted, the smallest MAX_GROUP_EVIDENCE

    @classmethod
    def of(cls, obs: Observation) -> Retained:
        _checked(obs.amount, "payment")
        _checked(obs.refunded_total, "refunded total")
        for what, entries in (("capture", obs.captures), ("refund", obs.refunds), ("dispute", obs.disputes)):
            for entry in entries.values():
                _checked(entry.amount, what)
        expires = obs.authorization_expires_at
        return cls(
            _utc(obs.occurred_at, "occurred_at"), obs.status, obs.provider_status, obs.source, obs.reason_code,
            obs.amount, obs.currency, obs.order_ref, obs.agreement_ref,
            None if expires is None else _utc(expires, "authorization_expires_at"),
            tuple(sorted((key, m.amount, m.state) for key, m in obs.captures.items())),
            tuple(sorted((key, m.amount, m.state) for key, m in obs.refunds.items())),
            obs.refunded_total,
            tuple(sorted((key, d.amount, d.state, d.reason) for key, d in obs.disputes.items())),
            tuple(sorted((key, r.kind, r.state, r.reason) for key, r in obs.risk.items())),
            _utc(obs.observed_at, "observed_at"), (obs.evidence_id,),
        )

    def content(self) -> tuple[object, ...]:
        """The collapse key: everything but receipt time and evidence ids."""
        return (self.source, *self.facts())

    def facts(self) -> tuple[object, ...]:
        """:meth:`content` without the source: what was observed, whoever observed it."""
        return (self.occurred_at, self.status, self.provider_status, self.reason_code, self.amount, self.currency,
                self.order_ref, self.agreement_ref, self.authorization_expires_at, self.captures, self.refunds,
                self.refunded_total, self.disputes, self.risk)

    def order_key(self) -> tuple[datetime, int, str, bytes]:
        return (*self.short_order_key(), orjson.dumps(self.content()))

    def short_order_key(self) -> tuple[datetime, int, str]:
        """:meth:`order_key` without its last part, which only separates groups this one does not."""
        return (self.occurred_at, -1 if self.status is None else TABLE.rank(self.status), self.evidence_ids[0])

    def merged(self, other: Retained) -> Retained:
        ids = tuple(sorted(set(self.evidence_ids) | set(other.evidence_ids))[:MAX_GROUP_EVIDENCE])
        return replace(self, observed_at=min(self.observed_at, other.observed_at), evidence_ids=ids)


@dataclass(frozen=True, slots=True)
class Decider:
    """The observation that decided the current status (or the last change of amounts or risk)."""

    provider_status: str
    reason_code: str | None
    source: Source
    occurred_at: datetime
    observed_at: datetime

    @classmethod
    def of(cls, group: Retained) -> Decider:
        return cls(group.provider_status, group.reason_code, group.source, group.occurred_at, group.observed_at)


@dataclass(slots=True)
class Summary:
    """The fold's accumulator: what the folded groups leave for the ones after them. Kept (as a copy) as the
    compact summary of a busy payment's oldest groups."""

    position: int = 0  # groups folded so far
    reported: Status | None = None  # the provider's status word, as accepted by the table
    run_start: int = 0  # position of the group that moved into ``reported``
    run_decider: Decider | None = None
    run_evidence: tuple[str, ...] = ()
    change_at: int = -1  # position of the newest accepted group that carried ledger entries
    change_decider: Decider | None = None
    change_evidence: tuple[str, ...] = ()
    facts: dict[str, tuple[datetime, Any]] | None = None  # name -> (provider time, value)
    ledgers: Ledgers | None = None
    stale: int = 0

    def copy(self) -> Summary:
        return Summary(self.position, self.reported, self.run_start, self.run_decider, self.run_evidence,
                       self.change_at, self.change_decider, self.change_evidence, dict(self.facts or {}),
                       (self.ledgers or Ledgers()).copy(), self.stale)

    def add(self, group: Retained) -> bool:
        """Fold one more group; False when its status word is a stale regression."""
        ledgers = self.ledgers = self.ledgers or Ledgers()
        facts = self.facts = self.facts if self.facts is not None else {}
        changed = ledgers.add(group.occurred_at, group.captures, group.refunds, group.refunded_total,
                              group.disputes, group.risk)
        position, self.position = self.position, self.position + 1
        if group.status is not None:
            # In canonical order no group is older than the one that set the status; one folded after a
            # summary can be (older than the compaction point): its word is history, not news.
            older = self.run_decider is not None and group.occurred_at < self.run_decider.occurred_at
            if self.reported is not None and (older or not TABLE.allows(self.reported, group.status,
                                                                         group.source)):
                self.stale += 1
                return False
            if group.status != self.reported or self.run_decider is None:
                self.reported, self.run_start = group.status, position
                self.run_decider, self.run_evidence = Decider.of(group), group.evidence_ids[:MAX_STATE_EVIDENCE]
            else:
                self.run_evidence = _bounded(self.run_evidence, group.evidence_ids)
        if changed:  # the newest group that changed a ledger decided the payment's last change of money or risk
            self.change_at, self.change_decider = position, Decider.of(group)
            self.change_evidence = _bounded(self.change_evidence, group.evidence_ids)
        # The payment's amount comes only from status-bearing groups: on an entry-only one it may be the
        # entry's own amount.
        values = (group.amount if group.status is not None else None, group.currency, group.order_ref,
                  group.agreement_ref, group.authorization_expires_at)
        for name, value in zip(_FACTS, values, strict=True):
            if value is not None:
                held = facts.get(name)
                if held is None or group.occurred_at >= held[0]:
                    facts[name] = (group.occurred_at, value)
        return True


def _bounded(held: tuple[str, ...], more: tuple[str, ...]) -> tuple[str, ...]:
    if len(held) >= MAX_STATE_EVIDENCE:
        return held
    return tuple(dict.fromkeys((*held, *more)))[:MAX_STATE_EVIDENCE]


@dataclass(frozen=True, slots=True)
class Emitted:
    """What the last emitted event said: the next one is due when the fold says something else."""

    status: Status
    amount: int | None
    captured_amount: int
    refunded_amount: int
    disputed_amount: int
    risk: tuple[tuple[str, str], ...]  # (signal id, state)


@dataclass(frozen=True, slots=True)
class PaymentState:
    provider: str
    account: str
    object_type: str
    object_id: str
    kind: ObjectKind
    # --- the fold of the observations -----------------------------------------------------------------
    status: Status | None = None  # None while only entry-only observations are known (parked)
    reported_status: Status | None = None  # the provider's status word before amounts refined it
    provider_status: str | None = None
    reason_code: str | None = None
    amount: int | None = None
    currency: str | None = None
    captured_amount: int = 0
    refunded_amount: int = 0
    disputed_amount: int = 0
    risk: tuple[RiskEntry, ...] = ()
    order_ref: str | None = None
    agreement_ref: str | None = None
    authorization_expires_at: datetime | None = None
    # The deciding observation: the one that moved the payment into its current status or amounts.
    source: Source | None = None
    occurred_at: datetime | None = None
    observed_at: datetime | None = None
    evidence: tuple[str, ...] = ()
    stale_count: int = 0  # distinct observations ignored as stale regressions
    # --- the emitted stream ---------------------------------------------------------------------------
    sequence: int = 0  # events emitted so far for this payment (in this epoch)
    epoch: int = 0  # the derivation epoch of the events (raised by rebuilds: ids never repeat)
    previous_status: Status | None = None  # the status before the last emitted event
    emitted: Emitted | None = None
    absorbed_count: int = 0  # observations whose fold the table did not let the stream follow (yet)
    # --- what can still change the fold ----------------------------------------------------------------
    summary: Summary | None = None  # the fold of the compacted groups
    retained: tuple[Retained, ...] = ()  # the live groups, in canonical order
    # The fold's accumulator after the last live group: derived (never stored, not compared), it lets a group that
    # sorts after every live one (the usual case: a newer provider time) fold in one step instead of a refold.
    tail: Summary | None = field(default=None, compare=False, repr=False)

    @property
    def payment_key(self) -> str:
        return payment_key(self.provider, self.account, self.object_type, self.object_id)

    @property
    def compacted_count(self) -> int:
        return self.summary.position if self.summary is not None else 0


@dataclass(frozen=True, slots=True)
class Step:
    """One observation applied: the new state, the event when one is due, and what happened."""

    state: PaymentState
    event: dict[str, Any] | None
    duplicate: bool  # this exact observation (evidence id and content) was already retained
    stale: bool  # its status word is a stale regression: recorded, ignored
    news: bool  # it told the payment facts it did not know (restarts the stale-poll chain)
    absorbed: bool  # the fold changed but the table does not allow the stream to follow: nothing emitted


def _derive(reported: Status, amount: int | None, captured: int, refunded: int, ledgers: Ledgers) -> Status:
    """Refine the provider's status word of the capture family with the amounts."""
    if reported is P.CANCELED and captured > 0:
        # The uncaptured remainder of an authorisation was canceled or expired (Adyen EXPIRE: "the remaining
        # uncaptured amount expired"): what was captured is the payment's money.
        return _derive(P.CAPTURED, captured, captured, refunded, ledgers)
    if reported not in CAPTURE_FAMILY:
        return reported
    if refunded > 0:
        base = captured if captured > 0 else amount
        if base is None:
            return reported if reported in REFUND_STATUSES else P.PARTIALLY_REFUNDED
        return P.REFUNDED if refunded >= base else P.PARTIALLY_REFUNDED
    if reported in REFUND_STATUSES and not ledgers.knows_refunds:
        return reported  # the provider says refunded and names no refund: trust it
    if captured > 0:
        if amount is None:
            return reported if reported in CAPTURE_STATUSES else P.CAPTURED
        return P.CAPTURED if captured >= amount else P.PARTIALLY_CAPTURED
    if ledgers.knows_captures:
        return P.AUTHORIZED  # every capture we know of is pending, failed or reversed: only authorised
    return P.CAPTURED if reported in REFUND_STATUSES else reported  # every refund undone: the money is back


def _canonical_order(groups: Iterable[Retained]) -> list[Retained]:
    """``groups`` sorted by :meth:`Retained.order_key`: by the cheap prefix, and only runs that tie on it
    (same provider time, rank and smallest evidence id: rare) again by the full key."""
    ordered = sorted(groups, key=Retained.short_order_key)
    keys = [group.short_order_key() for group in ordered]
    if len(set(keys)) != len(keys):
        ordered.sort(key=Retained.order_key)
    return ordered


def _fold_fields(summary: Summary | None, groups: Iterable[Retained], new: Retained | None) -> tuple[
        dict[str, Any], bool]:
    """The state fields the fold of ``summary`` + ``groups`` decides (with the accumulator as ``tail``), and
    whether ``new`` was stale."""
    acc = summary.copy() if summary is not None else Summary()
    new_stale = False
    for group in groups:
        if not acc.add(group) and group is new:
            new_stale = True
    return _finish(acc), new_stale


def _finish(acc: Summary) -> dict[str, Any]:
    """The state fields an accumulator decides (``tail`` included)."""
    ledgers = acc.ledgers or Ledgers()
    facts = acc.facts or {}
    captured, refunded = ledgers.captured(), ledgers.refunded()
    fields: dict[str, Any] = {name: held[1] for name, held in facts.items()}
    for name in _FACTS:
        fields.setdefault(name, None)
    fields.update(captured_amount=captured, refunded_amount=refunded, disputed_amount=ledgers.disputed(),
                  risk=ledgers.risk_entries(), stale_count=acc.stale, tail=acc)
    if acc.reported is None or acc.run_decider is None:
        return fields
    status = _derive(acc.reported, fields["amount"], captured, refunded, ledgers)
    deciding, evidence = acc.run_decider, acc.run_evidence
    if acc.change_decider is not None and acc.change_at > acc.run_start:
        deciding, evidence = acc.change_decider, _bounded(acc.change_evidence, acc.run_evidence)
    fields.update(status=status, reported_status=acc.reported, provider_status=deciding.provider_status,
                  reason_code=deciding.reason_code, source=deciding.source, occurred_at=deciding.occurred_at,
                  observed_at=deciding.observed_at, evidence=evidence)
    return fields


def _check(base: PaymentState, obs: Observation) -> None:
    if (obs.object_id, obs.object_type, obs.account, obs.provider) != (
            base.object_id, base.object_type, base.account, base.provider):
        raise ValueError(f"observation for {obs.payment_key} folded into {base.payment_key}")
    if obs.kind != base.kind or (obs.status is not None and kind_of(obs.status) != obs.kind):
        raise NormalizationError(
            f"{obs.payment_key}: {obs.kind} observation with status {obs.status!r} (state kind {base.kind})",
            reason="kind_mismatch",
        )


def _collapse(groups: tuple[Retained, ...], new: Retained) -> tuple[list[Retained], Retained | None, bool]:
    """``groups`` with ``new`` merged into the group of equal content (returns it as the second value), or
    inserted in canonical order; and whether ``new``'s evidence id was already there (a duplicate)."""
    collapsed = list(groups)
    content = new.content()
    for index, group in enumerate(collapsed):
        # Provider time first: a cheap filter before the full content comparison.
        if group.occurred_at == new.occurred_at and group.content() == content:
            collapsed[index] = group.merged(new)
            return collapsed, None, new.evidence_ids[0] in group.evidence_ids
    # The live groups are in canonical order: a new group that sorts after the last one (the usual case,
    # newer provider time) is appended; any other is placed by a sort.
    if not collapsed or new.short_order_key() > collapsed[-1].short_order_key():
        collapsed.append(new)
        return collapsed, new, False
    return _canonical_order([*collapsed, new]), new, False


def _compact(summary: Summary | None, groups: list[Retained], new: Retained | None = None) -> tuple[
        Summary | None, list[Retained], bool]:
    """Past ``LIVE_GROUPS``, the oldest groups go into the summary; also whether ``new`` went with them and
    was stale there."""
    if len(groups) <= LIVE_GROUPS:
        return summary, groups, False
    summary = summary.copy() if summary is not None else Summary()
    oldest, groups = groups[:-LIVE_GROUPS], groups[-LIVE_GROUPS:]
    new_stale = False
    for group in oldest:
        if not summary.add(group) and group is new:
            new_stale = True
    return summary, groups, new_stale


def fold_groups(base: PaymentState, groups: Iterable[Retained]) -> PaymentState:
    """``base`` with the fold of ``groups`` (collapsed already; any order), compacted past ``LIVE_GROUPS``.
    The emitted stream's bookkeeping of ``base`` is kept as it is (record migrations)."""
    summary, live, _ = _compact(None, _canonical_order(groups))
    fields, _ = _fold_fields(summary, live, None)
    return replace(base, **fields, summary=summary, retained=tuple(live))


def _base_for(obs: Observation) -> PaymentState:
    return PaymentState(obs.provider, obs.account, obs.object_type, obs.object_id, obs.kind)


def _emitted_view(fields: dict[str, Any]) -> Emitted:
    return Emitted(fields["status"], fields["amount"], fields["captured_amount"], fields["refunded_amount"],
                   fields["disputed_amount"], tuple((entry[0], entry[2].value) for entry in fields["risk"]))


def advance(state: PaymentState | None, obs: Observation, emitted_at: datetime, *, epoch: int = 0) -> Step:
    """Add one observation to a payment's state; build the next event when one is due and legal.

    Equals :func:`fold` of the union (below ``LIVE_GROUPS`` distinct observations), numbering events 1, 2, 3…
    per epoch. ``epoch`` only matters for a payment's first event: a state keeps the epoch it started in."""
    base = state or replace(_base_for(obs), epoch=epoch)
    _check(base, obs)
    new = Retained.of(obs)
    groups, added, duplicate = _collapse(base.retained, new)
    news = added is not None and not any(group.occurred_at == new.occurred_at and group.facts() == new.facts()
                                         for group in base.retained)
    if added is not None and base.tail is not None and groups[-1] is added and len(groups) > len(base.retained):
        # Sorts after every live group: fold it onto the accumulator (the oldest group may leave the live
        # window, which changes the summary, not the fold).
        tail = base.tail.copy()
        stale = not tail.add(added)
        summary, groups, _ = _compact(base.summary, groups)
        fields = _finish(tail)
    else:
        summary, groups, compacted_stale = _compact(base.summary, groups, added)
        fields, stale = _fold_fields(summary, groups, added)
        stale = stale or compacted_stale
    fields.update(summary=summary, retained=tuple(groups))
    status = fields.get("status")
    if status is None:
        return Step(replace(base, **fields), None, duplicate, stale, news, absorbed=False)
    view = _emitted_view(fields)
    last = base.emitted
    if last == view:
        return Step(replace(base, **fields), None, duplicate, stale, news, absorbed=False)
    if last is not None and not TABLE.allows_emitted(last.status, status, fields["source"]):
        fields["absorbed_count"] = base.absorbed_count + 1
        return Step(replace(base, **fields), None, duplicate, stale, news, absorbed=True)
    fields.update(sequence=base.sequence + 1, previous_status=None if last is None else last.status,
                  emitted=view)
    emitted = replace(base, **fields)
    return Step(emitted, build_event(emitted, emitted_at), duplicate, stale, news, absorbed=False)


def apply(state: PaymentState | None, obs: Observation) -> PaymentState:
    """:func:`advance` without the event: the state after one more observation."""
    return advance(state, obs, datetime.now(UTC)).state


def fold(observations: Iterable[Observation]) -> PaymentState:
    """The state of one payment from a set of its observations (order and duplication do not matter)."""
    base: PaymentState | None = None
    groups: tuple[Retained, ...] = ()
    for obs in observations:
        base = base or _base_for(obs)
        _check(base, obs)
        collapsed, _, _ = _collapse(groups, Retained.of(obs))
        groups = tuple(collapsed)
    if base is None:
        raise ValueError("fold needs at least one observation")
    fields, _ = _fold_fields(None, groups, None)
    fields["retained"] = groups
    return replace(base, **fields)
