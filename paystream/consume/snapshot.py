"""Bootstrap: every payment's latest event from ``payments.state.v1``, and where to follow
``payments.status.v1`` from so that nothing is missed and nothing is doubled.

The argument (docs/consumers.md, "Bootstrapping") in four steps:

1. Take the status topic's end offsets ``E`` as a read_committed consumer sees them (the last stable offset:
   every transaction with a record below it is decided).
2. Then take the state topic's high watermarks ``H`` (read_uncommitted: every record appended so far,
   decided or not). A status event below ``E`` that committed was written in one transaction with its state
   document, and a transaction's records are all appended before its commit begins, so that document is
   below ``H``.
3. Read the state topic read_committed until the position passes ``H`` on every partition. That waits for
   the transactions open at step 2 to be decided (at most the processor's transaction timeout), so every
   such document has been seen — or a later one of the same payment, which compaction kept instead.
   (Reading to the state topic's *stable* end instead would not do: the commit markers of one transaction
   reach the status and the state partitions one after the other, so for a moment an event is visible in
   status while its document is not yet visible in state.)
4. Follow the status topic from ``E``: every event at or above it is read, and those the snapshot already
   covered are at or below the applied position of their payment and dropped.

Under ``at-least-once`` processing the event and its document are not written atomically (the document
follows the event in the same flush), so the follower also re-reads the last ``overlap_s`` seconds of the
status topic before ``E``; what it re-reads is dropped as already applied.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from paystream.config import Settings
from paystream.kafka import connection_options, make_consumer
from paystream.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Marks:
    """Step 1: the status topic's stable end offsets and the wall-clock moment they were taken."""

    status_end: dict[TopicPartition, int]
    taken_at_ms: int


async def mark_status_end(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> Marks:
    """``consumer`` must read committed (its end offsets are then the last stable offsets)."""
    taken_at_ms = int(time.time() * 1000)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    return Marks(dict(ends), taken_at_ms)


async def partitions_of(settings: Settings, topic: str, *, client_suffix: str) -> list[TopicPartition]:
    """The topic's partitions ([] while it does not exist)."""
    admin = AIOKafkaAdminClient(**connection_options(settings.kafka),
                                client_id=f"{settings.kafka.client_id}-{client_suffix}")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = [p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"]]
    return [TopicPartition(topic, p) for p in sorted(found)]


async def read_state(settings: Settings, topic: str, *, client_suffix: str,
                     poll_ms: int = 500) -> AsyncGenerator[ConsumerRecord, None]:
    """Steps 2 and 3: the latest committed record of every key of the state topic, up to its high watermarks
    taken now. One partition at a time, so what is held in memory is one partition's payments: compaction
    runs in the background and may not have removed the older documents of a payment yet, and a consumer
    that bootstraps should meet each payment once, at its latest state, whatever compaction has done."""
    snapshot = make_consumer(settings, group_id=None, client_suffix=f"{client_suffix}-snapshot")
    watermarks = make_consumer(settings, group_id=None, client_suffix=f"{client_suffix}-watermarks",
                               isolation_level="read_uncommitted")
    await snapshot.start()
    await watermarks.start()
    try:
        partitions = await partitions_of(settings, topic, client_suffix=client_suffix)
        high: dict[TopicPartition, int] = await watermarks.end_offsets(partitions) if partitions else {}
        for tp in partitions:
            if high[tp] > 0:
                for record in await _latest_by_key(snapshot, tp, high[tp], poll_ms):
                    yield record
    finally:
        await snapshot.stop()
        await watermarks.stop()


async def _latest_by_key(consumer: AIOKafkaConsumer, tp: TopicPartition, high: int,
                         poll_ms: int) -> list[ConsumerRecord]:
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    latest: dict[object, ConsumerRecord] = {}
    noted = time.monotonic()
    while await consumer.position(tp) < high:
        batch = await consumer.getmany(tp, timeout_ms=poll_ms)
        for record in batch.get(tp, []):
            latest[record.offset if record.key is None else record.key] = record
        if time.monotonic() - noted > 10:
            # An open transaction holds the partition's stable end: it is decided within the processor's
            # transaction timeout (or as soon as the processor restarts).
            log.info("snapshot_waiting", topic=tp.topic, partition=tp.partition, high_watermark=high)
            noted = time.monotonic()
    return list(latest.values())


async def follow_from(consumer: AIOKafkaConsumer, marks: Marks, overlap_s: float) -> dict[TopicPartition, int]:
    """Step 4: ``E``, moved back by ``overlap_s`` seconds of the status topic (at-least-once producers)."""
    start = dict(marks.status_end)
    if overlap_s <= 0:
        return start
    since = marks.taken_at_ms - int(overlap_s * 1000)
    found = await consumer.offsets_for_times({tp: since for tp in start})
    for tp, hit in found.items():
        if hit is not None:
            start[tp] = min(start[tp], hit.offset)
    return start
