"""What the processor keeps per payment key in its state store (RocksDB, changelogged).

One value per payment, read and written once per input:

* ``state`` — the join state (:class:`schemas.join.PaymentState`, bounded: :mod:`schemas.join`), ``None``
  until an observation arrived (a payment registered for polls, or named by a thin push, has a record before
  it has a state);
* ``seen`` — the dedupe ids of the latest thin pushes that asked for a fetch (``MAX_SEEN``, each with the time it
  was first seen, dropped after the dedupe TTL): a redelivered thin push does not fetch again. Observations
  need no such ledger: the join recognises a redelivery by its content;
* ``chain`` — the stale-poll chain (:mod:`processors.scheduling`), ``None`` when no poll is armed;
* ``chain_version`` — the highest chain version ever armed for the payment: it only grows, across chains that
  end and restart, so the fetcher's delay store can always tell the newest link;
* ``polling_ended`` — why and when the chain ended (an outcome, ``not_found`` answers, the horizon);
* ``quarantine`` — set when the record reached the hard size cap: later inputs go to the DLQ, copied;
* ``last_event`` — the last emitted event as serialized (the current-state document embeds it);
* ``first_seen`` — when paystream first heard of the payment (unix seconds).

Versions: a record written by an older processor is read and migrated (never dead-lettered): v1 records (the
unbounded join state) are folded again from their retained groups into the v2 shape.

Decoding is the costly part of a read, so :class:`RecordCodec` keeps the last decoded record per key and
reuses it when the stored bytes are identical: a cache keyed by content can never be stale, even when the
engine aborts a transaction and rolls the store back.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from paystream.errors import NormalizationError
from processors.record_migration import migrate_v1_state
from processors.scheduling import PollChain
from schemas.join import PaymentState
from schemas.state_codec import from_json, to_json

VERSION = 2
MAX_SEEN = 64


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: str
    at: float  # unix seconds
    record_bytes: int  # the size the record would have reached


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    first_seen: float
    state: PaymentState | None = None
    seen: tuple[tuple[str, float], ...] = ()
    chain: PollChain | None = None
    chain_version: int = 0
    polling_ended: tuple[str, float] | None = None  # (reason, unix seconds)
    quarantine: Quarantine | None = None
    last_event: str | None = None  # the last emitted event, serialized

    def to_bytes(self) -> bytes:
        return orjson.dumps({
            "v": VERSION, "first_seen": self.first_seen,
            "state": None if self.state is None else to_json(self.state), "seen": self.seen,
            "chain": self.chain, "chain_version": self.chain_version, "polling_ended": self.polling_ended,
            "quarantine": self.quarantine,
            "last_event": self.last_event,
        })

    @classmethod
    def from_bytes(cls, raw: bytes) -> PaymentRecord:
        """Raises :class:`NormalizationError` only for bytes no version of paystream wrote."""
        try:
            record: dict[str, Any] = orjson.loads(raw)
            version = record.get("v")
            if version == 1:
                return _from_v1(record)
            if version != VERSION:
                raise ValueError(f"unknown record version {version!r}")
            chain, ended, quarantine = record["chain"], record["polling_ended"], record["quarantine"]
            return cls(
                first_seen=record["first_seen"],
                state=None if record["state"] is None else from_json(record["state"]),
                seen=tuple((key, first) for key, first in record["seen"]),
                chain=None if chain is None else PollChain(**chain), chain_version=record["chain_version"],
                polling_ended=None if ended is None else (ended[0], ended[1]),
                quarantine=None if quarantine is None else Quarantine(**quarantine),
                last_event=record["last_event"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise NormalizationError(f"payment record: {exc}", reason="malformed_record") from exc


def _from_v1(record: dict[str, Any]) -> PaymentRecord:
    """A record of the first processor (unbounded state, every dedupe id): its groups folded again."""
    chain = record.get("chain")
    state = None if record["state"] is None else migrate_v1_state(record["state"])
    seen = sorted(record.get("seen", {}).items(), key=lambda item: item[1])[-MAX_SEEN:]
    return PaymentRecord(
        first_seen=record["first_seen"], state=state, seen=tuple(seen),
        chain=None if chain is None else PollChain(chain["since"], chain["poll"], chain["request_id"]),
    )


def remember(seen: tuple[tuple[str, float], ...], dedupe_id: str, now_s: float,
             ttl_s: float) -> tuple[tuple[str, float], ...]:
    """``seen`` plus ``dedupe_id``: the newest ``MAX_SEEN``, none past the TTL."""
    kept = [(key, first) for key, first in seen if now_s - first < ttl_s and key != dedupe_id]
    first = next((first for key, first in seen if key == dedupe_id), now_s)
    return (*kept[-(MAX_SEEN - 1):], (dedupe_id, first))


def is_duplicate(seen: tuple[tuple[str, float], ...], dedupe_id: str, now_s: float, ttl_s: float) -> bool:
    return any(key == dedupe_id and now_s - first < ttl_s for key, first in seen)


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
