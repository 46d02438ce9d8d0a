"""Typed, immutable views of ``payments.status.v1`` events and ``payments.state.v1`` documents.

:func:`parse_event` and :func:`parse_state` validate a record's value against the published JSON Schema
(:mod:`paystream.consume.schema`) before building the objects, so a consumer never acts on a half-read event:
anything that does not match raises :class:`InvalidEvent` naming the record and every mismatch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from paystream.consume.schema import EVENT_DATASCHEMA, EVENT_SCHEMA_FILE, STATE_SCHEMA_FILE, validator
from paystream.errors import PaystreamError

PAYMENT_EVENT = "payment.status.changed"
AGREEMENT_EVENT = "agreement.status.changed"
_MAX_ERRORS = 5
_MAX_MESSAGE = 200
_FRACTION = re.compile(r"\.(\d{6})\d+")  # datetime reads at most microseconds


class InvalidEvent(PaystreamError, ValueError):
    """A record that is not a valid v1 event (or state document). ``problems`` lists each mismatch as
    ``path: message``; ``where`` names the record (topic/partition@offset) when the caller knows it."""

    def __init__(self, what: str, problems: list[str], *, where: str | None = None) -> None:
        self.problems = tuple(problems)
        self.where = where
        shown = "; ".join(problems[:_MAX_ERRORS]) + (f"; and {len(problems) - _MAX_ERRORS} more"
                                                     if len(problems) > _MAX_ERRORS else "")
        super().__init__(f"{where + ': ' if where else ''}{what}: {shown}")


class Position(NamedTuple):
    """Where an event stands in its payment's stream: compare positions, never sequences alone (a rebuild
    starts a new epoch whose sequences begin at 1 again)."""

    epoch: int
    sequence: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.sequence}"


@dataclass(frozen=True, slots=True)
class RiskSignal:
    id: str
    kind: str  # early_fraud_warning, review, fraud_report, manual_review
    state: str  # open, cleared, confirmed
    reason: str | None


@dataclass(frozen=True, slots=True)
class Risk:
    hold: bool  # any signal open or confirmed: hold the shipment
    signals: tuple[RiskSignal, ...]


@dataclass(frozen=True, slots=True)
class EventData:
    """``data`` of the event; field by field the JSON Schema's (amounts in minor units)."""

    payment_key: str
    provider: str
    account: str
    object_type: str
    object_id: str
    order_ref: str | None
    status: str
    previous_status: str | None
    sequence: int
    epoch: int
    amount: int | None
    captured_amount: int | None
    refunded_amount: int | None
    disputed_amount: int | None
    currency: str | None
    agreement_ref: str | None
    authorization_expires_at: datetime | None
    risk: Risk | None
    provider_status: str | None
    reason_code: str | None
    source: str  # how paystream learned it: push, poll, sync, replay, manual
    evidence: tuple[str, ...]
    occurred_at: datetime
    observed_at: datetime
    emitted_at: datetime


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One ``payments.status.v1`` event (a CloudEvent); ``data`` holds the payment."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: EventData

    @property
    def payment_key(self) -> str:
        return self.data.payment_key

    @property
    def position(self) -> Position:
        return Position(self.data.epoch, self.data.sequence)

    @property
    def status(self) -> str:
        return self.data.status

    @property
    def is_agreement(self) -> bool:
        return self.type == AGREEMENT_EVENT


@dataclass(frozen=True, slots=True)
class Polling:
    state: str  # active, ended
    next_poll_at: datetime | None
    ended_reason: str | None  # outcome, not_found, expired, horizon


@dataclass(frozen=True, slots=True)
class StateDocument:
    """One ``payments.state.v1`` value: the payment's latest event (None before its first) and what
    paystream knows of it besides."""

    payment_key: str
    first_seen_at: datetime
    updated_at: datetime
    parked: bool
    polling: Polling | None
    quarantined: bool
    event: StatusEvent | None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(_FRACTION.sub(r".\1", text)).astimezone(UTC)


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else _time(text)


def _document(value: bytes | str | Mapping[str, Any], what: str, where: str | None) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(what, [f"not JSON ({exc})"], where=where) from exc
    if not isinstance(document, dict):
        raise InvalidEvent(what, [f"a JSON {type(document).__name__}, not an object"], where=where)
    return document


def _problems(checker: Draft202012Validator, document: Mapping[str, Any], prefix: str = "$") -> list[str]:
    problems = []
    for error in sorted(checker.iter_errors(document), key=lambda error: list(error.absolute_path)):
        error = best_match([error])  # the branch of an anyOf that came closest, not "valid under none"
        message = error.message if len(error.message) <= _MAX_MESSAGE else error.message[:_MAX_MESSAGE] + "..."
        problems.append(f"{prefix}{error.json_path[1:]}: {message}")
    return problems


def _check_version(document: Mapping[str, Any], where: str | None) -> None:
    dataschema = document.get("dataschema")
    if dataschema is not None and dataschema != EVENT_DATASCHEMA:
        raise InvalidEvent("not a v1 payment-status event", [
            f"dataschema is {dataschema!r}; this library reads {EVENT_DATASCHEMA} (a v2 comes on its own topic, "
            "docs/consumers.md)"], where=where)


def _risk(raw: Mapping[str, Any] | None) -> Risk | None:
    if raw is None:
        return None
    return Risk(hold=raw["hold"], signals=tuple(
        RiskSignal(id=s["id"], kind=s["kind"], state=s["state"], reason=s["reason"]) for s in raw["signals"]))


def _build_event(document: Mapping[str, Any]) -> StatusEvent:
    d = document["data"]
    data = EventData(
        payment_key=d["payment_key"], provider=d["provider"], account=d["account"], object_type=d["object_type"],
        object_id=d["object_id"], order_ref=d["order_ref"], status=d["status"], previous_status=d["previous_status"],
        sequence=d["sequence"], epoch=d["epoch"], amount=d["amount"], captured_amount=d["captured_amount"],
        refunded_amount=d["refunded_amount"], disputed_amount=d["disputed_amount"], currency=d["currency"],
        agreement_ref=d["agreement_ref"], authorization_expires_at=_optional_time(d["authorization_expires_at"]),
        risk=_risk(d["risk"]), provider_status=d["provider_status"], reason_code=d["reason_code"], source=d["source"],
        evidence=tuple(d["evidence"]), occurred_at=_time(d["occurred_at"]), observed_at=_time(d["observed_at"]),
        emitted_at=_time(d["emitted_at"]),
    )
    if document["subject"] != data.payment_key:
        raise InvalidEvent("inconsistent event", [f"subject {document['subject']!r} is not data.payment_key "
                                                  f"{data.payment_key!r}"])
    return StatusEvent(id=document["id"], source=document["source"], type=document["type"],
                       subject=document["subject"], time=_time(document["time"]), data=data)


def parse_event(value: bytes | str | Mapping[str, Any], *, strict: bool = False,
                where: str | None = None) -> StatusEvent:
    """A ``payments.status.v1`` record value as a :class:`StatusEvent`. ``strict`` also rejects fields the
    published schema does not list (by default they are ignored: additive v1 fields)."""
    document = _document(value, "not a payment-status event", where)
    _check_version(document, where)
    problems = _problems(validator(EVENT_SCHEMA_FILE, strict=strict), document)
    if problems:
        raise InvalidEvent("not a valid payment-status event", problems, where=where)
    try:
        return _build_event(document)
    except InvalidEvent as exc:
        raise InvalidEvent("not a valid payment-status event", list(exc.problems), where=where) from None


def parse_state(value: bytes | str | Mapping[str, Any], *, strict: bool = False,
                where: str | None = None) -> StateDocument:
    """A ``payments.state.v1`` record value as a :class:`StateDocument`."""
    document = _document(value, "not a payment-state document", where)
    event = document.get("event")
    problems = []
    if isinstance(event, Mapping):  # checked on its own: its errors then name the field, not "event"
        _check_version(event, where)
        problems = _problems(validator(EVENT_SCHEMA_FILE, strict=strict), event, "$.event")
        document = {**document, "event": None}
    problems += _problems(validator(STATE_SCHEMA_FILE, strict=strict), document)
    if problems:
        raise InvalidEvent("not a valid payment-state document", problems, where=where)
    raw_polling = document["polling"]
    polling = None if raw_polling is None else Polling(
        state=raw_polling["state"], next_poll_at=_optional_time(raw_polling.get("next_poll_at")),
        ended_reason=raw_polling.get("reason"))
    try:
        parsed = None if event is None else _build_event(event)
    except InvalidEvent as exc:
        raise InvalidEvent("not a valid payment-state document", list(exc.problems), where=where) from None
    if parsed is not None and parsed.payment_key != document["payment_key"]:
        raise InvalidEvent("inconsistent payment-state document", [
            f"event of {parsed.payment_key!r} under payment_key {document['payment_key']!r}"], where=where)
    return StateDocument(payment_key=document["payment_key"], first_seen_at=_time(document["first_seen_at"]),
                         updated_at=_time(document["updated_at"]), parked=document["parked"], polling=polling,
                         quarantined=document["quarantined"] is not None, event=parsed)
