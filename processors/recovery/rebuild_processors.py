"""``paystream rebuild --through-processors``: re-derive payment state with the real processor app.

The in-process rebuild (:mod:`processors.recovery.rebuild`) runs the processors' pure core; this mode runs the
processors themselves — faust agents, dedupe ledger, parking, tables with changelogs — so it also
catches bugs outside the pure core. It never touches the live topics or consumer groups:

1. fresh topics named ``rebuild-<stamp>.<live name>`` (inbox, fetch requests, fetch results, status,
   DLQ; no retention limit, the archive's records can be old) and a fresh application id
   ``paystream-rebuild-<stamp>`` (its own consumer group, tables and internal topics);
2. the archive's inbox and fetch-result records are republished into them as they were received —
   same key, value and headers, NOT marked as replays (the dedupe ledger is fresh, so each delivery is
   applied once); records that were themselves replays are skipped, their originals are archived too;
3. a processor worker (``run_processor``, in a ``python -c`` child process) runs until its consumer group has committed
   everything on the rebuild topics; it is stopped with SIGTERM (the graceful path);
4. the last event per payment on the rebuild status topic is the rebuilt state, diffed against the live
   status topic by :mod:`processors.recovery.rebuild_diff`;
5. the temporary topics are deleted unless ``--keep``. (Kafka drops the group's offsets with its
   topics; the emptied group then expires by itself.)

Fetch requests the rebuild worker emits land on its own fetch-requests topic, which no fetcher reads:
a rebuild never calls a provider. Archived fetch results carry what was fetched at the time.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from paystream.config import Settings
from paystream.dlq import ERROR_REASON
from paystream.errors import InfrastructureError, NormalizationError
from paystream.kafka import connection_options, ensure_topics, make_consumer, make_producer
from paystream.logs import configure, get_logger
from processors.recovery.archive_format import ArchivedRecord
from processors.recovery.archive_store import ArchiveStore
from processors.recovery.rebuild_diff import RebuildReport, diff, read_live_status, read_to_end
from processors.recovery.replay import check_time_range
from processors.recovery.replay_progress import Progress
from processors.recovery.replay_source import ArchiveSource
from schemas.envelopes import FetchResult, InboxEnvelope

log = get_logger(__name__)

_IN_FLIGHT = 5000
_STOP_GRACE_S = 60.0


@dataclass(frozen=True, slots=True)
class RebuildTarget:
    """The temporary topics and application id of one rebuild, as settings for its worker."""

    stamp: str
    settings: Settings

    @classmethod
    def create(cls, live: Settings, state_dir: Path, stamp: str | None = None) -> RebuildTarget:
        stamp = stamp or f"{datetime.now(UTC):%Y%m%dt%H%M%S}-{uuid.uuid4().hex[:6]}"
        topics = live.topics
        renamed = {name: f"rebuild-{stamp}.{getattr(topics, name)}"
                   for name in ("inbox", "fetch_requests", "fetch_results", "status", "dlq", "fetch_cursors")}
        keep_all = {"inbox_retention_ms": -1, "fetch_retention_ms": -1, "dlq_retention_ms": -1}
        processor = live.processor.model_copy(update={"app_id": f"paystream-rebuild-{stamp}"})
        settings = live.model_copy(update={
            "topics": topics.model_copy(update={**renamed, **keep_all}), "processor": processor,
            "state_dir": state_dir, "metrics_port": 0,  # the live processor may hold the metrics port
        })
        return cls(stamp, settings)

    @property
    def app_id(self) -> str:
        return self.settings.processor.app_id

    def owns(self, topic: str) -> bool:
        return topic in self.settings.topics.all_names() or topic.startswith(f"{self.app_id}-")


@dataclass(slots=True)
class Republished:
    read: int = 0  # archived records inside the time range
    sent: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def _wanted(record: ArchivedRecord, inbox: bool, providers: frozenset[str], accounts: frozenset[str],
            skipped: Counter[str]) -> bool:
    """Skip replay copies and filtered-out payments; anything unreadable goes in, to be dead-lettered
    by the rebuild worker as the live one did."""
    try:
        if inbox:
            envelope = InboxEnvelope.from_bytes(record.value or b"")
            if envelope.replay is not None:
                skipped["replay_copy"] += 1
                return False
            provider, account = envelope.provider, envelope.account
        else:
            result = FetchResult.from_bytes(record.value or b"")
            provider, account = result.provider, result.account
    except NormalizationError:
        return True
    if (providers and provider not in providers) or (accounts and account not in accounts):
        skipped["filtered"] += 1
        return False
    return True


async def republish(live: Settings, target: RebuildTarget, store: ArchiveStore, *, since: datetime | None,
                    until: datetime | None, providers: frozenset[str], accounts: frozenset[str],
                    progress_stream: TextIO, show_progress: bool) -> Republished:
    done = Republished()
    sources = [
        (ArchiveSource(store, live.topics.inbox, since, until), target.settings.topics.inbox, True),
        (ArchiveSource(store, live.topics.fetch_results, since, until), target.settings.topics.fetch_results, False),
    ]
    total = sum([await source.plan() for source, _, _ in sources])
    progress = Progress(progress_stream, total=total, unit="objects", label="rebuild: republish",
                        enabled=show_progress)
    producer = make_producer(target.settings, client_suffix="rebuild", linger_ms=50)
    await producer.start()
    try:
        in_flight: list[asyncio.Future[Any]] = []
        for source, topic, inbox in sources:
            async for chunk in source.chunks():
                for record, _origin in chunk.records:
                    if (since and record.timestamp < since) or (until and record.timestamp >= until):
                        continue
                    done.read += 1
                    if not _wanted(record, inbox, providers, accounts, done.skipped):
                        continue
                    in_flight.append(await producer.send(topic, record.value, key=record.key,
                                                         headers=list(record.headers) or None))
                    done.sent += 1
                    if len(in_flight) >= _IN_FLIGHT:
                        await asyncio.gather(*in_flight)
                        in_flight.clear()
                progress.advance(chunk.units, len(chunk.records))
        await asyncio.gather(*in_flight)
    finally:
        progress.close()
        await producer.stop()
    return done


def worker_child() -> None:
    """The child process (``python -c``): pickled settings on stdin, then the processor worker."""
    # Trusted: the parent process wrote these bytes into a pipe only it holds.
    settings = pickle.load(sys.stdin.buffer)  # noqa: S301
    from processors.worker import run_processor  # imported here: faust is heavy, the parent never needs it

    configure(settings.log_level, settings.log_format, process="rebuild-processor")
    run_processor(settings, settings.processor)


class RebuildWorker:
    """``run_processor`` for the rebuild target in a child process, output into a log file. The settings
    travel pickled on stdin — secrets included, never through argv or the environment, and the live
    topic names in the operator's environment cannot leak into the child's configuration."""

    def __init__(self, target: RebuildTarget) -> None:
        self.log_path = target.settings.state_dir / "processor.log"
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-c",
                 "from processors.recovery.rebuild_processors import worker_child; worker_child()"],
                stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            )
        assert self.process.stdin is not None
        self.process.stdin.write(pickle.dumps(target.settings))
        self.process.stdin.close()

    def failed(self) -> str | None:
        """None while running; else why it is not."""
        code = self.process.poll()
        return None if code is None else f"the rebuild processor exited with code {code}"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # faust commits offsets and flushes changelogs
            try:
                return await asyncio.to_thread(self.process.wait, _STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("rebuild_processor_killed", pid=self.process.pid, grace_s=_STOP_GRACE_S)
                self.process.kill()
        return await asyncio.to_thread(self.process.wait)


async def wait_processed(target: RebuildTarget, worker: RebuildWorker, total: int, *, stall_timeout_s: float,
                         progress: Progress) -> None:
    """Until the rebuild group has committed every record of its inbox, fetch results and internal
    observations topic (twice in a row: a stage still producing into the next topic is caught)."""
    topics = target.settings.topics
    names = [topics.inbox, topics.fetch_results, target.settings.processor.observations_topic()]
    sources = {topics.inbox, topics.fetch_results}
    admin = AIOKafkaAdminClient(**connection_options(target.settings.kafka))
    consumer = make_consumer(target.settings, group_id=None, client_suffix="rebuild-lag")
    await admin.start()
    await consumer.start()
    try:
        stable, shown, last_move = 0, 0, time.monotonic()
        while stable < 2:
            if (why := worker.failed()) is not None:
                raise InfrastructureError(f"{why}; its log ends with:\n{worker.log_tail()}")
            existing = set(await admin.list_topics())  # faust creates the internal topic once it runs
            partitions = [TopicPartition(name, p) for name in names if name in existing
                          for p in range(topics.partitions)]
            ends = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(target.app_id)
            at = {tp: committed[tp].offset if tp in committed else 0 for tp in partitions}
            lag = {tp: ends[tp] - at[tp] for tp in partitions if at[tp] < ends[tp]}
            done = min(total, sum(at[tp] for tp in partitions if tp.topic in sources))
            if done > shown:
                progress.advance(done - shown, done - shown)
                shown, last_move = done, time.monotonic()
            stable = 0 if lag else stable + 1
            if lag and time.monotonic() - last_move > stall_timeout_s:
                behind = {f"{tp.topic}/{tp.partition}": n for tp, n in lag.items()}
                raise InfrastructureError(
                    f"the rebuild processor committed nothing for {stall_timeout_s:.0f} s, lag {behind}; "
                    f"its log ({worker.log_path}) ends with:\n{worker.log_tail()}"
                )
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()


async def count_outputs(target: RebuildTarget) -> tuple[int, Counter[str]]:
    """Observations the rebuild worker derived, and its dead letters by reason."""
    internal = target.settings.processor.observations_topic()
    partitions = [TopicPartition(internal, p) for p in range(target.settings.topics.partitions)]
    consumer = make_consumer(target.settings, group_id=None, client_suffix="rebuild-count")
    await consumer.start()
    try:
        observations = sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()
    dead: Counter[str] = Counter()
    async for record in read_to_end(target.settings, target.settings.topics.dlq):
        reason = dict(record.headers or ()).get(ERROR_REASON, b"unknown")
        dead[f"dlq:{reason.decode(errors='replace')}"] += 1
    return observations, dead


async def rebuild_topics(target: RebuildTarget, *, delete: bool) -> list[str]:
    """The topics this rebuild created (its own and the worker's internal ones); deleted if ``delete``."""
    admin = AIOKafkaAdminClient(**connection_options(target.settings.kafka))
    await admin.start()
    try:
        owned = sorted(name for name in await admin.list_topics() if target.owns(name))
        if owned and delete:
            await admin.delete_topics(owned)
        return owned
    finally:
        await admin.close()


async def rebuild_through_processors(
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    providers: frozenset[str] = frozenset(),
    accounts: frozenset[str] = frozenset(),
    with_diff: bool = False,
    keep: bool = False,
    store: ArchiveStore | None = None,
    progress_stream: TextIO | None = None,
    show_progress: bool = True,
    stamp: str | None = None,
    stall_timeout_s: float = 300.0,
) -> RebuildReport:
    check_time_range(since, until)
    store = store or ArchiveStore(settings.s3)
    await asyncio.to_thread(store.check_bucket)  # a missing bucket is a bad argument: fail before any topic
    stream = progress_stream or sys.stderr
    state_dir = Path(tempfile.mkdtemp(prefix="paystream-rebuild-"))
    target = RebuildTarget.create(settings, state_dir, stamp)
    worker: RebuildWorker | None = None
    try:
        await ensure_topics(target.settings)
        sent = await republish(settings, target, store, since=since, until=until, providers=providers,
                               accounts=accounts, progress_stream=stream, show_progress=show_progress)
        worker = RebuildWorker(target)
        progress = Progress(stream, total=sent.sent, unit="records", label="rebuild: process",
                            enabled=show_progress)
        try:
            await wait_processed(target, worker, sent.sent, stall_timeout_s=stall_timeout_s, progress=progress)
        finally:
            progress.close()
        code = await worker.stop()
        if code != 0:
            log.warning("rebuild_processor_exit", code=code, log=worker.log_tail(1000))
        rebuilt = await read_live_status(target.settings)
        observations, dead = await count_outputs(target)
    finally:
        if worker is not None:
            await worker.stop()
        left = await rebuild_topics(target, delete=not keep)
    shutil.rmtree(state_dir, ignore_errors=True)  # after a failure it stays: the error names the log in it
    skipped = sent.skipped + dead
    report = RebuildReport(
        f"s3://{store.bucket}/{store.prefix} through the processors (app id {target.app_id})",
        sent.read, observations, skipped, rebuilt, by_status=Counter(s.status for s in rebuilt.values()),
        kept_topics=left if keep else [],
    )
    if with_diff:
        live = await read_live_status(settings)
        if providers or accounts:
            live = {k: v for k, v in live.items() if _key_wanted(k, providers, accounts)}
        report.live_payments = len(live)
        report.differences = diff(rebuilt, live)
    return report


def _key_wanted(payment_key: str, providers: frozenset[str], accounts: frozenset[str]) -> bool:
    provider, account = payment_key.split(":", 2)[:2]
    return (not providers or provider in providers) and (not accounts or account in accounts)
