"""The toy fulfillment service's decisions (deploy/local/fulfillment_rules.py), no broker needed.

Each scenario's Adyen items go through the parser and the join the processor runs, so the events are the
ones paystream would emit; the example's decisions on them are then checked for both ways a consumer meets a
payment: following every event, or first seeing its final state in the state topic's snapshot.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fulfillment_scenarios import SCENARIOS, Scenario, item

from ingest.providers.adyen import parse as adyen
from paystream.consume import StatusEvent, parse_event
from schemas.event import serialize_event
from schemas.join import PaymentState, advance
from schemas.status import Source

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))
from fulfillment_rules import ACTIONS, Order, capture_notice, decide

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(hours=24)


def emitted(scenario: Scenario) -> list[StatusEvent]:
    """The scenario's events as the processor's join emits them."""
    states: dict[str, PaymentState | None] = {}
    events = []
    for n, step in enumerate(scenario.steps):
        for observation in adyen.parse(item("PSP1", step, minute=n + 1), account="main", source=Source.PUSH,
                                       evidence_id=f"d{n}", observed_at=NOW, object_kind="event"):
            result = advance(states.get(observation.payment_key), observation, NOW)
            states[observation.payment_key] = result.state
            if result.event is not None:
                events.append(parse_event(serialize_event(result.event)))
    return events


def decisions(events: list[StatusEvent]) -> list[str]:
    order: Order | None = None
    actions = []
    for event in events:
        order, made = decide(order, event, NOW, WINDOW)
        actions += [decision.action for decision in made]
    return actions


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_each_scenario_emits_what_the_kafka_test_expects(scenario: Scenario) -> None:
    assert tuple(event.status for event in emitted(scenario)) == scenario.statuses


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_decisions_following_every_event(scenario: Scenario) -> None:
    assert tuple(decisions(emitted(scenario))) == scenario.live


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_decisions_from_the_final_state_alone(scenario: Scenario) -> None:
    assert tuple(decisions(emitted(scenario)[-1:])) == scenario.snapshot


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_an_event_applied_twice_decides_nothing_more(scenario: Scenario) -> None:
    events = emitted(scenario)
    assert decisions([event for event in events for _ in range(2)]) == decisions(events)


def test_an_order_is_never_released_twice_whatever_the_order_of_events() -> None:
    every = [event for scenario in SCENARIOS if not scenario.agreement for event in emitted(scenario)]
    for shift in range(len(every)):
        rotated = every[shift:] + every[:shift]
        assert decisions(rotated).count("release") <= 1, shift


def test_an_authorisation_about_to_lapse_asks_for_a_capture_once() -> None:
    event = emitted(SCENARIOS[1])[0]  # authorized
    expiring = replace(event, data=replace(event.data, authorization_expires_at=NOW + timedelta(hours=5)))
    order, made = decide(None, expiring, NOW, WINDOW)
    assert [d.action for d in made] == ["release", "capture_due"]
    assert "capture now before" in made[1].why
    assert capture_notice(order, NOW, WINDOW) is None  # asked once
    far = Order("o", "k", status="authorized", authorization_expires_at=NOW + timedelta(days=5))
    assert capture_notice(far, NOW, WINDOW) is None
    notice = capture_notice(far, NOW + timedelta(days=4, hours=1), WINDOW)
    assert notice is not None and notice[1].why.startswith("capture or cancel")


def test_every_scenario_action_is_one_the_service_knows() -> None:
    assert {a for s in SCENARIOS for a in (*s.live, *s.snapshot)} <= ACTIONS


def by_name(name: str) -> Scenario:
    return next(scenario for scenario in SCENARIOS if scenario.name == name)


def test_money_that_comes_back_after_an_order_was_stopped_for_it_asks_a_person() -> None:
    refund_failed = emitted(by_name("refund_failed"))
    # Not shipped yet when the full refund came: canceled; the refund then fails: never ship automatically.
    order, made = decide(None, refund_failed[2], NOW, WINDOW)
    assert (order.state, [d.action for d in made]) == ("canceled", ["cancel"])
    order, made = decide(order, refund_failed[3], NOW, WINDOW)
    assert [d.action for d in made] == ["review"] and not order.released


def test_a_failed_payment_that_succeeds_later_is_released() -> None:
    failed, captured = emitted(by_name("failed"))[0], emitted(by_name("ship"))[1]
    order, _ = decide(None, failed, NOW, WINDOW)
    order, made = decide(order, captured, NOW, WINDOW)
    assert [d.action for d in made] == ["release"] and order.released


def test_a_new_epoch_replays_quietly_until_it_is_back_where_the_old_one_ended() -> None:
    old = emitted(by_name("refund_failed"))[:3]  # ... refunded: released, then reversed
    order: Order | None = None
    for event in old:
        order, _ = decide(order, event, NOW, WINDOW)
    assert order is not None and (order.state, order.status) == ("reversed", "refunded")
    rebuilt = [replace(e, data=replace(e.data, epoch=1)) for e in emitted(by_name("refund_failed"))]
    made = []
    for event in rebuilt[:3]:  # authorized, captured, refunded again: nothing is news
        order, decided = decide(order, event, NOW, WINDOW)
        made += decided
    assert made == [] and order.catch_up is None and order.epoch == 1
    order, decided = decide(order, rebuilt[3], NOW, WINDOW)  # the refund fails: news
    assert [d.action for d in decided] == ["review"]
