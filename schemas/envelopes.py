"""The records on the internal topics (DESIGN §4.2): inbox envelopes, fetch requests and fetch results.

Each is a frozen dataclass with ``to_bytes`` / ``from_bytes`` (orjson). Raw provider bytes travel base64
encoded so they stay byte-exact whatever they contain. These shapes are contracts between processes:
change them only with a new ``v``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from paystream.errors import NormalizationError

DeliveryKind = Literal["event", "thin", "hint", "sync"]
FetchReason = Literal["thin_push", "hint", "stale", "sweep", "registered", "manual"]
FetchOutcome = Literal["ok", "not_found", "rate_limited", "server_error", "client_error", "timeout",
                       "circuit_open", "unsupported"]


def to_rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, trailing Z: the one time format on every topic."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_rfc3339(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _encode_extra(value: object) -> object:
    """orjson ``default``: raw bytes travel as base64; mappings as plain dicts."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _dumps(record: object) -> bytes:
    # orjson serializes dataclasses natively (no deep copy, unlike dataclasses.asdict): this is the
    # ingest hot path.
    return orjson.dumps(record, default=_encode_extra)


def _loads(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NormalizationError(f"{what}: not JSON: {exc}", reason="malformed_envelope") from exc
    if not isinstance(value, dict):
        raise NormalizationError(f"{what}: not a JSON object", reason="malformed_envelope")
    return value


@dataclass(frozen=True, slots=True)
class ReplayMark:
    """Set on records that `paystream replay` put back into the inbox."""

    replayed_at: str
    origin: str  # "s3://bucket/key#line" or "kafka://topic/partition/offset"
    reverified: bool = False


@dataclass(frozen=True, slots=True)
class InboxEnvelope:
    """A verified raw delivery (value of ``payments.inbox.v1``), keyed by the payment it is about
    (:func:`ingest.providers.routing.delivery_payment_key`), or ``provider:account:delivery_id`` when it names
    none."""

    provider: str
    account: str
    delivery_id: str
    kind: DeliveryKind
    received_at: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    verification: Mapping[str, Any] = field(default_factory=dict)  # {"verifier", "key_id", "ok"}
    object_ids: Mapping[str, str] = field(default_factory=dict)
    replay: ReplayMark | None = None
    # The payment the delivery is about, as ingest routed it: the record's key.
    payment_key: str | None = None
    v: int = 1

    @property
    def key(self) -> bytes:
        if self.payment_key is not None:
            return self.payment_key.encode()
        return f"{self.provider}:{self.account}:{self.delivery_id}".encode()

    def to_bytes(self) -> bytes:
        return _dumps(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> InboxEnvelope:
        record = _loads(raw, "inbox envelope")
        try:
            replay = record.pop("replay", None)
            record["body"] = base64.b64decode(record["body"], validate=True)
            return cls(**record, replay=ReplayMark(**replay) if replay else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise NormalizationError(f"inbox envelope: {exc}", reason="malformed_envelope") from exc


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """What to fetch and why (value of ``payments.fetch.requests.v1``, key = payment key)."""

    payment_key: str
    provider: str
    account: str
    object_type: str
    object_id: str
    reason: FetchReason
    not_before: str
    # When the cause reached us: a push's receipt time (so a fetch sent after it covers a later copy of the
    # same push), the processing time for polls the processor arms itself.
    requested_at: str
    request_id: str  # deterministic where the cause is (e.g. f"{evidence_id}:fetch"), so re-sends dedupe
    attempt: int = 1
    evidence_id: str | None = None  # the delivery/observation that caused this request
    # Stale polls: the version of the payment's poll chain that armed this request, increasing with every
    # link the processor arms. The fetcher's delay store keeps the highest version per payment, so a retry of
    # an older link re-published late never replaces the link armed after it.
    chain_version: int | None = None
    # How often the fetcher re-published this request after a retryable answer (429, 5xx, timeout); None as
    # the processors wrote it. The retry budget counts these, never ``attempt`` (a stale poll's number).
    retry: int | None = None
    v: int = 1

    @property
    def key(self) -> bytes:
        return self.payment_key.encode()

    def to_bytes(self) -> bytes:
        return _dumps(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> FetchRequest:
        try:
            return cls(**_loads(raw, "fetch request"))
        except TypeError as exc:
            raise NormalizationError(f"fetch request: {exc}", reason="malformed_envelope") from exc


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A provider object as fetched (value of ``payments.fetch.results.v1``, key = payment key).

    ``object_kind`` says how the provider parser reads ``body``: ``object`` is the resource itself
    (e.g. a Stripe PaymentIntent, an Amazon Pay Charge), ``event`` is one provider event found by a sweep
    and goes through the same parser as a push of that event.
    """

    payment_key: str
    provider: str
    account: str
    object_type: str
    object_id: str
    fetch_id: str
    request_id: str
    reason: FetchReason
    fetched_at: str
    outcome: FetchOutcome
    http_status: int | None
    body: bytes = b""
    object_kind: Literal["object", "event"] = "object"
    attempt: int = 1
    v: int = 1

    @property
    def key(self) -> bytes:
        return self.payment_key.encode()

    def to_bytes(self) -> bytes:
        return _dumps(self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> FetchResult:
        record = _loads(raw, "fetch result")
        try:
            record["body"] = base64.b64decode(record.get("body", ""), validate=True)
            return cls(**record)
        except (TypeError, ValueError) as exc:
            raise NormalizationError(f"fetch result: {exc}", reason="malformed_envelope") from exc
