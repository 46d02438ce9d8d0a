"""paystream.consume.events: typed events and state documents, validated against the published schemas.

The events here are built by the processor's own code (schemas.join.advance + schemas.event.build_event and
processors.state_doc.document), so the library is checked against what paystream really emits.
"""

from __future__ import annotations

import dataclasses
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from paystream.consume import (
    AGREEMENT_STATUSES,
    PAYMENT_STATUSES,
    InvalidEvent,
    Position,
    parse_event,
    parse_state,
)
from processors.payment_record import PaymentRecord
from processors.scheduling import PollChain, PollSchedule
from processors.state_doc import document
from schemas.event import serialize_event
from schemas.join import PaymentState, advance
from schemas.observation import Dispute, Movement, Observation, RiskSignal
from schemas.status import AgreementStatus, DisputeState, ObjectKind, PaymentStatus, RiskState, Source

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KEY = "adyen:main:payment:PSP1"
EXPIRES = T0 + timedelta(days=7)


def observation(status: PaymentStatus | None, evidence: str, minute: int, **fields: Any) -> Observation:
    return Observation(provider="adyen", account="main", object_type="payment", object_id="PSP1",
                       kind=ObjectKind.PAYMENT, status=status, provider_status=f"word-{evidence}",
                       source=Source.PUSH, evidence_id=evidence, occurred_at=T0 + timedelta(minutes=minute),
                       observed_at=T0 + timedelta(minutes=minute, seconds=1), **fields)


def emitted(*observations: Observation) -> list[dict[str, Any]]:
    state: PaymentState | None = None
    events = []
    for obs in observations:
        step = advance(state, obs, T0 + timedelta(hours=1))
        state = step.state
        if step.event is not None:
            events.append(orjson.loads(serialize_event(step.event)))
    return events


def lifecycle() -> list[dict[str, Any]]:
    """authorized (with an expiry and an agreement) → captured → a fraud report → disputed."""
    return emitted(
        observation(PaymentStatus.AUTHORIZED, "e1", 1, amount=1000, currency="EUR", order_ref="order-1",
                    agreement_ref="token-1", authorization_expires_at=EXPIRES),
        observation(None, "e2", 2, captures={"C1": Movement(1000)}),
        observation(None, "e3", 3, risk={"fraud_report:X": RiskSignal("fraud_report", RiskState.CONFIRMED, "10.4")}),
        observation(PaymentStatus.DISPUTED, "e4", 4, disputes={"PSP1": Dispute(1000, DisputeState.OPEN, "4837")}),
    )


def test_real_events_parse_into_typed_values() -> None:
    events = [parse_event(orjson.dumps(raw)) for raw in lifecycle()]
    assert [(e.status, e.data.previous_status, e.position) for e in events] == [
        ("authorized", None, Position(0, 1)), ("captured", "authorized", Position(0, 2)),
        ("captured", "captured", Position(0, 3)), ("disputed", "captured", Position(0, 4))]
    first, _, flagged, disputed = events
    assert first.payment_key == first.subject == KEY
    assert (first.data.order_ref, first.data.agreement_ref, first.data.currency) == ("order-1", "token-1", "EUR")
    assert first.data.authorization_expires_at == EXPIRES
    assert first.data.risk is None and not first.is_agreement
    assert flagged.data.risk is not None and flagged.data.risk.hold
    assert [(s.kind, s.state, s.reason) for s in flagged.data.risk.signals] == [("fraud_report", "confirmed", "10.4")]
    assert (disputed.data.disputed_amount, disputed.data.captured_amount) == (1000, 1000)
    assert disputed.data.occurred_at == T0 + timedelta(minutes=4)
    assert isinstance(disputed.data.evidence, tuple)


def test_events_are_immutable() -> None:
    event = parse_event(orjson.dumps(lifecycle()[0]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data.status = "captured"  # type: ignore[misc]


def test_the_library_knows_every_status_of_the_status_model() -> None:
    assert {str(s) for s in PaymentStatus} == PAYMENT_STATUSES
    assert {str(s) for s in AgreementStatus} == AGREEMENT_STATUSES


def test_an_agreement_event_parses() -> None:
    agreement = Observation(provider="adyen", account="main", object_type="recurring_contract", object_id="T1",
                            kind=ObjectKind.AGREEMENT, status=AgreementStatus.ACTIVE,
                            provider_status="RECURRING_CONTRACT:true", source=Source.PUSH, evidence_id="a1",
                            occurred_at=T0, observed_at=T0)
    step = advance(None, agreement, T0)
    assert step.event is not None
    event = parse_event(serialize_event(step.event))
    assert event.is_agreement and event.status == "active"


def broken(mutate: Any) -> bytes:
    raw = deepcopy(lifecycle()[1])
    mutate(raw)
    return orjson.dumps(raw)


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda e: e["data"].update(sequence=0), "$.data.sequence: 0 is less than the minimum of 1"),
    (lambda e: e["data"].update(status="shipped"), "$.data.status"),
    (lambda e: e["data"].update(captured_amount=-5), "$.data.captured_amount"),
    (lambda e: e["data"].pop("epoch"), "'epoch' is a required property"),
    (lambda e: e.update(id="not-a-uuid"), "$.id: 'not-a-uuid' is not a 'uuid'"),
    (lambda e: e["data"].update(occurred_at="yesterday"), "$.data.occurred_at"),
    (lambda e: e.update(subject="adyen:main:payment:OTHER"), "is not data.payment_key"),
])
def test_an_invalid_event_names_what_is_wrong(mutate: Any, expected: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_event(broken(mutate), where="payments.status.v1/2@17")
    assert expected in str(raised.value)
    assert str(raised.value).startswith("payments.status.v1/2@17: ")


def test_every_mismatch_is_listed() -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_event(broken(lambda e: e["data"].update(sequence=0, currency="euro")))
    assert len(raised.value.problems) == 2


@pytest.mark.parametrize("value", [b"{not json", b"[1, 2]", b""])
def test_a_record_that_is_not_a_json_object_is_refused(value: bytes) -> None:
    with pytest.raises(InvalidEvent, match="not a payment-status event"):
        parse_event(value)


def test_a_v2_event_is_refused_with_the_reason() -> None:
    value = broken(lambda e: e.update(dataschema="https://paystream.dev/schemas/payment-status-event.v2.json"))
    with pytest.raises(InvalidEvent) as raised:
        parse_event(value)
    assert "this library reads https://paystream.dev/schemas/payment-status-event.v1.json" in str(raised.value)


def test_an_added_optional_field_is_ignored_unless_strict() -> None:
    def add_fields(event: dict[str, Any]) -> None:
        event["data"]["shipping_country"] = "DE"
        event["traceparent"] = "00-abc-def-01"

    value = broken(add_fields)
    assert parse_event(value).position == Position(0, 2)
    with pytest.raises(InvalidEvent, match="Additional properties are not allowed"):
        parse_event(value, strict=True)
    # Lenient is not lax: a known field is still checked.
    with pytest.raises(InvalidEvent, match=r"\$.data.sequence"):
        parse_event(broken(lambda e: (add_fields(e), e["data"].update(sequence="2"))))


def test_real_state_documents_parse() -> None:
    raw = lifecycle()[-1]
    now = T0 + timedelta(hours=2)
    state = advance(None, observation(PaymentStatus.AUTHORIZED, "e1", 1, amount=1000, currency="EUR"), now).state
    record = PaymentRecord(T0.timestamp(), state, last_event=orjson.dumps(raw).decode(),
                           chain=PollChain(T0.timestamp(), 2, "r-2", version=2))
    parsed = parse_state(document(KEY, record, PollSchedule([60, 600], 3600), now))
    assert parsed.payment_key == KEY and parsed.event is not None
    assert parsed.event.position == Position(0, 4) and parsed.event.status == "disputed"
    assert parsed.polling is not None and parsed.polling.state == "active" and parsed.polling.next_poll_at
    assert (parsed.first_seen_at, parsed.parked, parsed.quarantined) == (T0, False, False)

    registered = parse_state(document(KEY, PaymentRecord(T0.timestamp(), polling_ended=("not_found", now.timestamp())),
                                      PollSchedule([60], 3600), now))
    assert registered.event is None
    assert registered.polling is not None and registered.polling.ended_reason == "not_found"


def test_a_state_document_with_a_broken_event_is_refused() -> None:
    raw = lifecycle()[0]
    raw["data"]["sequence"] = -1
    now = T0 + timedelta(hours=2)
    value = document(KEY, PaymentRecord(T0.timestamp(), last_event=orjson.dumps(raw).decode()),
                     PollSchedule([60], 3600), now)
    with pytest.raises(InvalidEvent, match=r"\$.event.data.sequence"):
        parse_state(value, where="payments.state.v1/0@3")
