"""What a consumer already applied, per payment, and what a newly read event is against it.

The rules (docs/consumers.md, "Ids, sequences and epochs"): a payment's events are ordered by
``(epoch, sequence)``; sequences are gap-free per payment and epoch. So an event at or below the applied
position is a repeat (drop it), one exactly one above is the next, and one further above means the consumer
missed events: it fell behind compaction or retention, or bootstrapped from a snapshot. An event of a
lower epoch than the applied one belongs to a derivation that a rebuild replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from paystream.consume.events import Position


class Verdict(StrEnum):
    APPLY = "apply"
    DUPLICATE = "duplicate"  # at or below the applied position: already applied
    STALE_EPOCH = "stale_epoch"  # from an epoch a rebuild replaced


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    missing: int = 0  # events between the applied position and this one that the consumer never saw
    new_epoch: bool = False  # the first event of a higher epoch than the applied one


def judge(last: Position | None, got: Position, *, complete: bool) -> Judgement:
    """``got`` against the applied position ``last`` of its payment. ``complete``: the consumer's view of
    payments is complete (it bootstrapped, or its store is durable), so a payment it does not know should
    start at sequence 1."""
    if last is None:
        missing = got.sequence - 1 if complete else 0
        return Judgement(Verdict.APPLY, missing=missing)
    if got.epoch < last.epoch:
        return Judgement(Verdict.STALE_EPOCH)
    if got.epoch > last.epoch:
        return Judgement(Verdict.APPLY, missing=got.sequence - 1, new_epoch=True)
    if got.sequence <= last.sequence:
        return Judgement(Verdict.DUPLICATE)
    return Judgement(Verdict.APPLY, missing=got.sequence - last.sequence - 1)


@dataclass(frozen=True, slots=True)
class Gap:
    """Events of one payment the consumer never saw. ``cause``: ``stream`` (a sequence jump while following
    the status topic: retention or a rebuild removed them, or the consumer resumed from too far) or
    ``snapshot`` (a bootstrap from the state topic replaced them by the payment's latest event)."""

    payment_key: str
    after: Position | None
    got: Position
    missing: int
    cause: Literal["stream", "snapshot"]


class PositionStore(Protocol):
    """The applied position of each payment. A durable store (``durable = True``) that commits ``put``
    together with the handler's own writes makes "applied" and "decided" one fact across restarts."""

    durable: bool

    async def get(self, payment_key: str) -> Position | None: ...

    async def put(self, payment_key: str, position: Position) -> None: ...


class MemoryPositions:
    """Positions in a dict: lost on restart (the follower then relies on its committed offsets alone, so
    the handler sees the events read since the last offset commit again and must be idempotent)."""

    durable = False

    def __init__(self) -> None:
        self._applied: dict[str, Position] = {}

    async def get(self, payment_key: str) -> Position | None:
        return self._applied.get(payment_key)

    async def put(self, payment_key: str, position: Position) -> None:
        self._applied[payment_key] = position

    def __len__(self) -> int:
        return len(self._applied)
