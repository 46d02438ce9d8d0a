"""Properties of the join (DESIGN §5), checked with Hypothesis.

The state is a function of the SET of observations: any permutation and duplication gives the same final
fold, and feeding observations one at a time gives the same fold as the batch. The emitted stream is a legal
path of the transition table: every emitted move is allowed, gap-free, and it ends at the fold wherever the
table lets it get there.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import fields, replace
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from observation_factory import obs

from schemas.event import event_id, load_schema
from schemas.join import PaymentState, advance, fold
from schemas.observation import Dispute, Movement, Observation, RiskSignal
from schemas.state_codec import from_json, to_json
from schemas.status import DisputeState, MoneyState, PaymentStatus, RiskState, Source
from schemas.transitions import TABLE, parse_status

VALIDATOR = Draft202012Validator(load_schema("payment-status-event"), format_checker=FormatChecker())
EMITTED = obs(None, "x").observed_at
Case = tuple[list[Observation], list[Observation]]  # (the set, its arrival order with redeliveries)
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)
# The fields the fold decides (everything but the emitted stream's bookkeeping).
EMISSION_FIELDS = {"sequence", "previous_status", "emitted", "absorbed_count", "epoch"}
FOLD_FIELDS = [spec.name for spec in fields(PaymentState) if spec.name not in EMISSION_FIELDS]

movements = st.builds(Movement, st.integers(0, 700), st.sampled_from(MoneyState))


@st.composite
def observation_sets(draw: st.DrawFn) -> list[Observation]:
    """Distinct observations of one payment; few provider times so that ties happen often."""
    items = []
    for index in range(draw(st.integers(1, 7))):
        items.append(obs(
            draw(st.none() | st.sampled_from(PaymentStatus)),
            f"ev{index}",
            occurred=draw(st.integers(0, 4)),
            observed=draw(st.integers(0, 50)),
            source=draw(st.sampled_from(Source)),
            amount=draw(st.sampled_from([None, 1000])),
            captures=draw(st.dictionaries(st.sampled_from(["c1", "c2"]), st.integers(0, 700) | movements,
                                          max_size=2)),
            refunds=draw(st.dictionaries(st.sampled_from(["r1", "r2"]), st.integers(0, 700) | movements,
                                         max_size=2)),
            reason_code=draw(st.sampled_from([None, "expired"])),
            refunded_total=draw(st.sampled_from([None, None, 300])),
            disputes=draw(st.dictionaries(st.just("dp_1"), st.builds(Dispute, st.sampled_from([None, 500]),
                                                                       st.sampled_from(DisputeState)),
                                          max_size=1)),
            risk=draw(st.dictionaries(st.sampled_from(["efw_1", "rev_1"]),
                                      st.builds(RiskSignal, st.just("review"), st.sampled_from(RiskState)),
                                      max_size=1)),
        ))
    return items


@st.composite
def deliveries(draw: st.DrawFn) -> Case:
    """(the set, the same set permuted with redeliveries — same id and content, any receipt time)."""
    originals = draw(observation_sets())
    redeliveries = [
        replace(original, observed_at=original.observed_at.replace(minute=draw(st.integers(0, 59))))
        for original in draw(st.lists(st.sampled_from(originals), max_size=6))
    ]
    arrival = originals + redeliveries
    random.Random(draw(st.integers(0, 2**32))).shuffle(arrival)
    return originals, arrival


def feed(arrival: list[Observation]) -> tuple[PaymentState, list[dict[str, Any]], list[Any]]:
    state: PaymentState | None = None
    events, steps = [], []
    for item in arrival:
        step = advance(state, item, EMITTED)
        steps.append((state, step))
        state = step.state
        if step.event is not None:
            events.append(step.event)
    assert state is not None
    return state, events, steps


def fold_view(state: PaymentState) -> tuple[object, ...]:
    return tuple(getattr(state, name) for name in FOLD_FIELDS)


def money(data_or_state: Any) -> tuple[object, ...]:
    get = data_or_state.get if isinstance(data_or_state, dict) else lambda name: getattr(data_or_state, name)
    return tuple(get(name) for name in ("amount", "captured_amount", "refunded_amount", "disputed_amount"))


@PROPERTY_SETTINGS
@given(deliveries())
def test_any_permutation_and_duplication_folds_to_the_same_state(case: Case) -> None:
    originals, arrival = case
    assert fold(arrival) == fold(originals)


@PROPERTY_SETTINGS
@given(deliveries())
def test_one_at_a_time_equals_the_batch_fold(case: Case) -> None:
    originals, arrival = case
    final, _, _ = feed(arrival)
    assert fold_view(final) == fold_view(fold(originals))


@PROPERTY_SETTINGS
@given(deliveries())
def test_sequences_run_from_one_without_gaps(case: Case) -> None:
    _, arrival = case
    final, events, _ = feed(arrival)
    assert [e["data"]["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert final.sequence == len(events)
    for before, after in itertools.pairwise(events):
        assert after["data"]["previous_status"] == before["data"]["status"]


@PROPERTY_SETTINGS
@given(deliveries())
def test_every_emitted_move_is_allowed_by_the_transition_table(case: Case) -> None:
    _, arrival = case
    _, events, _ = feed(arrival)
    for event in events[1:]:
        data = event["data"]
        previous, status = parse_status(data["previous_status"]), parse_status(data["status"])
        assert TABLE.allows_emitted(previous, status, Source(data["source"])), (previous, status, data["source"])


def _reachable(start: object) -> set[object]:
    edges = [*TABLE.moves, *TABLE.amount_moves]
    seen, todo = set(), [start]
    while todo:
        current = todo.pop()
        for source, target in edges:
            if source == current and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@PROPERTY_SETTINGS
@given(deliveries())
def test_a_status_comes_back_only_through_a_cycle_of_the_table(case: Case) -> None:
    _, arrival = case
    _, events, _ = feed(arrival)
    emitted = [parse_status(event["data"]["status"]) for event in events]
    for index, status in enumerate(emitted):
        left = [later for later in emitted[index + 1:] if later != status]
        if left and status in emitted[emitted.index(left[0], index + 1):]:
            assert status in _reachable(status), f"{status} came back without a cycle in the table: {emitted}"


@PROPERTY_SETTINGS
@given(deliveries())
def test_the_stream_ends_at_the_fold_wherever_the_table_reaches_it(case: Case) -> None:
    originals, arrival = case
    final, events, _ = feed(arrival)
    folded = fold(originals)
    if folded.status is None:
        assert not events
        return
    assert events, "a payment with a status emits at least one event"
    last = events[-1]["data"]
    last_status = parse_status(last["status"])
    assert folded.source is not None
    if last_status == folded.status or TABLE.allows_emitted(last_status, folded.status, folded.source):
        assert (last_status, money(last)) == (folded.status, money(folded))
    else:  # the fold moved where the table forbids the stream to follow: absorbed, counted
        assert final.absorbed_count > 0


@PROPERTY_SETTINGS
@given(deliveries())
def test_duplicates_never_change_the_fold_nor_emit(case: Case) -> None:
    _, arrival = case
    _, _, steps = feed(arrival)
    for before, step in steps:
        if step.duplicate:  # a redelivery may only move the first-receipt time earlier
            assert step.event is None
            assert before is not None
            assert (before.status, money(before), before.evidence) == (step.state.status, money(step.state),
                                                                       step.state.evidence)


@PROPERTY_SETTINGS
@given(deliveries())
def test_every_emitted_event_validates_and_has_its_deterministic_id(case: Case) -> None:
    _, arrival = case
    _, events, _ = feed(arrival)
    for event in events:
        VALIDATOR.validate(orjson.loads(orjson.dumps(event)))
        assert event["id"] == event_id(event["subject"], event["data"]["sequence"])


@PROPERTY_SETTINGS
@given(deliveries())
def test_reprocessing_the_same_arrival_order_yields_identical_events(case: Case) -> None:
    _, arrival = case
    assert feed(arrival)[1] == feed(arrival)[1]


@PROPERTY_SETTINGS
@given(deliveries())
def test_state_survives_a_json_round_trip_at_every_step(case: Case) -> None:
    _, arrival = case
    for _, step in feed(arrival)[2]:
        assert from_json(orjson.loads(orjson.dumps(to_json(step.state)))) == step.state
