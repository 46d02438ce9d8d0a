"""processors/topology.Stages with fakes (no broker): what the intake and reconcile stages turn a record into,
the state they keep, and the dead letters they route.

The engine's state is a fake with ``get_bytes`` / ``set_bytes``; the record's position (for the dead-letter
headers) comes from a patched ``processors.topology.message_context``. :class:`FakeEngine` chains the stages
as the topology does: an intake's outputs on the inputs topic feed reconcile, with the payment key as the
state key.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from unittest import mock

import orjson
import pytest

from ingest.providers.routing import delivery_payment_key
from paystream.config import Settings
from paystream.dlq import (
    ERROR_CLASS,
    ERROR_MESSAGE,
    ERROR_REASON,
    FIRST_FAILURE_AT,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)
from processors import payment_inputs
from processors.payment_inputs import FetchInput, ObservationInput
from processors.payment_record import PaymentRecord
from processors.settings import ProcessorSettings
from processors.topology import RECORD, Output, Stages, TopicNames
from schemas.envelopes import FetchRequest, FetchResult, InboxEnvelope, ReplayMark, to_rfc3339
from schemas.event import EVENT_CONTENT_TYPE, event_id, parse_time

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NAMES = TopicNames(inbox="in", fetch_results="results", inputs="app-payment-inputs", status="status",
                   state="state", fetch_requests="requests", dlq="dlq")
GAPS_S = [60, 300, 900]


class FakeState:
    """The engine's per-key state as the reconcile stage uses it; counts writes."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.writes = 0

    def get_bytes(self, key: str, default: bytes | None = None) -> bytes | None:
        return self.values.get(key, default)

    def set_bytes(self, key: str, value: bytes) -> None:
        self.values[key] = value
        self.writes += 1


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FakeEngine:
    """The stage as the engine runs it: each record under its key's FakeState, redirected inputs fed back, every
    output kept by topic. ``message_context()`` tells the stage the record's topic."""

    stages: Stages
    states: dict[bytes, FakeState] = field(default_factory=dict)
    out: dict[str, list[Output]] = field(default_factory=dict)
    offsets: itertools.count[int] = field(default_factory=itertools.count)

    def inbox(self, envelope: InboxEnvelope, key: bytes | None = None) -> None:
        self.record(NAMES.inbox, envelope.key if key is None else key, envelope.to_bytes())

    def fetch_result(self, result: FetchResult) -> None:
        self.record(NAMES.fetch_results, result.key, result.to_bytes())

    def record(self, topic: str, key: bytes, value: bytes) -> list[Output]:
        where = SimpleNamespace(topic=topic, partition=0, offset=next(self.offsets))
        state = self.states.setdefault(key, FakeState())
        with mock.patch("processors.topology.message_context", lambda: where):
            outputs = self.stages.process(value, key, 0, [], state)  # type: ignore[arg-type]
        for output in outputs:
            self.out.setdefault(output.topic, []).append(output)
        for output in outputs:
            if output.topic == NAMES.inputs:  # a redirect: it comes back round keyed by its payment
                assert output.key is not None
                self.record(NAMES.inputs, output.key, output.value)
        return outputs

    def events(self, key: str | None = None) -> list[dict[str, Any]]:
        return [orjson.loads(o.value) for o in self.out.get(NAMES.status, [])
                if key is None or o.key == key.encode()]

    def requests(self, key: str | None = None) -> list[FetchRequest]:
        return [FetchRequest.from_bytes(o.value) for o in self.out.get(NAMES.fetch_requests, [])
                if key is None or o.key == key.encode()]


def stages(clock: Clock | None = None, **conf: Any) -> Stages:
    return Stages(Settings(), ProcessorSettings(poll_schedule_s=GAPS_S, **conf), NAMES, clock=clock or Clock())


@pytest.fixture
def at_position() -> Iterator[SimpleNamespace]:
    """The record in hand, as message_context() tells it."""
    where = SimpleNamespace(topic="in", partition=2, offset=41)
    with mock.patch("processors.topology.message_context", lambda: where):
        yield where


def adyen(psp: str, code: str, value: int, minute: int, *, original: str | None = None,
          delivery: str | None = None, received: datetime = T0, replay: bool = False) -> InboxEnvelope:
    item: dict[str, Any] = {"pspReference": psp, "merchantAccountCode": "M", "merchantReference": "o-1",
                            "amount": {"currency": "EUR", "value": value}, "eventCode": code, "success": "true",
                            "eventDate": f"2024-05-01T10:{minute:02d}:00+00:00"}
    if original:
        item["originalReference"] = original
    return InboxEnvelope(provider="adyen", account="main", delivery_id=delivery or f"{psp}:{code}:true",
                         kind="event", received_at=to_rfc3339(received), body=orjson.dumps(item),
                         replay=ReplayMark(to_rfc3339(received), "kafka://in/0/1") if replay else None)


def lifecycle(payment: str = "P1") -> list[InboxEnvelope]:
    return [adyen(payment, "AUTHORISATION", 1000, 1), adyen(f"{payment}C", "CAPTURE", 1000, 2, original=payment),
            adyen(f"{payment}R", "REFUND", 300, 3, original=payment)]


def stripe_pending(pi: str = "pi_1", received: datetime = T0) -> InboxEnvelope:
    body = {"id": f"evt_{pi}", "object": "event", "type": "payment_intent.created", "created": 1714550000,
            "data": {"object": {"id": pi, "object": "payment_intent", "amount": 1500, "amount_received": 0,
                                "currency": "eur", "status": "requires_payment_method", "created": 1714550000}}}
    return InboxEnvelope(provider="stripe", account="main", delivery_id=f"evt_{pi}", kind="event",
                         received_at=to_rfc3339(received), body=orjson.dumps(body))


def stripe_poll(request: FetchRequest, fetched: datetime, outcome: str = "ok", status: str = "requires_payment_method",
                fetch_id: str = "f-1") -> FetchResult:
    intent = {"id": request.object_id, "object": "payment_intent", "amount": 1500, "amount_received": 0,
              "currency": "eur", "status": status, "created": 1714550000}
    return FetchResult(payment_key=request.payment_key, provider="stripe", account="main",
                       object_type="payment_intent", object_id=request.object_id, fetch_id=fetch_id,
                       request_id=request.request_id, reason=request.reason, fetched_at=to_rfc3339(fetched),
                       outcome=outcome, http_status=200 if outcome == "ok" else 503,  # type: ignore[arg-type]
                       body=orjson.dumps(intent) if outcome == "ok" else b"", attempt=request.attempt)


def summary(event: dict[str, Any]) -> tuple[Any, ...]:
    data = event["data"]
    return (data["sequence"], data["status"], data["previous_status"], data["amount"], data["captured_amount"],
            data["refunded_amount"])


LIFECYCLE = [(1, "authorized", None, 1000, 0, 0), (2, "captured", "authorized", 1000, 1000, 0),
             (3, "partially_refunded", "captured", 1000, 1000, 300)]
ADYEN_KEY = "adyen:main:payment:P1"
STRIPE_KEY = "stripe:main:payment_intent:pi_1"


# --- one stage: routing and redirects --------------------------------------------------------------------


def routed(envelope: InboxEnvelope) -> InboxEnvelope:
    """As ingest publishes it: keyed by the payment it is about (ingest.providers.routing)."""
    return replace(envelope, payment_key=delivery_payment_key(envelope.provider, envelope.account, envelope.kind,
                                                              envelope.body, None))


def test_ingest_routes_a_delivery_to_its_payment_and_the_stage_applies_it_in_place() -> None:
    envelope = routed(adyen("P1", "AUTHORISATION", 1000, 1))
    assert envelope.key == ADYEN_KEY.encode()
    engine = FakeEngine(stages())
    outputs = engine.record(NAMES.inbox, envelope.key, envelope.to_bytes())
    assert NAMES.inputs not in engine.out  # nothing redirected: one pass, one record read and written
    assert [o.topic for o in outputs] == [NAMES.status, NAMES.state]
    assert engine.states[ADYEN_KEY.encode()].writes == 1


def test_a_record_keyed_by_its_delivery_is_redirected_to_its_payment_and_applied_there() -> None:
    # A replay of a record published before the routing (keyed provider:account:delivery_id).
    envelope = adyen("P1", "AUTHORISATION", 1000, 1)
    engine = FakeEngine(stages())
    engine.inbox(envelope)
    (redirect,) = engine.out[NAMES.inputs]
    assert redirect.key == ADYEN_KEY.encode()
    item = payment_inputs.decode(redirect.value)
    assert isinstance(item, ObservationInput) and item.dedupe_id == "P1:AUTHORISATION:true#0"
    assert [summary(e) for e in engine.events()] == LIFECYCLE[:1]
    assert envelope.key not in engine.states or engine.states[envelope.key].writes == 0


def test_a_refund_fetched_under_its_own_id_is_applied_under_its_charge() -> None:
    refund_key = "amazon_pay:eu:refund:R1"
    body = {"refundId": "R1", "chargeId": "C1", "refundAmount": {"amount": "5.00", "currencyCode": "EUR"},
            "statusDetails": {"state": "Refunded", "lastUpdatedTimestamp": "20240501T100000Z"},
            "creationTimestamp": "20240501T100000Z"}
    result = FetchResult(payment_key=refund_key, provider="amazon_pay", account="eu", object_type="refund",
                         object_id="R1", fetch_id="f-1", request_id="sns-1:fetch", reason="thin_push",
                         fetched_at=to_rfc3339(T0), outcome="ok", http_status=200, body=orjson.dumps(body))
    engine = FakeEngine(stages())
    engine.fetch_result(result)
    assert [o.key for o in engine.out[NAMES.inputs]] == [b"amazon_pay:eu:charge:C1"]
    record = PaymentRecord.from_bytes(engine.states[b"amazon_pay:eu:charge:C1"].values[RECORD])
    assert record.state is not None and record.state.refunded_amount == 500
    assert engine.states[refund_key.encode()].writes == 0  # the polled marker of a thin-push fetch changes nothing


def test_a_fetch_result_applies_its_observations_then_the_polled_marker_in_one_write() -> None:
    clock = Clock()
    engine = FakeEngine(stages(clock))
    engine.inbox(routed(stripe_pending(received=T0)))
    (first,) = engine.requests()
    clock.now = T0 + timedelta(seconds=61)
    writes = engine.states[STRIPE_KEY.encode()].writes
    engine.fetch_result(stripe_poll(first, clock.now, status="requires_action", fetch_id="f-ra"))
    assert engine.states[STRIPE_KEY.encode()].writes == writes + 1
    assert [e["data"]["status"] for e in engine.events()] == ["pending", "requires_action"]
    assert [r.attempt for r in engine.requests()] == [1, 1]  # news restarted the chain


# --- dead letters ------------------------------------------------------------------------------------------


def dead_letter_headers(output: Output) -> dict[str, bytes]:
    assert output.topic == NAMES.dlq
    return dict(output.headers or [])


@pytest.mark.parametrize(("value", "error_class", "reason"), [
    (b"not json", b"NormalizationError", b"malformed_envelope"),
    (b'{"provider": "adyen"}', b"NormalizationError", b"malformed_envelope"),
    (adyen("U1", "DONATION", 5, 1).to_bytes(), b"UnknownProviderStatus", b"unknown_event_type"),
    (InboxEnvelope(provider="paypal", account="a", delivery_id="d", kind="event", received_at=to_rfc3339(T0),
                   body=b"{}").to_bytes(), b"NormalizationError", b"unknown_provider"),
    (InboxEnvelope(provider="adyen", account="a", delivery_id="d", kind="thin", received_at=to_rfc3339(T0),
                   body=b"{}").to_bytes(), b"NormalizationError", b"unexpected_record"),
])
def test_an_inbox_record_the_stage_cannot_read_goes_to_the_dlq_unchanged(
    at_position: SimpleNamespace, value: bytes, error_class: bytes, reason: bytes,
) -> None:
    at_position.topic = NAMES.inbox
    original = [("traceparent", b"00-abc"), (FIRST_FAILURE_AT, b"2024-04-01T00:00:00.000Z")]
    state = FakeState()
    (output,) = stages().process(value, b"adyen:main:d", 0, original, state)  # type: ignore[arg-type]
    headers = dead_letter_headers(output)
    assert (output.key, output.value) == (b"adyen:main:d", value)
    assert (headers[ERROR_CLASS], headers[ERROR_REASON]) == (error_class, reason)
    assert (headers[SOURCE_TOPIC], headers[SOURCE_PARTITION], headers[SOURCE_OFFSET]) == (NAMES.inbox.encode(),
                                                                                           b"2", b"41")
    assert headers["traceparent"] == b"00-abc" and headers[ERROR_MESSAGE]
    assert headers[FIRST_FAILURE_AT] == b"2024-04-01T00:00:00.000Z"  # a replayed dead letter keeps its first
    assert state.writes == 0


def test_a_dead_letter_s_first_failure_is_the_stage_s_clock(at_position: SimpleNamespace) -> None:
    at_position.topic = NAMES.fetch_results
    (output,) = stages(Clock(T0 + timedelta(hours=1))).process(b"{}", b"k", 0, None, FakeState())  # type: ignore[arg-type]
    assert dead_letter_headers(output)[FIRST_FAILURE_AT] == b"2024-05-01T13:00:00.000Z"


def test_a_redirected_input_it_cannot_read_goes_to_the_dlq_and_leaves_the_state_alone(
    at_position: SimpleNamespace,
) -> None:
    engine = FakeEngine(stages())
    engine.inbox(routed(adyen("P1", "AUTHORISATION", 1000, 1)))
    state = FakeState()
    state.values = dict(engine.states[ADYEN_KEY.encode()].values)
    at_position.topic = NAMES.inputs
    for value in (b"garbage", b'{"v": 1, "kind": "teleport"}'):
        (output,) = engine.stages.process(value, ADYEN_KEY.encode(), 0, [], state)  # type: ignore[arg-type]
        headers = dead_letter_headers(output)
        assert (output.key, output.value, headers[SOURCE_TOPIC]) == (ADYEN_KEY.encode(), value, NAMES.inputs.encode())
        assert headers[ERROR_REASON] == b"malformed_payment_input"
    assert state.writes == 0


# --- reconcile -----------------------------------------------------------------------------------------------


def state_docs(engine: FakeEngine) -> list[dict[str, Any]]:
    return [orjson.loads(o.value) for o in engine.out.get(NAMES.state, [])]


def test_an_event_goes_to_the_status_topic_and_inside_the_state_document() -> None:
    clock = Clock(T0 + timedelta(seconds=3))
    engine = FakeEngine(stages(clock))
    engine.inbox(adyen("P1", "AUTHORISATION", 1000, 1, received=T0))
    (status,), (state,) = engine.out[NAMES.status], engine.out[NAMES.state]
    assert status.key == state.key == ADYEN_KEY.encode()
    assert status.headers == [("content-type", EVENT_CONTENT_TYPE.encode())]
    assert state.headers == [("content-type", b"application/json")]
    event, doc = orjson.loads(status.value), orjson.loads(state.value)
    assert doc["event"] == event  # the latest event, as emitted
    assert (doc["payment_key"], doc["status"], doc["first_seen_at"], doc["polling"], doc["quarantined"]) == (
        ADYEN_KEY, "authorized", to_rfc3339(clock.now), None, None)
    assert event["id"] == event_id(ADYEN_KEY, 1)
    assert parse_time(event["data"]["emitted_at"]) == clock.now  # the stage's clock
    assert parse_time(event["data"]["observed_at"]) == T0  # the receipt
    stored = PaymentRecord.from_bytes(engine.states[ADYEN_KEY.encode()].values[RECORD])
    assert stored.first_seen == clock.now.timestamp() and stored.state is not None and stored.state.sequence == 1


def test_first_seen_stays_the_time_the_payment_was_first_heard_of() -> None:
    clock = Clock()
    engine = FakeEngine(stages(clock))
    for step, delivery in enumerate(lifecycle()):
        clock.now = T0 + timedelta(minutes=step)
        engine.inbox(delivery)
    assert {doc["first_seen_at"] for doc in state_docs(engine)} == {to_rfc3339(T0)}


def test_a_payment_without_an_event_has_a_state_document_with_its_polling() -> None:
    # Issue 18: registered and thin-pushed payments (no status yet) are visible in payments.state.v1.
    engine = FakeEngine(stages())
    engine.inbox(amazon_thin())
    (doc,) = state_docs(engine)
    assert (doc["event"], doc["status"], doc["polling"]) == (
        None, None, {"state": "active", "poll": 1, "next_poll_at": to_rfc3339(T0 + timedelta(seconds=60))})


def test_a_lifecycle_in_order_gives_one_event_per_transition() -> None:
    engine = FakeEngine(stages())
    for delivery in lifecycle():
        engine.inbox(delivery)
    assert [summary(e) for e in engine.events()] == LIFECYCLE
    assert NAMES.fetch_requests not in engine.out  # Adyen is not pollable


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_any_order_and_redelivery_ends_in_the_same_state_with_clean_sequences(order: tuple[int, ...]) -> None:
    engine = FakeEngine(stages())
    deliveries = lifecycle()
    for index in (*order, *order):  # every delivery twice
        engine.inbox(deliveries[index])
    events = engine.events()

    def outcome(event: dict[str, Any]) -> tuple[Any, ...]:  # status and amounts
        return summary(event)[1:2] + summary(event)[3:]

    assert outcome(events[-1]) == ("partially_refunded", 1000, 1000, 300)
    assert [e["data"]["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert all(outcome(a) != outcome(b) for a, b in itertools.pairwise(events))
    assert [e["data"]["previous_status"] for e in events[1:]] == [e["data"]["status"] for e in events[:-1]]
    # The state document follows the events; before the first status it shows the payment parked.
    docs = state_docs(engine)
    assert [doc["event"] for doc in docs if doc["event"] is not None] == events
    assert all(doc["parked"] for doc in docs if doc["event"] is None)


def test_a_redelivered_push_changes_nothing_and_is_not_written_again() -> None:
    engine = FakeEngine(stages())
    delivery = adyen("P1", "AUTHORISATION", 1000, 1)
    engine.inbox(delivery)
    state = engine.states[ADYEN_KEY.encode()]
    writes, outputs = state.writes, sum(map(len, engine.out.values()))
    engine.inbox(delivery)
    assert state.writes == writes
    assert sum(map(len, engine.out.values())) == outputs + 1  # only the input itself


def amazon_thin(object_type: str = "CHARGE", object_id: str = "C1", delivery: str = "sns-1") -> InboxEnvelope:
    ipn = {"NotificationVersion": "V2", "ObjectType": object_type, "ObjectId": object_id, "NotificationId": "n",
           "NotificationType": "STATE_CHANGE"}
    sns = {"Type": "Notification", "MessageId": delivery, "Message": orjson.dumps(ipn).decode()}
    return InboxEnvelope(provider="amazon_pay", account="eu", delivery_id=delivery, kind="thin",
                         received_at=to_rfc3339(T0), body=orjson.dumps(sns))


def test_a_thin_push_asks_for_one_fetch_per_delivery_and_arms_a_stale_poll() -> None:
    engine = FakeEngine(stages())
    thin = amazon_thin()
    engine.inbox(thin)
    engine.inbox(thin)
    fetch, stale = engine.requests()
    assert (fetch.reason, fetch.request_id, fetch.not_before) == ("thin_push", "sns-1:fetch", to_rfc3339(T0))
    assert (stale.reason, stale.attempt, stale.not_before) == ("stale", 1, to_rfc3339(T0 + timedelta(seconds=60)))
    assert engine.events() == []


# --- the stale-poll chain ------------------------------------------------------------------------------------


def test_a_pending_payment_s_poll_chain_moves_on_with_each_armed_poll_s_result() -> None:
    clock = Clock()
    engine = FakeEngine(stages(clock))
    engine.inbox(stripe_pending(received=T0))
    (first,) = engine.requests()
    assert (first.request_id, first.attempt, first.not_before) == (
        f"{STRIPE_KEY}:stale:{T0.timestamp():.6f}:1", 1, to_rfc3339(T0 + timedelta(seconds=60)))
    clock.now = T0 + timedelta(seconds=61)
    failed = stripe_poll(first, clock.now, outcome="timeout")
    engine.fetch_result(failed)
    engine.fetch_result(failed)  # published again: the chain is already past it
    second = engine.requests()[1:]
    assert [(r.request_id, r.attempt, r.not_before) for r in second] == [
        (f"{STRIPE_KEY}:stale:{T0.timestamp():.6f}:2", 2, to_rfc3339(T0 + timedelta(seconds=360)))]
    assert len(engine.events()) == 1


def test_an_outcome_ends_the_chain() -> None:
    clock = Clock()
    engine = FakeEngine(stages(clock))
    engine.inbox(stripe_pending(received=T0))
    (first,) = engine.requests()
    clock.now = T0 + timedelta(seconds=61)
    engine.fetch_result(stripe_poll(first, clock.now, status="succeeded", fetch_id="f-ok"))
    assert [e["data"]["status"] for e in engine.events()] == ["pending", "captured"]
    assert len(engine.requests()) == 1  # no poll after the outcome
    record = PaymentRecord.from_bytes(engine.states[STRIPE_KEY.encode()].values[RECORD])
    assert record.chain is None


def test_a_poll_that_confirms_the_pushed_status_arms_the_next_poll() -> None:
    clock = Clock()
    engine = FakeEngine(stages(clock))
    engine.inbox(stripe_pending(received=T0))
    (first,) = engine.requests()
    clock.now = T0 + timedelta(seconds=61)
    engine.fetch_result(stripe_poll(first, clock.now))  # the armed poll fired: still pending, nothing new
    assert len(engine.events()) == 1
    second = engine.requests()[1:]
    # DESIGN §5 / processors/scheduling.py: the armed poll's result arms the next (poll 2, 5 min after poll 1).
    assert [(r.attempt, r.not_before) for r in second] == [(2, to_rfc3339(T0 + timedelta(seconds=360)))]


def test_polls_are_armed_only_for_pollable_providers_awaiting_news() -> None:
    engine = FakeEngine(stages())
    for delivery in lifecycle():  # Adyen: push only
        engine.inbox(delivery)
    engine.inbox(stripe_pending())
    assert {r.payment_key for r in engine.requests()} == {STRIPE_KEY}


def test_a_duplicate_fetch_input_asks_for_nothing() -> None:
    engine = FakeEngine(stages())
    item = FetchInput(FetchRequest(payment_key=STRIPE_KEY, provider="stripe", account="main",
                                   object_type="payment_intent", object_id="pi_1", reason="registered",
                                   not_before="x", requested_at="x", request_id="sync:r:registered"),
                      "sync:r:registered")
    state = FakeState()
    engine.states[STRIPE_KEY.encode()] = state
    first = engine.record(NAMES.inputs, STRIPE_KEY.encode(), payment_inputs.encode(item))
    again = engine.record(NAMES.inputs, STRIPE_KEY.encode(), payment_inputs.encode(item))
    assert [FetchRequest.from_bytes(o.value).reason for o in first if o.topic == NAMES.fetch_requests] == [
        "registered", "stale"]
    assert again == []


def test_an_unparseable_poll_result_goes_to_the_dlq_and_the_chain_still_moves_on(at_position: SimpleNamespace) -> None:
    clock = Clock()
    engine = FakeEngine(stages(clock))
    engine.inbox(stripe_pending(received=T0))
    (first,) = engine.requests()
    clock.now = T0 + timedelta(seconds=61)
    broken = replace(stripe_poll(first, clock.now), body=b'{"object": "payment_intent", "id": "pi_1"}')
    engine.fetch_result(broken)
    (dead,) = engine.out[NAMES.dlq]
    assert dead.value == broken.to_bytes()
    assert [(r.attempt, r.reason) for r in engine.requests()[1:]] == [(2, "stale")]


def test_a_record_past_the_size_cap_quarantines_the_payment_and_the_partition_goes_on(
        at_position: SimpleNamespace) -> None:
    # Issue 18: a storm of distinct events on one payment grew its record past the broker's limit and
    # restarted the engine onto the same input forever. Past max_record_bytes the payment is quarantined.
    # Distinct refunds: the one part of a record that grows with distinct observations (a ledger per id).
    engine = FakeEngine(stages(max_record_bytes=16 * 1024))
    engine.inbox(adyen("P1", "AUTHORISATION", 1000, 0))
    for n in range(400):
        engine.inbox(adyen(f"P1R{n}", "REFUND", 1, n % 60, original="P1", delivery=f"d-{n}"))
    record = PaymentRecord.from_bytes(engine.states[ADYEN_KEY.encode()].values[RECORD])
    assert record.quarantine is not None and record.quarantine.reason == "record_size_cap"
    # The last record under the cap, plus the quarantine flag.
    assert len(engine.states[ADYEN_KEY.encode()].values[RECORD]) <= 16 * 1024 + 256
    dead = engine.out[NAMES.dlq]
    assert dead and {dict(o.headers or [])[ERROR_REASON] for o in dead} == {b"payment_quarantined"}
    assert state_docs(engine)[-1]["quarantined"]["reason"] == "record_size_cap"
    engine.inbox(lifecycle("P2")[0])  # another payment of the same partition still flows
    assert engine.events("adyen:main:payment:P2")
