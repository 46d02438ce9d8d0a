"""The ``--diff`` half of ``paystream rebuild``: rebuilt payment state against the live status stream,
and the report both rebuild modes print.

Both sides are reduced to a :class:`Snapshot` (status and amounts — what fulfillment acts on), so the
comparison does not care how either side was produced. The live side is the LAST event per payment key
on ``payments.status.v1``, read from the beginning up to the end offsets seen at start (one key lives in
one partition, so the last one read is the newest).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from paystream.config import Settings
from paystream.errors import ConfigurationError
from paystream.kafka import make_consumer
from schemas.join import PaymentState


@dataclass(frozen=True, slots=True)
class Snapshot:
    status: str
    amount: int | None
    captured_amount: int
    refunded_amount: int
    currency: str | None
    disputed_amount: int = 0

    @classmethod
    def from_event_data(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            status=str(data["status"]),
            amount=data.get("amount"),
            captured_amount=int(data.get("captured_amount") or 0),
            refunded_amount=int(data.get("refunded_amount") or 0),
            currency=data.get("currency"),
            disputed_amount=int(data.get("disputed_amount") or 0),
        )

    @classmethod
    def from_state(cls, state: PaymentState) -> Snapshot | None:
        """None while the payment has no status yet (only amount-only observations: nothing emitted)."""
        if state.status is None:
            return None
        return cls(str(state.status), state.amount, state.captured_amount, state.refunded_amount, state.currency,
                   state.disputed_amount)


@dataclass(frozen=True, slots=True)
class Difference:
    payment_key: str
    rebuilt: Snapshot | None  # None: no state derived from the archive
    live: Snapshot | None  # None: no event on the status stream
    fields: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "payment_key": self.payment_key,
            "fields": list(self.fields),
            "rebuilt": None if self.rebuilt is None else asdict(self.rebuilt),
            "live": None if self.live is None else asdict(self.live),
        }

    def describe(self) -> str:
        if self.live is None:
            return f"{self.payment_key}: rebuilt {_brief(self.rebuilt)}, but NO live status event"
        if self.rebuilt is None:
            return f"{self.payment_key}: live {_brief(self.live)}, but nothing in the archive derives it"
        changes = ", ".join(
            f"{name} live={getattr(self.live, name)!r} rebuilt={getattr(self.rebuilt, name)!r}" for name in self.fields
        )
        return f"{self.payment_key}: {changes}"


def _brief(snapshot: Snapshot | None) -> str:
    if snapshot is None:
        return "-"
    return (
        f"{snapshot.status} (amount {snapshot.amount} {snapshot.currency or ''}, captured "
        f"{snapshot.captured_amount}, refunded {snapshot.refunded_amount})"
    )


def diff(rebuilt: Mapping[str, Snapshot], live: Mapping[str, Snapshot]) -> list[Difference]:
    """Every payment whose status or amounts differ, or that only one side knows; sorted by key."""
    names = tuple(spec.name for spec in fields(Snapshot))
    found = []
    for key in sorted(rebuilt.keys() | live.keys()):
        ours, theirs = rebuilt.get(key), live.get(key)
        if ours is None or theirs is None:
            found.append(Difference(key, ours, theirs, names))
        elif ours != theirs:
            changed = tuple(name for name in names if getattr(ours, name) != getattr(theirs, name))
            found.append(Difference(key, ours, theirs, changed))
    return found


async def read_live_status(settings: Settings) -> dict[str, Snapshot]:
    """The last event per payment key on the status topic, from its beginning to its current end."""
    latest: dict[str, Snapshot] = {}
    async for record in read_to_end(settings, settings.topics.status):
        if record.value:
            data = orjson.loads(record.value)["data"]
            latest[data["payment_key"]] = Snapshot.from_event_data(data)
    return latest


async def read_to_end(settings: Settings, topic: str) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from its beginning up to the end offsets seen at start, per partition in
    offset order."""
    consumer = make_consumer(settings, group_id=None, client_suffix="rebuild")
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # see replay_source.KafkaSource.plan
        numbers = sorted(cluster.partitions_for_topic(topic) or ())
        if not numbers:
            raise ConfigurationError(f"topic {topic!r} does not exist on the broker")
        partitions = [TopicPartition(topic, n) for n in numbers]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        open_partitions = {tp for tp in partitions if ends[tp] > 0}
        while open_partitions:
            fetched = await consumer.getmany(*open_partitions, timeout_ms=1000, max_records=5000)
            for tp, records in fetched.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
            for tp in list(open_partitions):
                if await consumer.position(tp) >= ends[tp]:
                    open_partitions.discard(tp)
    finally:
        await consumer.stop()


@dataclass(slots=True)
class RebuildReport:
    source: str
    records: int
    observations: int
    skipped: Counter[str]
    rebuilt: dict[str, Snapshot]
    differences: list[Difference] | None = None  # None without --diff
    live_payments: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    kept_topics: list[str] = field(default_factory=list)  # rebuild --through-processors --keep

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source, "records": self.records, "observations": self.observations,
            "skipped": dict(self.skipped), "payments": len(self.rebuilt), "by_status": dict(self.by_status),
        }
        if self.kept_topics:
            out["kept_topics"] = self.kept_topics
        if self.differences is None:
            out["states"] = {key: asdict(snap) for key, snap in sorted(self.rebuilt.items())}
        else:
            out["live_payments"] = self.live_payments
            out["differences"] = [d.to_dict() for d in self.differences]
        return out

    def render(self) -> str:
        lines = [
            f"rebuild from {self.source}",
            f"  {self.records} records, {self.observations} observations, {len(self.rebuilt)} payments",
        ]
        if self.skipped:
            lines.append("  no observation: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())))
        lines.append("  by status: " + ", ".join(f"{s} {n}" for s, n in sorted(self.by_status.items())))
        if self.kept_topics:
            lines.append("  kept (delete when done): " + " ".join(self.kept_topics))
        if self.differences is not None:
            lines.append(f"  diff against {self.live_payments} payments on the live status stream: "
                         f"{len(self.differences)} differ")
            lines += [f"    {d.describe()}" for d in self.differences]
        return "\n".join(lines)
