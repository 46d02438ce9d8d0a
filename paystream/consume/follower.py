"""Follow the payment-status stream correctly: bootstrap from ``payments.state.v1``, then follow
``payments.status.v1`` read_committed, drop what was already applied, report gaps, resume after a restart.

Usage from any asyncio service::

    async def handle(event: StatusEvent, origin: Origin) -> None: ...   # idempotent, please

    follower = Follower(load_settings(), handle, group_id="fulfillment", store=my_durable_store)
    await follower.run(stop_event)        # returns when stop_event is set (or raises what handle raised)

Position: the follower reads every partition of the status topic itself (manual assignment) and commits
its offsets to its own consumer group, ``group_id``, after the events below them were handled and their
positions stored. A restart resumes from those offsets; a first start (or a partition without a usable
committed offset: none, or out of the retained range) bootstraps from the state topic first
(:mod:`paystream.consume.snapshot`). Run one follower per group at a time.

Delivery to ``handle``: at least once across crashes, exactly once per position while the process lives.
With a durable :class:`~paystream.consume.positions.PositionStore` that commits together with the
handler's writes, a restart never hands an applied event to ``handle`` again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from paystream.config import Settings
from paystream.consume.events import InvalidEvent, StatusEvent, parse_event, parse_state
from paystream.consume.positions import Gap, MemoryPositions, PositionStore, Verdict, judge
from paystream.consume.snapshot import follow_from, mark_status_end, partitions_of, read_state
from paystream.errors import InfrastructureError
from paystream.kafka import make_consumer
from paystream.logs import get_logger

log = get_logger(__name__)

Origin = Literal["state", "status"]
Handler = Callable[[StatusEvent, Origin], Awaitable[None]]


@dataclass(slots=True)
class FollowerStats:
    """Counters of one follower's life (this process)."""

    bootstrapped: bool = False
    snapshot_documents: int = 0  # state records read while bootstrapping
    events_read: int = 0  # status records read
    applied: int = 0  # events handed to the handler (both origins)
    duplicates: int = 0  # events at or below their payment's applied position, dropped
    stale_epochs: int = 0  # events of an epoch a rebuild replaced, dropped
    new_epochs: int = 0
    gaps: int = 0
    missing_events: int = 0  # summed over the gaps
    invalid: int = 0  # records that failed validation (only when on_invalid skips them)
    offset_commits: int = 0


class Follower:
    def __init__(self, settings: Settings, handler: Handler, *, group_id: str, store: PositionStore | None = None,
                 on_gap: Callable[[Gap], None] | None = None,
                 on_invalid: Callable[[InvalidEvent], None] | None = None, commit_interval_s: float = 1.0,
                 bootstrap_overlap_s: float = 30.0, strict: bool = False, poll_ms: int = 500,
                 client_suffix: str = "follower") -> None:
        """``on_invalid``: None stops the follower with the :class:`InvalidEvent` (nothing past it is committed,
        so a fixed consumer reads it again); a callback is told and the record is skipped."""
        self.settings = settings
        self.handler = handler
        self.group_id = group_id
        self.store: PositionStore = store if store is not None else MemoryPositions()
        self.on_gap = on_gap
        self.on_invalid = on_invalid
        self.commit_interval_s = commit_interval_s
        self.bootstrap_overlap_s = bootstrap_overlap_s
        self.strict = strict
        self.poll_ms = poll_ms
        self.client_suffix = client_suffix
        self.stats = FollowerStats()
        self.ready = asyncio.Event()  # set once the follower reads the status topic
        self.start_offsets: dict[int, int] = {}  # status partition -> where this run started following
        self._complete = self.store.durable

    async def run(self, stop: asyncio.Event) -> None:
        topic = self.settings.topics.status
        consumer = make_consumer(self.settings, group_id=self.group_id, client_suffix=self.client_suffix)
        try:
            await consumer.start()
        except (KafkaError, OSError) as exc:
            await consumer.stop()
            raise InfrastructureError(f"cannot reach Kafka at {self.settings.kafka.bootstrap}: {exc}") from exc
        done: dict[TopicPartition, int] = {}
        try:
            partitions = await self._wait_for(topic, stop)
            if not partitions:
                return
            consumer.assign(partitions)
            start = await self._start_offsets(consumer, partitions, stop)
            if start is None:  # stopped while bootstrapping
                return
            for tp, offset in start.items():
                consumer.seek(tp, offset)
            await consumer.commit(start)
            self.start_offsets = {tp.partition: offset for tp, offset in start.items()}
            self.ready.set()
            log.info("following", topic=topic, group=self.group_id, bootstrapped=self.stats.bootstrapped,
                     start=self.start_offsets)
            committed_at = time.monotonic()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=self.poll_ms)
                for records in batch.values():
                    for record in records:
                        await self._status_record(record)
                        done[TopicPartition(record.topic, record.partition)] = record.offset + 1
                if done and time.monotonic() - committed_at >= self.commit_interval_s:
                    await self._commit(consumer, done)
                    committed_at = time.monotonic()
            if done:
                await self._commit(consumer, done)
        finally:
            await consumer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer, done: dict[TopicPartition, int]) -> None:
        await consumer.commit(dict(done))
        done.clear()
        self.stats.offset_commits += 1

    async def _wait_for(self, topic: str, stop: asyncio.Event) -> list[TopicPartition]:
        while not stop.is_set():
            partitions = await partitions_of(self.settings, topic, client_suffix=self.client_suffix)
            if partitions:
                return partitions
            await asyncio.sleep(0.5)
        return []

    async def _start_offsets(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                             stop: asyncio.Event) -> dict[TopicPartition, int] | None:
        """Committed offsets where they are usable; else a bootstrap decides (for the others). None when
        ``stop`` was set during the bootstrap (nothing is committed: the next start bootstraps again)."""
        first = await consumer.beginning_offsets(partitions)
        last = await consumer.end_offsets(partitions)
        committed = {tp: await consumer.committed(tp) for tp in partitions}
        usable = {tp: offset for tp, offset in committed.items()
                  if offset is not None and first[tp] <= offset <= last[tp]}
        if len(usable) == len(partitions):
            return usable
        unusable = sorted(tp.partition for tp in partitions if tp not in usable)
        log.info("bootstrapping", group=self.group_id, state_topic=self.settings.topics.state,
                 partitions_without_usable_offset=unusable)
        marks = await mark_status_end(consumer, partitions)  # before the state topic's watermarks: see snapshot
        snapshot = read_state(self.settings, self.settings.topics.state, client_suffix=self.client_suffix,
                              poll_ms=self.poll_ms)
        async with aclosing(snapshot):  # its consumers close now, also when stopped half-way
            async for record in snapshot:
                if stop.is_set():
                    return None
                await self._state_record(record)
        self.stats.bootstrapped = True
        self._complete = True  # every payment there is has been seen: an unknown one starts at sequence 1
        from_end = await follow_from(consumer, marks, self.bootstrap_overlap_s)
        return {tp: usable.get(tp, from_end[tp]) for tp in partitions}

    async def _state_record(self, record: ConsumerRecord) -> None:
        if record.value is None:
            return
        self.stats.snapshot_documents += 1
        try:
            document = parse_state(record.value, strict=self.strict, where=_where(record))
        except InvalidEvent as exc:
            self._invalid(exc)
            return
        if document.event is not None:
            await self._offer(document.event, "state")

    async def _status_record(self, record: ConsumerRecord) -> None:
        self.stats.events_read += 1
        try:
            event = parse_event(record.value or b"", strict=self.strict, where=_where(record))
        except InvalidEvent as exc:
            self._invalid(exc)
            return
        await self._offer(event, "status")

    async def _offer(self, event: StatusEvent, origin: Origin) -> None:
        key, got = event.payment_key, event.position
        last = await self.store.get(key)
        judgement = judge(last, got, complete=self._complete and origin == "status")
        if judgement.verdict is Verdict.DUPLICATE:
            self.stats.duplicates += 1
            return
        if judgement.verdict is Verdict.STALE_EPOCH:
            self.stats.stale_epochs += 1
            log.warning("stale_epoch_event_dropped", payment_key=key, position=str(got), applied=str(last))
            return
        if judgement.new_epoch:
            self.stats.new_epochs += 1
            log.info("new_epoch", payment_key=key, position=str(got), applied=str(last))
        if judgement.missing:
            self._gap(Gap(key, last, got, judgement.missing, "stream" if origin == "status" else "snapshot"))
        await self.handler(event, origin)
        await self.store.put(key, got)
        self.stats.applied += 1

    def _gap(self, gap: Gap) -> None:
        self.stats.gaps += 1
        self.stats.missing_events += gap.missing
        log.warning("sequence_gap", payment_key=gap.payment_key, after=str(gap.after), got=str(gap.got),
                    missing=gap.missing, cause=gap.cause)
        if self.on_gap is not None:
            self.on_gap(gap)

    def _invalid(self, error: InvalidEvent) -> None:
        if self.on_invalid is None:
            raise error
        self.stats.invalid += 1
        log.error("invalid_record_skipped", error=str(error))
        self.on_invalid(error)


def _where(record: ConsumerRecord) -> str:
    return f"{record.topic}/{record.partition}@{record.offset}"
