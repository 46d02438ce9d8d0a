"""The normalized event on ``payments.status.v1`` (DESIGN §4.3): CloudEvents 1.0, structured JSON mode.

The event id is a UUIDv5 of ``{payment_key}:{sequence}`` (``{payment_key}:{epoch}:{sequence}`` from derivation
epoch 1 on): reprocessing the same observations yields the same ids, so consumers can dedupe on ``id`` across
replays and worker restarts; a rebuild that derives the stream again from scratch raises the epoch, so its
events never reuse an id that consumers already applied with different content.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from schemas.status import ObjectKind

if TYPE_CHECKING:
    from schemas.join import PaymentState

# Fixed forever: changing it would change every event id (it is uuid5(NAMESPACE_URL,
# "https://paystream.dev/events/payment-status"), written out so it cannot drift).
EVENT_ID_NAMESPACE = uuid.UUID("46868c99-0817-5c60-93b6-ae77039ed844")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes
EVENT_CONTENT_TYPE = "application/cloudevents+json"  # Kafka header / HTTP Content-Type of a whole event
DATA_CONTENT_TYPE = "application/json"
SPEC_VERSION = "1.0"
EVENT_DATASCHEMA = "https://paystream.dev/schemas/payment-status-event.v1.json"
EVENT_TYPES = {
    ObjectKind.PAYMENT: "payment.status.changed",
    ObjectKind.AGREEMENT: "agreement.status.changed",
}
SCHEMA_DIR = Path(__file__).parent


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix (microseconds only when present)."""
    if moment.tzinfo is UTC:  # the common case, without a conversion
        return moment.isoformat()[:-6] + "Z"
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timezone-aware datetime required: {moment!r}")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {text!r}")
    return moment.astimezone(UTC)


def event_id(payment_key: str, sequence: int, epoch: int = 0) -> str:
    """``str(uuid.uuid5(EVENT_ID_NAMESPACE, name))`` with name ``{payment_key}:{sequence}`` (epoch 0) or
    ``{payment_key}:{epoch}:{sequence}``, computed without the UUID object (RFC 4122 §4.3: SHA-1 of namespace +
    name, version 5, RFC 4122 variant)."""
    name = f"{payment_key}:{sequence}" if epoch == 0 else f"{payment_key}:{epoch}:{sequence}"
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def event_source(provider: str, account: str) -> str:
    return f"paystream/{provider}/{account}"


def _time_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def risk_view(signals: tuple[tuple[str, str, Any, str | None], ...]) -> dict[str, Any] | None:
    """The event's ``risk``: null when the payment never had a signal; else whether fulfillment should hold
    it (any signal open or confirmed) and every signal by id."""
    if not signals:
        return None
    items = [{"id": entry_id, "kind": kind, "state": str(state), "reason": reason}
             for entry_id, kind, state, reason in signals]
    return {"hold": any(item["state"] in ("open", "confirmed") for item in items), "signals": items}


def build_event(state: PaymentState, emitted_at: datetime) -> dict[str, Any]:
    """The CloudEvent for ``state`` as just numbered by :func:`schemas.join.advance`."""
    if state.status is None or state.sequence < 1 or state.occurred_at is None:
        raise ValueError(f"{state.payment_key}: nothing to emit ({state.status=}, {state.sequence=})")
    key = state.payment_key
    occurred_at = format_time(state.occurred_at)
    data = {
        "payment_key": key,
        "provider": state.provider,
        "account": state.account,
        "object_type": state.object_type,
        "object_id": state.object_id,
        "order_ref": state.order_ref,
        # str() of a StrEnum member is its value (and far cheaper than .value on this per-event path).
        "status": str(state.status),
        "previous_status": None if state.previous_status is None else str(state.previous_status),
        "sequence": state.sequence,
        "epoch": state.epoch,
        "amount": state.amount,
        "captured_amount": state.captured_amount,
        "refunded_amount": state.refunded_amount,
        "disputed_amount": state.disputed_amount,
        "currency": state.currency,
        "agreement_ref": state.agreement_ref,
        "authorization_expires_at": _time_or_none(state.authorization_expires_at),
        "risk": risk_view(state.risk),
        "provider_status": state.provider_status,
        "reason_code": state.reason_code,
        "source": None if state.source is None else str(state.source),
        "evidence": list(state.evidence),
        "occurred_at": occurred_at,
        "observed_at": _time_or_none(state.observed_at),
        "emitted_at": format_time(emitted_at),
    }
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(key, state.sequence, state.epoch),
        "source": event_source(state.provider, state.account),
        "type": EVENT_TYPES[state.kind],
        "subject": key,
        # CloudEvents `time` is when the occurrence happened: the provider time of the deciding
        # observation (keeps everything but data.emitted_at identical when reprocessed).
        "time": occurred_at,
        "datacontenttype": DATA_CONTENT_TYPE,
        "dataschema": EVENT_DATASCHEMA,
        "data": data,
    }


def serialize_event(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


@cache
def _read_schema(filename: str) -> str:
    return (SCHEMA_DIR / filename).read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in ``schemas/``: ``"payment-status-event"`` or its full file name."""
    filename = name if name.endswith(".json") else f"{name}.schema.json"
    if "/" in filename or "\\" in filename or filename.startswith("."):
        raise ValueError(f"not a schema name: {name!r}")
    document: dict[str, Any] = json.loads(_read_schema(filename))
    return document
