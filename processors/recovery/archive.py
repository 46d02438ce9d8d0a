"""``paystream archive``: copy the inbox and the fetch results to S3, losing nothing, duplicating nothing.

Records are buffered per topic partition and sealed into a batch when the batch reaches its size or
record limit, when it gets old, or when the next record belongs to another hour (an object never spans
two ``hour=`` folders). Sealed batches of a partition are uploaded strictly in order, and the offset after
a batch is committed right after its upload succeeded, before the next batch is uploaded. So at any
moment at most one uploaded object lies beyond the committed offset, and it starts exactly AT the
committed offset: whoever resumes the partition (this process after a crash, or another replica after a
rebalance) starts its first batch at that same offset, gets the same object key and overwrites it. That
is what makes "every record exactly once in the archive" hold across crashes.

Before consuming anything the archiver checks its bucket: that it exists, that an upload asked to be
encrypted is stored encrypted (:mod:`processors.recovery.archive_encryption`: otherwise it refuses to start)
and how long the bucket keeps the archive (:mod:`processors.recovery.archive_retention`: a warning when
forever or shorter than configured). ``paystream archive --apply-lifecycle`` writes that retention rule.

When S3 is down, the failing partition is paused (the consumer keeps polling, so it stays in its group),
its batches stay in memory and are retried with exponential backoff; nothing is committed until they
are uploaded. On stop, sealed batches get one last upload attempt; whatever fails is simply consumed
again on the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from paystream.config import Settings
from paystream.errors import ConfigurationError, InfrastructureError
from paystream.kafka import ensure_topics, make_consumer
from paystream.logs import get_logger
from paystream.metrics import ARCHIVE_LAG_SECONDS, ARCHIVE_UPLOADS, ARCHIVED_RECORDS
from paystream.probes import probe_server
from processors.recovery.archive_encryption import probe_encryption
from processors.recovery.archive_format import ArchivedRecord, encode_object, hour_of, object_key
from processors.recovery.archive_retention import apply_lifecycle, check_retention
from processors.recovery.archive_store import ArchiveStore, Encryption

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When a batch becomes an object, and how failed uploads are retried."""

    max_bytes: int = 8 * 1024 * 1024  # uncompressed JSON lines
    max_records: int = 50_000
    max_age_s: float = 60.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    poll_timeout_ms: int = 500
    poll_max_records: int = 5_000


@dataclass(slots=True)
class _Batch:
    topic: str
    partition: int
    hour: datetime
    first_offset: int
    last_offset: int
    oldest_timestamp_ms: int
    opened_at: float  # monotonic
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    uploaded: bool = False  # uploaded but not yet committed: the next attempt only commits


@dataclass(slots=True)
class _PartitionState:
    open: _Batch | None = None
    sealed: deque[_Batch] = field(default_factory=deque)
    retry_at: float = 0.0  # monotonic; no upload attempt before this
    backoff_s: float = 0.0
    paused: bool = False

    def batches(self) -> list[_Batch]:
        return [*self.sealed, *([self.open] if self.open else [])]


class _Archiver:
    def __init__(self, settings: Settings, store: ArchiveStore, policy: FlushPolicy) -> None:
        self.settings = settings
        self.store = store
        self.policy = policy
        self.consumer = make_consumer(
            settings,
            group_id=f"{settings.kafka.client_id}-archiver",
            client_suffix="archiver",
            max_poll_records=policy.poll_max_records,
        )
        self.topics = (settings.topics.inbox, settings.topics.fetch_results)
        self.partitions: dict[TopicPartition, _PartitionState] = {}

    # -- buffering ---------------------------------------------------------------------------------
    def add(self, tp: TopicPartition, records: list[ArchivedRecord]) -> None:
        state = self.partitions.setdefault(tp, _PartitionState())
        for record in records:
            hour = hour_of(record.timestamp_ms)
            if state.open is not None and state.open.hour != hour:
                self._seal(state)
            if state.open is None:
                state.open = _Batch(
                    tp.topic, tp.partition, hour, record.offset, record.offset, record.timestamp_ms,
                    time.monotonic(),
                )
            line = record.to_line()
            batch = state.open
            batch.lines.append(line)
            batch.size += len(line)
            batch.last_offset = record.offset
            batch.oldest_timestamp_ms = min(batch.oldest_timestamp_ms, record.timestamp_ms)
            if batch.size >= self.policy.max_bytes or len(batch.lines) >= self.policy.max_records:
                self._seal(state)

    @staticmethod
    def _seal(state: _PartitionState) -> None:
        if state.open is not None:
            state.sealed.append(state.open)
            state.open = None

    def drop(self, partitions: list[TopicPartition]) -> None:
        """Forget partitions we no longer own: their new owner resumes from the committed offset."""
        for tp in partitions:
            self.partitions.pop(tp, None)

    # -- flushing ----------------------------------------------------------------------------------
    async def flush(self, *, final: bool = False) -> None:
        now = time.monotonic()
        due = []
        for tp, state in self.partitions.items():
            if state.open is not None and (final or now - state.open.opened_at >= self.policy.max_age_s):
                self._seal(state)
            if state.sealed and (final or now >= state.retry_at):
                due.append(tp)
        # Partitions upload in parallel (boto3 in threads); inside one partition, strictly in order.
        await asyncio.gather(*(self._drain(tp) for tp in due))

    async def _drain(self, tp: TopicPartition) -> None:
        state = self.partitions.get(tp)
        while state is not None and state.sealed:
            batch = state.sealed[0]
            if not await self._upload_and_commit(tp, batch):
                if tp in self.partitions:
                    self._back_off(tp, state)
                return
            if self.partitions.get(tp) is not state:
                return  # revoked while we were uploading
            state.sealed.popleft()
            state.backoff_s = 0.0
        if state is not None and state.paused and not state.sealed:
            self.consumer.resume(tp)
            state.paused = False
            log.info("archive_partition_resumed", topic=tp.topic, partition=tp.partition)

    def _back_off(self, tp: TopicPartition, state: _PartitionState) -> None:
        state.backoff_s = min(max(state.backoff_s * 2, self.policy.retry_initial_s), self.policy.retry_max_s)
        state.retry_at = time.monotonic() + state.backoff_s
        if not state.paused and tp in self.consumer.assignment():
            # Stop reading this partition until its batches are out: memory stays bounded.
            self.consumer.pause(tp)
            state.paused = True

    async def _upload_and_commit(self, tp: TopicPartition, batch: _Batch) -> bool:
        key = object_key(self.store.prefix, batch.topic, batch.partition, batch.first_offset, batch.hour)
        if not batch.uploaded:
            try:
                await asyncio.to_thread(self.store.put, key, encode_object(batch.lines))
            except (InfrastructureError, ConfigurationError) as exc:
                # Even a vanished bucket is retried: an operator can recreate it, and nothing is lost.
                ARCHIVE_UPLOADS.labels("error").inc()
                log.warning(
                    "archive_upload_failed", key=key, error=str(exc), retry_in_s=self._next_backoff(tp)
                )
                return False
            batch.uploaded = True
            ARCHIVE_UPLOADS.labels("ok").inc()
            ARCHIVED_RECORDS.labels(batch.topic).inc(len(batch.lines))
        try:
            await self.consumer.commit({tp: batch.last_offset + 1})
        except (CommitFailedError, IllegalStateError) as exc:
            # The partition went to another member: it resumes at the committed offset and overwrites
            # this object (same first offset, same key).
            log.warning(
                "archive_commit_lost_partition", topic=tp.topic, partition=tp.partition, error=str(exc)
            )
            self.drop([tp])
            return False
        except KafkaError as exc:
            log.warning("archive_commit_failed", topic=tp.topic, partition=tp.partition, error=str(exc))
            return False
        log.debug("archive_object_written", key=key, records=len(batch.lines))
        return True

    def _next_backoff(self, tp: TopicPartition) -> float:
        state = self.partitions.get(tp)
        current = state.backoff_s if state else 0.0
        return min(max(current * 2, self.policy.retry_initial_s), self.policy.retry_max_s)

    def report_lag(self) -> None:
        now_ms = time.time() * 1000
        for topic in self.topics:
            oldest = [
                batch.oldest_timestamp_ms
                for tp, state in self.partitions.items()
                if tp.topic == topic
                for batch in state.batches()
            ]
            ARCHIVE_LAG_SECONDS.labels(topic).set(max(0.0, (now_ms - min(oldest)) / 1000) if oldest else 0.0)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, archiver: _Archiver) -> None:
        self.archiver = archiver

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.archiver.drop(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


def _check_bucket(store: ArchiveStore, retention_days: int) -> Encryption:
    store.check_bucket()
    stored = probe_encryption(store)
    check_retention(store, retention_days)
    return stored


async def _prepare_bucket(
    store: ArchiveStore, stop: asyncio.Event, policy: FlushPolicy, retention_days: int
) -> Encryption | None:
    """A missing bucket, or one that will not store encrypted objects, is a configuration error; an
    unreachable S3 is waited for. Returns how S3 stores the uploads (None: stopped while waiting)."""
    delay = policy.retry_initial_s
    while not stop.is_set():
        try:
            return await asyncio.to_thread(_check_bucket, store, retention_days)
        except InfrastructureError as exc:
            log.warning("archive_s3_unreachable", error=str(exc), retry_in_s=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, policy.retry_max_s)
    return None


async def run_archiver(
    settings: Settings,
    stop: asyncio.Event,
    *,
    policy: FlushPolicy | None = None,
    store: ArchiveStore | None = None,
) -> None:
    """Archive ``settings.topics.inbox`` and ``fetch_results`` to S3 until ``stop`` is set."""
    policy = policy or FlushPolicy()
    store = store or ArchiveStore(settings.s3)
    encryption = await _prepare_bucket(store, stop, policy, settings.s3.retention_days)
    if encryption is None or stop.is_set():
        return
    archiver = _Archiver(settings, store, policy)
    consumer = archiver.consumer
    consumer.subscribe(list(archiver.topics), listener=_Rebalance(archiver))
    await consumer.start()
    log.info("archiver_started", topics=list(archiver.topics), bucket=store.bucket, prefix=store.prefix,
             encryption=encryption.describe())
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=policy.poll_timeout_ms)
            for tp, records in fetched.items():
                archiver.add(tp, [ArchivedRecord.from_consumer_record(record) for record in records])
            await archiver.flush()
            archiver.report_lag()
        await archiver.flush(final=True)
        archiver.report_lag()
    finally:
        await consumer.stop()
        log.info("archiver_stopped")


def add_archive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--apply-lifecycle", action="store_true",
        help="write the archive's retention rule (PAYSTREAM_S3__RETENTION_DAYS) into the bucket's lifecycle "
             "configuration, keeping its other rules, and exit (idempotent; needs s3:GetLifecycleConfiguration "
             "and s3:PutLifecycleConfiguration)",
    )


def apply_lifecycle_command(settings: Settings, store: ArchiveStore | None = None) -> int:
    """``paystream archive --apply-lifecycle``: one line saying what was done, exit 0."""
    store = store or ArchiveStore(settings.s3)
    days = settings.s3.retention_days
    try:
        change = apply_lifecycle(store, days)
    except ConfigurationError as exc:
        print(f"paystream archive: error: {exc}", file=sys.stderr)
        return 2
    except InfrastructureError as exc:
        print(f"paystream archive: error: {exc}", file=sys.stderr)
        return 1
    where = f"s3://{store.bucket}/{change.rule['Filter']['Prefix']}"
    if not change.changed:
        print(f"lifecycle rule {change.rule['ID']} already expires {where} after {days} days; nothing changed")
    else:
        before = (change.previous or {}).get("Expiration", {}).get("Days")
        was = f" (was {before} days)" if before else ""
        print(f"lifecycle rule {change.rule['ID']}: {where} expires after {days} days{was}; "
              f"{change.kept} other rule(s) kept")
    return 0


def main(settings: Settings, args: argparse.Namespace) -> int:
    """The ``paystream archive`` subcommand: archive until SIGINT / SIGTERM, then flush and stop."""
    if getattr(args, "apply_lifecycle", False):
        return apply_lifecycle_command(settings)

    async def archive_until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await ensure_topics(settings)
        async with probe_server(settings, lambda: not stop.is_set()):
            await run_archiver(settings, stop)

    try:
        asyncio.run(archive_until_signalled())
    except ConfigurationError as exc:
        print(f"paystream archive: error: {exc}", file=sys.stderr)
        return 2
    return 0
