"""``paystream rebuild --through-processors``: re-derive payment state with the real processor app.

The in-process rebuild (:mod:`processors.recovery.rebuild`) runs the processors' pure core; this mode runs the
processor itself — the Quix Streams worker of ``paystream process`` with both stages, the repartition by
payment key, per-payment dedupe, the state store and its changelog, exactly-once transactions — so it also
catches bugs outside the pure core. It never touches the live topics, consumer group or state:

1. fresh topics named ``rebuild-<stamp>.<live name>`` (inbox, fetch requests, fetch results, status, state,
   DLQ; no retention limit, the archive's records can be old) and a fresh application id
   ``paystream-rebuild-<stamp>``: its own consumer group, internal topic
   ``paystream-rebuild-<stamp>-payment-inputs``, changelog ``changelog__paystream-rebuild-<stamp>--…`` and a
   temporary local state directory;
2. the archive's inbox and fetch-result records are republished into them as they were received — same key,
   value and headers, NOT marked as replays (the per-payment dedupe is fresh, so each delivery is applied
   once, and duplicates in the archive are dropped as the live worker dropped them); records that were
   themselves replays are skipped, their originals are archived too;
3. a worker (``run_processor`` in a child process, :mod:`processors.recovery.rebuild_worker`, started before
   step 2 so that loading the engine overlaps it) runs until its group has nothing left on the rebuild inbox
   and fetch results (intake) and on its internal topic (reconcile) — measured as a ``read_committed``
   consumer sees it (:mod:`processors.recovery.group_lag`); it is then stopped with SIGTERM, the graceful
   path;
4. the last event per payment on the rebuild status topic is the rebuilt state, diffed against the live
   status topic by :mod:`processors.recovery.rebuild_diff`;
5. unless ``--keep``: the consumer group and every topic of the rebuild are deleted — its ``rebuild-<stamp>.*``
   topics and the app's internal and changelog topics, found by name prefix
   (:mod:`processors.recovery.app_state`) — and the local state directory is removed.

Fetch requests the rebuild worker emits land on its own fetch-requests topic, which no fetcher reads: a
rebuild never calls a provider. Archived fetch results carry what was fetched at the time.
"""

from __future__ import annotations

import asyncio
import os
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

from paystream.config import Settings
from paystream.dlq import ERROR_REASON
from paystream.errors import InfrastructureError, NormalizationError
from paystream.kafka import ensure_topics, make_producer
from paystream.logs import get_logger
from processors import payment_inputs
from processors.recovery.app_state import KafkaAdmin, is_internal_topic
from processors.recovery.archive_format import ArchivedRecord
from processors.recovery.archive_store import ArchiveStore
from processors.recovery.group_lag import GroupLag
from processors.recovery.rebuild_diff import RebuildReport, diff, read_live_status, read_to_end
from processors.recovery.rebuild_worker import settings_json
from processors.recovery.replay import check_time_range
from processors.recovery.replay_progress import Progress
from processors.recovery.replay_source import ArchiveSource
from schemas.envelopes import FetchResult, InboxEnvelope

log = get_logger(__name__)

_IN_FLIGHT = 5000
_STOP_GRACE_S = 60.0
_POLL_S = 0.5
_CLEANUP_TIMEOUT_S = 60.0
# Every topic name of the live settings; all of them are renamed, so the rebuild worker cannot touch a live
# one even through a topic it does not use.
_TOPIC_FIELDS = ("inbox", "fetch_requests", "fetch_results", "status", "state", "dlq", "fetch_cursors",
                 "fetch_delayed")


@dataclass(frozen=True, slots=True)
class RebuildTarget:
    """The temporary topics and application id of one rebuild, as settings for its worker."""

    stamp: str
    settings: Settings

    @classmethod
    def create(cls, live: Settings, state_dir: Path, stamp: str | None = None) -> RebuildTarget:
        stamp = stamp or f"{datetime.now(UTC):%Y%m%dt%H%M%S}-{uuid.uuid4().hex[:6]}"
        topics = live.topics
        renamed = {name: f"rebuild-{stamp}.{getattr(topics, name)}" for name in _TOPIC_FIELDS}
        keep_all = {"inbox_retention_ms": -1, "fetch_retention_ms": -1, "dlq_retention_ms": -1}
        processor = live.processor.model_copy(update={
            "app_id": f"paystream-rebuild-{stamp}",
            "freshness_gauges": False,  # nobody scrapes the rebuild worker
        })
        settings = live.model_copy(update={
            "topics": topics.model_copy(update={**renamed, **keep_all}), "processor": processor,
            "state_dir": state_dir, "metrics_port": 0,  # the live processor may hold the metrics port
        })
        return cls(stamp, settings)

    @property
    def app_id(self) -> str:
        return self.settings.processor.app_id

    @property
    def inputs_topic(self) -> str:
        return self.settings.processor.inputs_topic()

    def owns(self, topic: str) -> bool:
        """Its ``rebuild-<stamp>.*`` topics and its app's internal and changelog topics."""
        return topic.startswith(f"rebuild-{self.stamp}.") or is_internal_topic(topic, self.settings.processor)


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


class RebuildWorker:
    """The rebuild's processor worker (:mod:`processors.recovery.rebuild_worker`) in a child process, its
    output in ``<state dir>/processor.log``."""

    def __init__(self, target: RebuildTarget) -> None:
        self.log_path = target.settings.state_dir / "processor.log"
        # The source root, for a checkout that is not pip-installed; an installed paystream finds itself.
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "processors.recovery.rebuild_worker"],
                # The operator's working directory: relative paths in the settings (file: secrets, CA) still hold.
                stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            )
        assert self.process.stdin is not None
        self.process.stdin.write(settings_json(target.settings))
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
        """SIGTERM: the worker commits its last checkpoint and leaves the group; killed after a grace."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return await asyncio.to_thread(self.process.wait, _STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("rebuild_processor_killed", pid=self.process.pid, grace_s=_STOP_GRACE_S)
                self.process.kill()
        return await asyncio.to_thread(self.process.wait)


async def wait_processed(target: RebuildTarget, worker: RebuildWorker, total: int, *, stall_timeout_s: float,
                         progress: Progress) -> None:
    """Until the rebuild group has nothing left on its inbox, fetch results and internal topic twice in a row
    (the second look catches a stage that was still producing into the next topic)."""
    topics = target.settings.topics
    sources = (topics.inbox, topics.fetch_results)
    watched = [*sources, target.inputs_topic]
    async with GroupLag(target.settings, target.app_id) as probe:
        stable, shown, moved, last_move = 0, 0, -1, time.monotonic()
        while stable < 2:
            if (why := worker.failed()) is not None:
                raise InfrastructureError(f"{why}; its log ends with:\n{worker.log_tail()}")
            lag = await probe.measure(watched)
            done = min(total, sum(lag.committed.get(name, 0) for name in sources))
            if done > shown:
                progress.advance(done - shown, done - shown)
                shown = done
            if (position := sum(lag.committed.values())) != moved:
                moved, last_move = position, time.monotonic()
            stable = stable + 1 if lag.drained else 0
            if not lag.drained and time.monotonic() - last_move > stall_timeout_s:
                raise InfrastructureError(
                    f"the rebuild processor committed nothing for {stall_timeout_s:.0f} s, {lag.describe()}; "
                    f"its log ({worker.log_path}) ends with:\n{worker.log_tail()}"
                )
            await asyncio.sleep(_POLL_S)


async def count_outputs(target: RebuildTarget) -> tuple[int, Counter[str]]:
    """Observations the rebuild worker derived (what its intake wrote to the internal topic, as committed),
    and its dead letters by reason."""
    observations = 0
    async for record in read_to_end(target.settings, target.inputs_topic):
        try:
            item = payment_inputs.decode(record.value or b"")
        except NormalizationError:
            continue  # reconcile dead-lettered it: counted with the DLQ below
        observations += isinstance(item, payment_inputs.ObservationInput)
    dead: Counter[str] = Counter()
    async for record in read_to_end(target.settings, target.settings.topics.dlq):
        reason = dict(record.headers or ()).get(ERROR_REASON, b"unknown")
        dead[f"dlq:{reason.decode(errors='replace')}"] += 1
    return observations, dead


def _cleanup_blocking(target: RebuildTarget, delete: bool) -> list[str]:
    admin = KafkaAdmin(target.settings)
    owned = [name for name in admin.topics() if target.owns(name)]
    if delete:
        # The group first: it has no members once the worker stopped (a killed one holds it until its
        # session times out, which delete_group waits for).
        admin.delete_group(target.app_id, timeout_s=_CLEANUP_TIMEOUT_S)
        admin.delete_topics(owned, timeout_s=_CLEANUP_TIMEOUT_S)
    return owned


async def rebuild_topics(target: RebuildTarget, *, delete: bool) -> list[str]:
    """The topics this rebuild created (its own and the worker's internal ones); with ``delete``, they and
    the rebuild's consumer group are deleted."""
    return await asyncio.to_thread(_cleanup_blocking, target, delete)


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
    log.info("rebuild_started", app_id=target.app_id, topics=f"rebuild-{target.stamp}.*", state_dir=str(state_dir))
    worker: RebuildWorker | None = None
    try:
        await ensure_topics(target.settings)
        # Started first: loading the engine takes seconds, and it may as well process while records arrive.
        worker = RebuildWorker(target)
        sent = await republish(settings, target, store, since=since, until=until, providers=providers,
                               accounts=accounts, progress_stream=stream, show_progress=show_progress)
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
