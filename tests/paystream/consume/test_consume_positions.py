"""paystream.consume.positions.judge: the dedupe and gap rules by payment and (epoch, sequence)."""

from __future__ import annotations

import pytest

from paystream.consume import Judgement, MemoryPositions, Position, Verdict, judge

P = Position
APPLY, DUP, STALE = Verdict.APPLY, Verdict.DUPLICATE, Verdict.STALE_EPOCH


@pytest.mark.parametrize(("last", "got", "complete", "expected"), [
    # the next event, and the first one of a payment
    (P(0, 3), P(0, 4), True, Judgement(APPLY)),
    (None, P(0, 1), True, Judgement(APPLY)),
    # repeats: the same position again (at-least-once), or an older one (re-read after a restart or overlap)
    (P(0, 3), P(0, 3), True, Judgement(DUP)),
    (P(0, 3), P(0, 1), False, Judgement(DUP)),
    # a jump: the events in between were never seen
    (P(0, 3), P(0, 7), True, Judgement(APPLY, missing=3)),
    (P(0, 3), P(0, 7), False, Judgement(APPLY, missing=3)),
    # an unknown payment mid-way: a gap only when the consumer's view of payments is complete
    (None, P(0, 5), True, Judgement(APPLY, missing=4)),
    (None, P(0, 5), False, Judgement(APPLY)),
    # epochs: a rebuild starts again at 1 with new ids; a higher epoch wins whatever its sequence
    (P(0, 9), P(1, 1), True, Judgement(APPLY, new_epoch=True)),
    (P(0, 9), P(1, 3), True, Judgement(APPLY, missing=2, new_epoch=True)),
    (P(1, 2), P(0, 9), True, Judgement(STALE)),
    (P(1, 2), P(1, 2), True, Judgement(DUP)),
])
def test_judge(last: Position | None, got: Position, complete: bool, expected: Judgement) -> None:
    assert judge(last, got, complete=complete) == expected


def test_positions_order_by_epoch_then_sequence() -> None:
    assert sorted([P(1, 1), P(0, 10), P(0, 2)]) == [P(0, 2), P(0, 10), P(1, 1)]
    assert str(P(2, 5)) == "2:5"


async def test_memory_positions_remember_the_last_applied_position() -> None:
    store = MemoryPositions()
    assert await store.get("k") is None and not store.durable
    await store.put("k", P(0, 2))
    assert await store.get("k") == P(0, 2) and len(store) == 1
