"""Per-id ledgers of a payment: captures, refunds, disputes and risk signals, each entry by its own id.

A provider reports each capture, refund, dispute or risk signal under its own id, and its state moves on
(a refund pending → succeeded → reversed; a dispute open → won). The join (:mod:`schemas.join`) folds
observations in canonical order; each ledger keeps, per id, the report with the newest provider time — on a
tie the one further along (``RANK``), so the result does not depend on arrival order. An observation folded
after newer ones (past the compaction point of a busy payment) therefore never rewinds an entry.

Only what really moved counts (DESIGN §4.3):

* ``captured_amount`` — succeeded captures;
* ``refunded_amount`` — succeeded refunds. A provider may instead report a running total without naming its
  refunds (a Stripe ``charge.refunded`` from API 2022-11-15 on): the total holds as of its time, and refunds by
  id reported after it move it by the difference to what it already contained. A refund the total did not
  name, first reported already failed or reversed, is taken to have been in the total (money cannot come
  back unless it went out); one first reported pending or succeeded after the total is not. Pending refunds
  never count: the total's share of them is taken out until they succeed;
* ``disputed_amount`` — disputes open or lost (a dispute won no longer counts);
* risk — fulfillment holds while any signal is open or confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.status import DisputeState, MoneyState, RiskState

# (id, amount, state) of a capture or refund; (id, amount, state, reason) of a dispute; (id, kind, state,
# reason) of a risk signal. Plain tuples: they are part of a retained group's content and of the stored record.
MoneyEntry = tuple[str, int | None, MoneyState]
DisputeEntry = tuple[str, int | None, DisputeState, str | None]
RiskEntry = tuple[str, str, RiskState, str | None]

M, D, R = MoneyState, DisputeState, RiskState
RANK: dict[object, int] = {
    M.PENDING: 0, M.SUCCEEDED: 1, M.FAILED: 2, M.CANCELED: 2, M.REVERSED: 3,
    D.OPEN: 0, D.WON: 1, D.LOST: 1,
    R.OPEN: 0, R.CLEARED: 1, R.CONFIRMED: 1,
}
UNDONE = frozenset({M.FAILED, M.CANCELED, M.REVERSED})
HOLDING = frozenset({R.OPEN, R.CONFIRMED})
DISPUTED = frozenset({D.OPEN, D.LOST})


def newer(held: tuple[datetime, object] | None, at: datetime, state: object) -> bool:
    """Whether a report at ``at`` in ``state`` replaces the held ``(time, state)`` of the same id."""
    if held is None:
        return True
    return at > held[0] or (at == held[0] and RANK[state] >= RANK[held[1]])


@dataclass(slots=True)
class Ledgers:
    """The ledgers of one payment while the join folds it (mutable; copied before it is kept)."""

    # id -> (time, state, amount); a report without an amount keeps the amount known for the id
    captures: dict[str, tuple[datetime, MoneyState, int | None]] = field(default_factory=dict)
    refunds: dict[str, tuple[datetime, MoneyState, int | None]] = field(default_factory=dict)
    disputes: dict[str, tuple[datetime, DisputeState, int | None, str | None]] = field(default_factory=dict)
    risk: dict[str, tuple[datetime, RiskState, str, str | None]] = field(default_factory=dict)
    # The latest reported refund total: (time, amount), what each refund id counted in it then, and the ids
    # first reported after it in a state that was not yet undone.
    total: tuple[datetime, int] | None = None
    in_total: dict[str, int] = field(default_factory=dict)
    after_total: set[str] = field(default_factory=set)

    def copy(self) -> Ledgers:
        return Ledgers(dict(self.captures), dict(self.refunds), dict(self.disputes), dict(self.risk), self.total,
                       dict(self.in_total), set(self.after_total))

    def add(self, at: datetime, captures: tuple[MoneyEntry, ...], refunds: tuple[MoneyEntry, ...],
            total: int | None, disputes: tuple[DisputeEntry, ...], risk: tuple[RiskEntry, ...]) -> bool:
        """Fold one group's entries in; True when any of them changed what the ledgers hold (the group then
        decides the payment's last change, not a report that only repeats what is known)."""
        changed = False
        for entry_id, amount, state in captures:
            changed |= _money(self.captures, entry_id, at, state, amount)
        for entry_id, amount, state in refunds:
            if (self.total is not None and entry_id not in self.refunds and entry_id not in self.in_total
                    and state not in UNDONE):
                self.after_total.add(entry_id)
            changed |= _money(self.refunds, entry_id, at, state, amount)
        if total is not None and (self.total is None or at >= self.total[0]):
            changed |= self.total is None or self.total[1] != total
            self.total = (at, total)
            self.in_total = {entry_id: amount or 0 for entry_id, (_, state, amount) in self.refunds.items()
                             if state not in UNDONE}
            self.after_total = set()
        for entry_id, amount, dispute_state, reason in disputes:
            held = self.disputes.get(entry_id)
            if newer(None if held is None else (held[0], held[1]), at, dispute_state):
                known = amount if amount is not None else (held[2] if held else None)
                entry = (at, dispute_state, known, reason)
                changed |= held is None or held[1:] != entry[1:]
                self.disputes[entry_id] = entry
        for entry_id, kind, risk_state, reason in risk:
            signal = self.risk.get(entry_id)
            if newer(None if signal is None else (signal[0], signal[1]), at, risk_state):
                changed |= signal is None or signal[1:] != (risk_state, kind, reason)
                self.risk[entry_id] = (at, risk_state, kind, reason)
        return changed

    @property
    def knows_captures(self) -> bool:
        return bool(self.captures)

    @property
    def knows_refunds(self) -> bool:
        return bool(self.refunds) or self.total is not None

    def captured(self) -> int:
        return sum(amount or 0 for _, state, amount in self.captures.values() if state is M.SUCCEEDED)

    def refunded(self) -> int:
        succeeded = {entry_id: amount or 0 for entry_id, (_, state, amount) in self.refunds.items()
                     if state is M.SUCCEEDED}
        if self.total is None:
            return sum(succeeded.values())
        moved = self.total[1]
        for entry_id, (_, state, amount) in self.refunds.items():
            if entry_id in self.in_total:
                before = self.in_total[entry_id]
            elif entry_id in self.after_total or state not in UNDONE:
                before = 0
            else:  # first reported already undone: it must have been in the total
                before = amount or 0
            moved += succeeded.get(entry_id, 0) - before
        return max(moved, 0)

    def disputed(self) -> int:
        return sum(amount or 0 for _, state, amount, _ in self.disputes.values() if state in DISPUTED)

    def risk_entries(self) -> tuple[RiskEntry, ...]:
        return tuple((entry_id, kind, state, reason)
                     for entry_id, (_, state, kind, reason) in sorted(self.risk.items()))


def _money(held: dict[str, tuple[datetime, MoneyState, int | None]], entry_id: str, at: datetime,
           state: MoneyState, amount: int | None) -> bool:
    """Hold the report if it is the newest of its id; True when that changed the entry's state or amount."""
    current = held.get(entry_id)
    if current is not None and at == current[0] and state == current[1] and amount is not None:
        # Two reports of the same id at the same time in the same state (a running total polled twice):
        # the larger amount, whichever came first.
        larger = max(amount, current[2] or 0)
        held[entry_id] = (at, state, larger)
        return larger != current[2]
    if newer(None if current is None else (current[0], current[1]), at, state):
        known = amount if amount is not None else (current[2] if current else None)
        held[entry_id] = (at, state, known)
        return current is None or (current[1], current[2]) != (state, known)
    return False


def holds(risk: tuple[RiskEntry, ...]) -> bool:
    """Whether fulfillment should hold the payment: any risk signal open or confirmed."""
    return any(state in HOLDING for _, _, state, _ in risk)
