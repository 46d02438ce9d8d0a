"""What the reconcile stage keeps per payment key in its state store (RocksDB, changelogged).

One value per payment, read and written once per input:

* ``state`` — the join state (:class:`schemas.join.PaymentState`), ``None`` until an observation arrived
  (a payment registered for polls, or named by a thin push, has a record before it has a state);
* ``seen`` — dedupe ids of the deliveries already applied, with the time each was first seen; entries older
  than the dedupe TTL (default 31 days: providers retry for up to 30) are dropped whenever the record is
  written, so the set stays bounded by the deliveries of one TTL window;
* ``chain`` — the stale-poll chain (:mod:`processors.scheduling`), ``None`` when no poll is armed;
* ``first_seen`` — when paystream first heard of the payment (unix seconds).

Decoding is the costly part of a read (timestamps of every retained group), so :class:`RecordCodec` keeps
the last decoded record per key and reuses it when the stored bytes are identical: a cache keyed by
content can never be stale, even when the engine aborts a transaction and rolls the store back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from processors.scheduling import PollChain
from schemas.event import parse_time
from schemas.join import PaymentState, Retained
from schemas.status import ObjectKind, Source
from schemas.transitions import Status, parse_status

VERSION = 1


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    first_seen: float
    state: PaymentState | None = None
    seen: Mapping[str, float] = field(default_factory=dict)
    chain: PollChain | None = None

    def to_bytes(self) -> bytes:
        # orjson writes the dataclasses, enums and datetimes itself (RFC 3339 with microseconds): this is the
        # write of every input, so no intermediate dicts.
        return orjson.dumps({"v": VERSION, "first_seen": self.first_seen, "state": self.state,
                             "seen": self.seen, "chain": self.chain})

    @classmethod
    def from_bytes(cls, raw: bytes) -> PaymentRecord:
        record: dict[str, Any] = orjson.loads(raw)
        chain = record["chain"]
        return cls(
            first_seen=record["first_seen"],
            state=None if record["state"] is None else _state(record["state"]),
            seen=record["seen"],
            chain=None if chain is None else PollChain(chain["since"], chain["poll"], chain["request_id"]),
        )


def _time(text: str | None) -> datetime | None:
    return None if text is None else parse_time(text)


def _status(word: str | None) -> Status | None:
    return None if word is None else parse_status(word)


def _retained(raw: dict[str, Any]) -> Retained:
    return Retained(
        occurred_at=parse_time(raw["occurred_at"]), status=_status(raw["status"]),
        provider_status=raw["provider_status"], source=Source(raw["source"]), reason_code=raw["reason_code"],
        amount=raw["amount"], currency=raw["currency"], order_ref=raw["order_ref"],
        captures=tuple((entry, value) for entry, value in raw["captures"]),
        refunds=tuple((entry, value) for entry, value in raw["refunds"]),
        observed_at=parse_time(raw["observed_at"]), evidence_ids=tuple(raw["evidence_ids"]),
    )


def _state(raw: dict[str, Any]) -> PaymentState:
    """The inverse of orjson's serialization of a :class:`PaymentState`."""
    return PaymentState(
        provider=raw["provider"], account=raw["account"], object_type=raw["object_type"],
        object_id=raw["object_id"], kind=ObjectKind(raw["kind"]), status=_status(raw["status"]),
        previous_status=_status(raw["previous_status"]), reported_status=_status(raw["reported_status"]),
        provider_status=raw["provider_status"], reason_code=raw["reason_code"], amount=raw["amount"],
        currency=raw["currency"], captured_amount=raw["captured_amount"], refunded_amount=raw["refunded_amount"],
        order_ref=raw["order_ref"], source=None if raw["source"] is None else Source(raw["source"]),
        occurred_at=_time(raw["occurred_at"]), observed_at=_time(raw["observed_at"]),
        evidence=tuple(raw["evidence"]), sequence=raw["sequence"], stale_count=raw["stale_count"],
        retained=tuple(_retained(group) for group in raw["retained"]),
    )


def remember(seen: Mapping[str, float], dedupe_id: str, now_s: float, ttl_s: float) -> dict[str, float]:
    """``seen`` plus ``dedupe_id``, without the entries past the TTL."""
    kept = {key: first for key, first in seen.items() if now_s - first < ttl_s}
    kept.setdefault(dedupe_id, now_s)
    return kept


def is_duplicate(seen: Mapping[str, float], dedupe_id: str, now_s: float, ttl_s: float) -> bool:
    first = seen.get(dedupe_id)
    return first is not None and now_s - first < ttl_s


class RecordCodec:
    """``PaymentRecord`` from stored bytes, reusing the decoded record when the bytes did not change."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._decoded: OrderedDict[bytes, tuple[bytes, PaymentRecord]] = OrderedDict()

    def decode(self, key: bytes, raw: bytes | None) -> PaymentRecord | None:
        if raw is None:
            return None
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == raw:
            self._decoded.move_to_end(key)
            return cached[1]
        record = PaymentRecord.from_bytes(raw)
        self._remember(key, raw, record)
        return record

    def encode(self, key: bytes, record: PaymentRecord) -> bytes:
        raw = record.to_bytes()
        self._remember(key, raw, record)
        return raw

    def _remember(self, key: bytes, raw: bytes, record: PaymentRecord) -> None:
        self._decoded[key] = (raw, record)
        self._decoded.move_to_end(key)
        if len(self._decoded) > self.capacity:
            self._decoded.popitem(last=False)
