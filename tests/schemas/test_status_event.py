"""The normalized CloudEvent (DESIGN §4.3) and its JSON Schema."""

from __future__ import annotations

import uuid
from copy import deepcopy
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from observation_factory import T0, at, obs

from schemas.event import (
    EVENT_CONTENT_TYPE,
    EVENT_DATASCHEMA,
    build_event,
    event_id,
    format_time,
    load_schema,
    parse_time,
    serialize_event,
)
from schemas.join import advance, fold
from schemas.status import PaymentStatus as P
from schemas.status import Source

VALIDATOR = Draft202012Validator(load_schema("payment-status-event"), format_checker=FormatChecker())
KEY = "stripe:eu-main:payment_intent:pi_1"
DATA_FIELDS = {
    "payment_key", "provider", "account", "object_type", "object_id", "order_ref", "status", "previous_status",
    "sequence", "epoch", "amount", "captured_amount", "refunded_amount", "disputed_amount", "currency",
    "agreement_ref", "authorization_expires_at", "risk", "provider_status", "reason_code", "source", "evidence",
    "occurred_at", "observed_at", "emitted_at",
}


def captured_event() -> dict[str, Any]:
    first = advance(None, obs(P.AUTHORIZED, "evt_1", occurred=0), at(2))
    second = advance(first.state, obs(P.CAPTURED, "evt_2", occurred=10, captures={"ch_1": 1000}), at(12))
    assert second.event is not None
    return second.event


def test_event_carries_exactly_the_cloudevents_attributes() -> None:
    event = captured_event()
    assert set(event) == {"specversion", "id", "source", "type", "subject", "time", "datacontenttype",
                          "dataschema", "data"}
    assert (event["specversion"], event["source"], event["type"]) == ("1.0", "paystream/stripe/eu-main",
                                                                      "payment.status.changed")
    assert (event["subject"], event["datacontenttype"], event["dataschema"]) == (KEY, "application/json",
                                                                                 EVENT_DATASCHEMA)


def test_event_data_has_exactly_the_designed_fields() -> None:
    data = captured_event()["data"]
    assert set(data) == DATA_FIELDS
    assert (data["status"], data["previous_status"], data["sequence"]) == ("captured", "authorized", 2)
    assert (data["amount"], data["captured_amount"], data["refunded_amount"], data["currency"]) == (
        1000, 1000, 0, "EUR")
    assert (data["source"], data["evidence"], data["order_ref"]) == ("push", ["evt_2"], "order-42")


def test_times_are_rfc3339_utc_with_z() -> None:
    event = captured_event()
    assert event["time"] == "2025-03-01T12:00:10Z"
    assert (event["data"]["observed_at"], event["data"]["emitted_at"]) == ("2025-03-01T12:00:11Z",
                                                                            "2025-03-01T12:00:12Z")


def test_event_id_is_uuid5_of_key_and_sequence() -> None:
    event = captured_event()
    assert event["id"] == event_id(KEY, 2)
    assert uuid.UUID(event["id"]).version == 5


def test_an_epoch_gives_every_sequence_a_new_id_and_epoch_zero_keeps_the_original_ids() -> None:
    # A rebuild raises the epoch: its sequence 1 must not reuse the id consumers already applied.
    assert event_id(KEY, 1, 0) == event_id(KEY, 1)
    assert len({event_id(KEY, 1, 0), event_id(KEY, 1, 1), event_id(KEY, 1, 2)}) == 3
    assert event_id(KEY, 1, 3) == str(uuid.uuid5(uuid.UUID("46868c99-0817-5c60-93b6-ae77039ed844"), f"{KEY}:3:1"))


def test_same_key_and_sequence_give_the_same_id() -> None:
    assert event_id(KEY, 7) == event_id(KEY, 7)


def test_other_sequence_or_key_gives_another_id() -> None:
    assert len({event_id(KEY, 1), event_id(KEY, 2), event_id(KEY + "x", 1)}) == 3


def test_event_id_namespace_is_pinned() -> None:
    # A changed namespace would silently renumber every event ever emitted: pin one known value.
    assert event_id("adyen:main:payment:8535296650153317", 1) == str(
        uuid.uuid5(uuid.UUID("46868c99-0817-5c60-93b6-ae77039ed844"), "adyen:main:payment:8535296650153317:1"))


def test_serialized_event_validates_against_the_schema() -> None:
    body = serialize_event(captured_event())
    assert isinstance(body, bytes)
    VALIDATOR.validate(orjson.loads(body))


def test_content_type_is_structured_cloudevents() -> None:
    assert EVENT_CONTENT_TYPE == "application/cloudevents+json"


def test_an_unnumbered_state_cannot_become_an_event() -> None:
    with pytest.raises(ValueError, match="nothing to emit"):
        build_event(fold([obs(P.PENDING, "e1")]), T0)


def test_format_time_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(T0.replace(tzinfo=None))


def test_parse_time_reads_what_format_time_writes() -> None:
    moment = at(0.123456)
    assert parse_time(format_time(moment)) == moment


def _mutated(path: list[str], value: object) -> dict[str, Any]:
    event = deepcopy(captured_event())
    target = event
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return event


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["extra"], 1),
        (["data", "extra"], 1),
        (["specversion"], "0.3"),
        (["type"], "payment.created"),
        (["data", "sequence"], 0),
        (["data", "captured_amount"], -1),
        (["data", "amount"], 10.5),
        (["data", "status"], "settled"),
        (["data", "status"], "active"),  # an agreement status in a payment event
        (["data", "source"], "webhook"),
        (["data", "currency"], "eur"),
        (["data", "evidence"], []),
        (["time"], "2025-03-01T12:00:10+00:00"),
        (["data", "emitted_at"], "2025-13-01T12:00:10Z"),  # matches the pattern, fails format checking
        (["id"], "not-a-uuid"),
    ],
)
def test_schema_rejects_events_outside_the_contract(path: list[str], value: object) -> None:
    with pytest.raises(ValidationError):
        VALIDATOR.validate(_mutated(path, value))


def test_schema_accepts_a_null_amount_and_order_ref() -> None:
    event = _mutated(["data", "amount"], None)
    event["data"]["order_ref"] = None
    VALIDATOR.validate(event)


def test_load_schema_accepts_the_file_name_too() -> None:
    assert load_schema("payment-status-event.schema.json") == load_schema("payment-status-event")


def test_load_schema_refuses_paths() -> None:
    with pytest.raises(ValueError, match="not a schema name"):
        load_schema("../pyproject")


def test_poll_source_is_reported_for_a_status_first_seen_by_a_poll() -> None:
    step = advance(None, obs(P.CAPTURED, "fetch_9", source=Source.POLL), at(5))
    assert step.event is not None
    assert step.event["data"]["source"] == "poll"
