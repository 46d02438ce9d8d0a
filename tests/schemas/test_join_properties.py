"""Properties of the join (DESIGN §5), checked with Hypothesis.

The state is a function of the SET of observations: any permutation and duplication gives the same final
state, and feeding observations one at a time gives gap-free sequences and the same state as the batch fold.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from observation_factory import obs

from schemas.event import event_id, load_schema
from schemas.join import PaymentState, advance, fold
from schemas.observation import Observation
from schemas.status import PaymentStatus, Source

VALIDATOR = Draft202012Validator(load_schema("payment-status-event"), format_checker=FormatChecker())
EMITTED = obs(None, "x").observed_at
Case = tuple[list[Observation], list[Observation]]  # (the set, its arrival order with redeliveries)
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


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
            captures=draw(st.dictionaries(st.sampled_from(["c1", "c2"]), st.integers(0, 700), max_size=2)),
            refunds=draw(st.dictionaries(st.sampled_from(["r1", "r2"]), st.integers(0, 700), max_size=2)),
            reason_code=draw(st.sampled_from([None, "expired"])),
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


def summary(state: PaymentState) -> tuple[object, ...]:
    return (state.status, state.amount, state.captured_amount, state.refunded_amount, state.evidence,
            state.stale_count, len(state.retained))


def unnumbered(state: PaymentState) -> PaymentState:
    return replace(state, sequence=0, previous_status=None)


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
    assert unnumbered(final) == fold(originals)


@PROPERTY_SETTINGS
@given(deliveries())
def test_sequences_run_from_one_without_gaps(case: Case) -> None:
    _, arrival = case
    final, events, _ = feed(arrival)
    assert [e["data"]["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert final.sequence == len(events)
    for before, after in itertools.pairwise(events):
        assert after["data"]["previous_status"] == before["data"]["status"]
    if final.status is not None:
        assert events[-1]["data"]["status"] == final.status


@PROPERTY_SETTINGS
@given(deliveries())
def test_duplicates_and_stale_regressions_never_move_the_status(case: Case) -> None:
    _, arrival = case
    _, _, steps = feed(arrival)
    for before, step in steps:
        if step.duplicate:  # a redelivery may only move the first-receipt time earlier
            assert step.event is None
            assert before is not None
            assert summary(step.state) == summary(before)
        if step.stale and before is not None:
            assert step.state.reported_status == before.reported_status
            amounts_moved = (step.state.captured_amount, step.state.refunded_amount) != (
                before.captured_amount, before.refunded_amount)
            assert step.event is None or amounts_moved


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
        assert PaymentState.from_dict(orjson.loads(orjson.dumps(step.state.to_dict()))) == step.state
