"""Workarounds for faust-streaming 0.15.3 (pinned exactly in pyproject.toml), applied by :mod:`processors.app`.

Found by the SIGKILL/restart integration test, which without them lost a payment's first observation in
about one run out of three (the offset was committed, the record never processed).

1. Skipped events must not be acknowledged. A stream skips an event that arrives while flow control is
   suspended or whose consumer generation is stale (around start-up and rebalances) and then *acks* it,
   so its offset is committed although nothing processed the record. (The compiled stream iterator does
   that ack inline, bypassing ``Event.ack``; we switch to faust's pure-Python iterator so it cannot.)
   Our agents acknowledge explicitly (:mod:`processors.batching`), so :func:`mark_processed` flags the
   events they finished and any other acknowledgement of an event on our topics is ignored: the record
   stays uncommitted and is delivered again after the next seek to the committed offsets.

2. ``Consumer.getmany`` silently drops records of one fetch: the rest of the batch when the flow stops or
   the generation changes midway, and every record of a partition that is not "active" at that instant,
   although aiokafka's position has already moved past them — also when it was entered while the flow was
   stopped and the flow resumed during the fetch (start-up). The replacement delivers the same records in
   the same order (and withholds them while flow control is suspended), remembers the first record it did
   not deliver per partition and seeks back to it; when a rebalance overlapped the fetch it seeks every
   partition back to its committed offset instead (a seek by that rebalance's recovery may lie on either
   side of the fetch).

3. The commit offset may jump over an unprocessed record. ``Consumer._new_offset`` commits the first run
   of consecutive acknowledged offsets, but checks that the run starts at the committed offset only when
   one is known and non-zero, and even then admits a hole of one (``min(acked) - committed > 1``, where
   ``committed`` is already the *next* offset to read). So with acked ``[2, 3, 4]`` on a partition nothing
   was committed for yet, or acked ``[11, 12]`` after a commit of 10, faust commits past offsets 0-1 or 10
   although no agent processed them. Together with (1) — a record skipped around start-up stays unacked
   — this lost a payment's first observation in the SIGKILL/restart test (diagnosed from the committed
   offsets: a partition's first records had no observation and no ledger entry, later ones had).
   The replacement commits a run only when it starts exactly at the next offset to commit: the committed
   offset, or, when none is known, the partition's log start (where such a partition is read from after
   every seek to the committed offsets; unknown means no commit; aiokafka would leave such a partition at
   its position, possibly past records an earlier generation never finished). A record dropped anyway now
   stops the commit instead of vanishing, and (5) and (6) fetch it again.

4. A table write may fail for good after the producer's first send to a new topic. aiokafka then tracks
   only the topics it was explicitly asked about, so its next metadata refresh drops every other topic —
   including the changelog topics, which faust partitions eagerly from that metadata without ever
   registering them (``Producer.key_partition``): ``TypeError: 'NoneType' object is not iterable`` on
   every later table write, the agent crashes and restarts forever. The replacement registers the topic
   with the producer again and meanwhile takes the partition count from the consumer, which subscribes
   to every changelog topic (same default partitioner, so the same partition).

5. Records stay in offset order per partition (:class:`OrderGate`), also when one is delivered again.

6. A safety net for drops we have not found: with the commit never passing an unprocessed record, a record
   faust loses before any agent sees it shows as a stuck commit. :class:`DroppedRecordCheck` (an app timer)
   looks while every agent is idle — no batch in progress, nothing waiting in their streams, nothing
   delivered and unacknowledged — for a partition whose next offset to commit is below its high-water
   mark and unprocessed; seen twice in a row, it seeks the partition back there (counted in
   ``paystream_processor_refetches_total``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from faust import streams as faust_streams
from faust.events import Event
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducerService
from faust.types import TP
from faust.utils.functional import consecutive_numbers

from paystream.logs import get_logger
from paystream.metrics import PROCESSOR_REFETCHES

log = get_logger(__name__)

_original_event_ack = Event.ack
_original_perform_seek = Consumer.perform_seek
_original_reset_state = Consumer._reset_state
_original_key_partition = AIOKafkaProducerService.key_partition
_default_partitioner = DefaultPartitioner()
_PROCESSED = "_paystream_processed"
# Topics whose events only our explicit acknowledgements may ack.
_guarded_topics: set[str] = set()
# Per consumer: the log start offset of each partition that had no committed offset at the last seek — where
# its uncommitted range begins (such partitions are read from their start, see _perform_seek_from_start).
_LOG_START = "_paystream_log_start"


def mark_processed(event: Any) -> None:
    setattr(event, _PROCESSED, True)


def _ack_unless_skipped(self: Any) -> bool:
    if self.message.topic in _guarded_topics and not getattr(self, _PROCESSED, False):
        # a skip: leave the offset uncommitted so the record is delivered again
        log.info("faust_skip_not_acked", topic=self.message.topic, partition=self.message.partition,
                 offset=self.message.offset)
        return False
    return bool(_original_event_ack(self))


class _UnfilteredReadOffsets(dict[Any, Any]):
    """faust's fetch loop drops a record whose offset is below the partition's "read offset" (the last
    record handed on). A record still on its way from a fetch that began before a seek moves the read
    offset past the seek target, and the records fetched again after the seek are then dropped — silently,
    and without the position moving back. Reads of this mapping always say "nothing read yet": duplicates
    reach the agents instead (harmless: the ledger and the join absorb them), drops never do."""

    def __getitem__(self, key: Any) -> None:
        return None


class AgentActivity:
    """What the agents report about themselves, for :class:`DroppedRecordCheck`."""

    def __init__(self) -> None:
        self.busy = 0  # batches taken from a stream and not yet acknowledged
        self.streams: list[Any] = []  # the agents' streams (their channels hold delivered records)

    def idle(self) -> bool:
        return self.busy == 0 and all(stream.channel.empty() for stream in self.streams)


ACTIVITY = AgentActivity()


class DroppedRecordCheck:
    def __init__(self) -> None:
        self.suspects: dict[Any, int] = {}

    @staticmethod
    def next_to_commit(consumer: Any, tp: Any) -> int | None:
        committed: int | None = consumer._committed_offset.get(tp)
        return committed if committed is not None else _log_start(consumer).get(tp)

    async def __call__(self, consumer: Any) -> int:
        """Returns how many partitions were sought back."""
        if not ACTIVITY.idle() or consumer._unacked_messages or not consumer.flow_active:
            self.suspects.clear()
            return 0
        stuck: dict[Any, int] = {}
        for tp in consumer.assignment():
            if tp.topic not in _guarded_topics:
                continue
            expected = self.next_to_commit(consumer, tp)
            highwater = consumer.highwater(tp)
            if expected is None or highwater is None or expected >= highwater:
                continue
            if expected in consumer._acked_index[tp]:
                continue  # processed: the next commit takes it
            stuck[tp] = expected
        sought = 0
        for tp, expected in stuck.items():
            if self.suspects.get(tp) == expected:
                log.warning("faust_dropped_record_refetched", topic=tp.topic, partition=tp.partition, offset=expected)
                PROCESSOR_REFETCHES.labels(tp.topic).inc()
                await consumer.seek(tp, expected)
                sought += 1
        self.suspects = {tp: offset for tp, offset in stuck.items() if self.suspects.get(tp) != offset}
        return sought


class OrderGate:
    """Keeps each partition's records in offset order on their way into an agent's batch.

    A record faust drops and delivers again later (after a seek) would otherwise be processed after the
    records that followed it — a payment's capture before its authorisation, so the join merges the two
    and one status event never exists. The gate knows the next offset each partition owes the agent (the
    committed offset, or the log start; then one past each record it let through). A later record is held
    back (not processed, not acknowledged) and the partition is sought back to the missing offset; records
    at or below it (repeats) pass. Reset at every rebalance, when ownership and offsets may have moved."""

    def __init__(self, consumer: Any, app: Any) -> None:
        self.consumer, self.app = consumer, app
        self.generation = -1
        self.next: dict[Any, int | None] = {}
        self.sought: dict[Any, int] = {}

    async def admit(self, event: Any) -> bool:
        message = event.message
        if self.generation != self.app.consumer_generation_id:
            self.generation = self.app.consumer_generation_id
            self.next.clear()
            self.sought.clear()
        tp, offset = message.tp, message.offset
        if tp not in self.next:
            self.next[tp] = DroppedRecordCheck.next_to_commit(self.consumer, tp)
        expected = self.next[tp]
        if expected is None or offset <= expected:
            if expected is None or offset == expected:
                self.next[tp] = offset + 1
                self.sought.pop(tp, None)
            return True
        self.consumer._unacked_messages.discard(message)  # held back, not in flight: the idle check may act
        if self.sought.get(tp) != expected:
            self.sought[tp] = expected
            log.info("faust_out_of_order_record_held", topic=tp.topic, partition=tp.partition, offset=offset,
                     missing=expected)
            PROCESSOR_REFETCHES.labels(tp.topic).inc()
            await self.consumer.seek(tp, expected)
        return False


def _log_start(consumer: Any) -> dict[Any, int]:
    table: dict[Any, int] | None = getattr(consumer, _LOG_START, None)
    if table is None:
        table = {}
        setattr(consumer, _LOG_START, table)
    return table


def _new_offset_without_holes(self: Any, tp: Any) -> int | None:
    """The offset to commit for ``tp``: one past the run of acknowledged offsets that starts exactly at
    the next offset to commit; ``None`` while that offset itself is not acknowledged."""
    acked: list[int] = self._acked[tp]
    if not acked:
        return None
    gaps = self._gap[tp]
    if gaps:  # offsets the broker never delivers (transaction markers, compaction): count them as acked
        max_offset = max(acked)
        filled = [n for interval in sorted(gaps.overlap(0, max_offset), key=lambda i: i.begin)
                  for n in range(interval.begin, interval.end)]
        if filled:
            acked.extend(filled)
            gaps.chop(0, max(filled[-1], max_offset + 1))
    acked.sort()
    expected = self._committed_offset[tp]
    if expected is None:
        expected = _log_start(self).get(tp)
    if expected is None or acked[0] > expected:
        return None  # the next offset to commit was not processed yet
    run = next(consecutive_numbers(acked))
    del acked[: len(run)]
    self._acked_index[tp].difference_update(run)
    return int(run[-1]) + 1


async def _perform_seek_from_start(self: Any) -> None:
    await _original_perform_seek(self)
    # aiokafka's seek_to_committed leaves a partition without a committed offset wherever its position is,
    # possibly past records an earlier generation fetched but never finished: start those from the log
    # start instead (what the group's "earliest" reset means), so every uncommitted record comes again,
    # and remember that start as the offset the first commit must begin at.
    uncommitted = [TopicPartition(tp.topic, tp.partition) for tp in self.assignment()
                   if tp.topic in _guarded_topics and not self._committed_offset.get(tp)]
    starts = _log_start(self)
    starts.clear()
    if uncommitted:
        log.info("faust_uncommitted_partitions_from_start", partitions=len(uncommitted))
        await self._thread.seek_to_beginning(*uncommitted)
        for tp, offset in (await self._thread.earliest_offsets(*uncommitted)).items():
            starts[TP(tp.topic, tp.partition)] = offset
            self._read_offset[tp] = None


def _reset_state_without_read_filter(self: Any) -> None:
    _original_reset_state(self)
    self._read_offset = _UnfilteredReadOffsets()


def _key_partition_with_metadata(self: Any, topic: str, key: bytes) -> TP:
    producer = self._ensure_producer()
    if producer._metadata.partitions_for_topic(topic) is not None:
        return _original_key_partition(self, topic, key)
    refresh = producer.client.add_topic(topic)  # tracked from now on: the next refresh brings it back
    refresh.add_done_callback(_ignore_result)
    count = self.app.consumer.topic_partitions(topic)
    if not count:
        return _original_key_partition(self, topic, key)
    partitions = list(range(count))
    log.info("faust_producer_metadata_restored", topic=topic)
    return TP(topic, _default_partitioner(key, partitions, partitions))


def _ignore_result(future: Any) -> None:
    if not future.cancelled():
        future.exception()  # a failed refresh is retried by aiokafka; don't log "never retrieved"


async def _getmany_without_drops(
    self: Any, timeout: float  # noqa: ASYNC109 (faust's signature)
) -> AsyncIterator[tuple[Any, Any]]:
    generation_id = self.app.consumer_generation_id
    records, active_partitions = await self._wait_next_records(timeout)  # waits while the flow is stopped
    if records is None or self.should_stop:
        return
    undelivered: dict[Any, int] = {}
    for tp, record in self.scheduler.iterate(records):
        deliverable = (
            tp not in undelivered
            and self.flow_active
            and self.app.flow_control.is_active()
            and self.app.consumer_generation_id == generation_id
            and (active_partitions is None or tp in active_partitions or tp in self._buffered_partitions)
        )
        if not deliverable:
            undelivered.setdefault(tp, record.offset)
            continue
        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        yield tp, self._to_message(tp, record)
    if not undelivered:
        return
    if self.app.consumer_generation_id != generation_id:
        # A rebalance overlapped this fetch; its recovery may already have sought, and these records may
        # predate or follow that seek. Seeking every partition to its committed offset again is always
        # safe (at-least-once) and never leaves an undelivered record behind the position.
        log.info("faust_fetch_overlapped_rebalance", undelivered=len(undelivered))
        await self.perform_seek()
        return
    assigned = self.assignment()
    for tp, offset in undelivered.items():
        if tp in assigned:
            log.info("faust_records_refetched", topic=tp.topic, partition=tp.partition, offset=offset)
            await self.seek(tp, offset)


def install(guarded_topics: set[str]) -> None:
    """Idempotent: patch faust once per process; ``guarded_topics`` are the topics our agents consume."""
    _guarded_topics.update(guarded_topics)
    Consumer.getmany = _getmany_without_drops  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset_without_holes  # type: ignore[method-assign]
    Consumer.perform_seek = _perform_seek_from_start  # type: ignore[method-assign]
    Consumer._reset_state = _reset_state_without_read_filter  # type: ignore[method-assign]
    Event.ack = _ack_unless_skipped  # type: ignore[method-assign]
    # The compiled stream iterator acknowledges skipped events inline, never through Event.ack, so (1)
    # would not apply: use the pure-Python iterator, whose skips go through Event.ack.
    faust_streams._CStreamIterator = None  # type: ignore[attr-defined]
    AIOKafkaProducerService.key_partition = _key_partition_with_metadata  # type: ignore[method-assign]
